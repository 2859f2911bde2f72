"""The saved images of one suite row (``save_samples`` / ``--save-samples``).

Under the output folder, a row's images go to ``samples/<row>.npz`` (ADM-style: ``arr_0`` NHWC
uint8, ``arr_1`` labels of class-conditional models) and/or ``samples/<row>/`` (EDM's PNG
layout), quantised as the row's first profile quantises them: exactly the images its metrics
were computed from, so ``cmbench score`` or any other evaluator can check the numbers. A row's
files are written again whenever the row is computed; they become visible only once the row's
sampling finished (the ``.npz`` is renamed into place; the PNG folder is filled as
``samples/.<row>.partial/`` and renamed), so a row that fails leaves no partial set, and a
recomputed row never mixes its images with the previous computation's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from .names import inside
from .sample_files import NpzSampleWriter, PngSampleWriter

SAMPLES_FOLDER = "samples"


class SampleFiles:
    """Writers for one row's images in ``formats``; ``save`` is None when there are none.
    A context manager: files are closed (published) on success and discarded on an error."""

    def __init__(self, out: Path, row: str, formats: Sequence[str], model, seeds: Sequence[int]):
        self.files: dict[str, str] = {}
        self._writers: dict[str, NpzSampleWriter | PngSampleWriter] = {}
        self._out, self._partial = out, f"{SAMPLES_FOLDER}/.{row}.partial"
        labelled = bool(model.label_dim)
        if formats:
            inside(out, SAMPLES_FOLDER).mkdir(exist_ok=True)
        if "npz" in formats:
            name = f"{SAMPLES_FOLDER}/{row}.npz"
            self._writers[name] = NpzSampleWriter(inside(out, name), len(seeds), model.image_shape, labels=labelled,
                                                  overwrite=True)
        if "png" in formats:
            shutil.rmtree(inside(out, self._partial), ignore_errors=True)  # left by a run that was killed
            self._writers[f"{SAMPLES_FOLDER}/{row}"] = PngSampleWriter(inside(out, self._partial), seeds=seeds,
                                                                       labels=labelled)
        self.save = self._save if self._writers else None

    def _save(self, images: torch.Tensor, labels: torch.Tensor | None, seeds: Sequence[int]) -> None:
        for writer in self._writers.values():
            writer.write(images, labels)

    def __enter__(self) -> "SampleFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for name, writer in self._writers.items():
            if exc_type is None:
                writer.close()
                if isinstance(writer, PngSampleWriter):
                    shutil.rmtree(inside(self._out, name), ignore_errors=True)  # the previous computation's
                    inside(self._out, self._partial).rename(inside(self._out, name))
                self.files["npz" if name.endswith(".npz") else "png"] = name
            else:
                writer.discard()
                if isinstance(writer, PngSampleWriter):
                    shutil.rmtree(inside(self._out, self._partial), ignore_errors=True)
