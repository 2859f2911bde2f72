"""Images of the run folder inside the page: a grid PNG read back and embedded as a ``data:`` URI,
so the report stays one self-contained file. Only PNG files inside the run folder are embedded;
anything else becomes a note saying why it is not shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmbench.report.plots import png_data_uri

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class InlineImage:
    """An embedded image (``src``, a data: URI) or the note saying why there is none."""

    src: str | None
    note: str | None


def inline_grid(run_dir: Path, grid: str) -> InlineImage:
    """The PNG at ``grid`` (relative to ``run_dir``, or absolute inside it) as a data: URI."""
    path = (run_dir / grid).resolve()
    if not path.is_relative_to(run_dir.resolve()):
        return InlineImage(None, f"Grid path {grid} lies outside the run directory; not included.")
    if not path.is_file():
        return InlineImage(None, f"Grid image {grid} not found.")
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return InlineImage(None, f"Grid image {grid} is not a PNG file.")
    return InlineImage(png_data_uri(data), None)
