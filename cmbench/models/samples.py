"""A stored sample set: images made elsewhere (an ADM-style ``.npz`` from ``image_sample.py``, a
PNG/JPEG folder from EDM's ``generate.py``, or cmbench's own ``--save-samples``), scored like a
model's samples. It enters the pipeline at "uint8 images" (shared/design.md): a suite model
``{family: samples, path: FILE_OR_FOLDER}`` with a run ``{sampler: stored, nfe: [N]}``.

Image i of the set (stored order: ``arr_0`` row order, or a folder's files sorted by relative
path, which is seed order for EDM's and cmbench's layouts) stands for the suite's i-th seed, so
a row with ``num_samples: N`` scores the first N images. Float images in an ``.npz`` need the
``quantisation`` that turns them into uint8; uint8 images are used as stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..checkpoints.hashing import sha256_path
from ..images import QUANTISATIONS
from ..validate import Checker
from .base import ModelAdapter, NoiseRange


def validate_samples_spec(c: Checker, spec: dict[str, Any], path: str) -> None:
    c.keys(spec, path, ("path",), ("quantisation",))
    c.string(spec["path"], f"{path}.path")
    if "quantisation" in spec:
        c.choice(spec["quantisation"], f"{path}.quantisation", QUANTISATIONS)


class SampleSetModel(ModelAdapter):
    """The images of a sample set on disk, read in stored order (nothing is loaded whole)."""

    family = "samples"
    maps = frozenset({"images"})

    def __init__(self, path: Path, *, quantisation: str | None = None, sha256: str | None = None):
        from ..stats import open_images

        self.path = Path(path)
        self.source = open_images(str(self.path), quantisation=quantisation)
        # a folder's digest is the one the row fingerprint holds (hashing remembers each file's)
        sha256 = sha256 or self.source.provenance.get("sha256") or sha256_path(self.path)
        super().__init__(self.source.shape, 0, NoiseRange(), sha256)

    def check_count(self, count: int) -> None:
        """Refuse to score more images than the set holds."""
        if count > self.source.count:
            raise ValueError(f"{self.source.description}: holds {self.source.count} images, fewer than the "
                             f"{count} to score (num_samples); lower num_samples or give a larger set")

    def read(self, count: int, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        """``count`` images from image ``start`` on, as uint8 NCHW batches of at most ``batch_size``
        (``start`` a multiple of ``batch_size``: a shard's batches are those of a read from the
        first image, and the images before it are not decoded)."""
        self.check_count(start + count)
        if start % batch_size:
            raise ValueError(f"{self.source.description}: reading from image {start} needs it at a batch boundary "
                             f"(batch size {batch_size})")
        first = start // batch_size
        done = 0
        for images in self.source.batches(batch_size, range(first, first + -(-count // batch_size))):
            images = images[: count - done]
            yield images
            done += len(images)
