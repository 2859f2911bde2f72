"""Where an editing suite's real images come from: ``editing.data`` is a toy split (``toy:test``),
an image folder or ``.npz`` (relative to the suite's folder), or ``reference``: the suite's own
reference file, an ADM reference batch whose ``arr_0`` holds the real images."""

from __future__ import annotations

from ..nll import TOY_PREFIX
from ..references import reference_path
from ..suite import Suite

REFERENCE_DATA = "reference"


def editing_data_spec(suite: Suite) -> str:
    """What :func:`cmbench.stats.open_images` opens for the suite's editing rows."""
    data = suite.editing.data
    if data.startswith(TOY_PREFIX):
        return data
    if data == REFERENCE_DATA:
        if "path" not in suite.reference:
            raise ValueError(f"{suite.source}: editing.data: reference needs a reference file (reference.path or "
                             "reference.registry: an ADM batch with its images in arr_0)")
        return str(reference_path(suite))
    return str(suite.resolve(data))
