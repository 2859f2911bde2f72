"""Saved samples (``--save-samples``): the very images cmbench scored, in the layouts other
evaluators read, written batch by batch as sampling goes.

* ``npz``: an ADM-style sample batch, as openai's ``scripts/image_sample.py`` (guided-diffusion,
  consistency_models) writes it with ``np.savez(out_path, arr, label_arr)``: ``arr_0`` the NHWC
  uint8 images, ``arr_1`` their int64 class labels (class-conditional sets only), uncompressed,
  named ``samples_{N}x{H}x{W}x{C}.npz`` (:func:`adm_npz_name`). Read by the ADM TensorFlow
  evaluator, ``cmbench stats`` and :class:`cmbench.metrics.npz_array.NpzArray`.
* ``png``: EDM's ``generate.py --subdirs`` layout, ``{seed - seed % 1000:06d}/{seed:06d}.png``
  (mode ``RGB``, or ``L`` for one channel), with class labels in a ``dataset.json`` as EDM's
  ``dataset_tool.py`` writes them. Read by torch-fidelity, clean-fid, EDM's ``fid.py`` and
  ``cmbench stats``.

Both writers take uint8 NCHW tensors (and int class labels, or None), check each batch, refuse
to replace existing samples unless asked to, and are context managers::

    with NpzSampleWriter(path, len(seeds), (3, 32, 32), labels=True) as npz:
        for images, labels in batches:
            npz.write(images, labels)
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from .atomic import AtomicFile, atomic_write, atomic_write_text
from .stats import IMAGE_SUFFIXES

SAVE_FORMATS = ("npz", "png")
CHANNEL_COUNTS = (1, 3)
PNG_MODES = {1: "L", 3: "RGB"}
LABELS_FILE = "dataset.json"


def save_formats(spec: str | Iterable[str]) -> tuple[str, ...]:
    """The formats ``spec`` names (``"npz"``, ``"png"``, ``"npz,png"`` or a list of these), in
    the order of :data:`SAVE_FORMATS`."""
    accepted = f"accepted: {', '.join(SAVE_FORMATS)}, or both as 'npz,png'"
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen = set()
    for name in names:
        if not isinstance(name, str) or name.strip() not in SAVE_FORMATS:
            raise ValueError(f"unknown sample format {name!r} in {spec!r}; {accepted}")
        chosen.add(name.strip())
    if not chosen:
        raise ValueError(f"no sample format given in {spec!r}; {accepted}")
    return tuple(f for f in SAVE_FORMATS if f in chosen)


def adm_npz_name(count: int, image_shape: Sequence[int]) -> str:
    """``samples_{N}x{H}x{W}x{C}.npz``, the name ``image_sample.py`` gives a batch of ``count``
    images of ``image_shape`` (C, H, W)."""
    channels, height, width = image_shape
    return f"samples_{count}x{height}x{width}x{channels}.npz"


def png_name(seed: int) -> str:
    """The image of ``seed`` relative to the folder: ``{seed - seed % 1000:06d}/{seed:06d}.png``
    (EDM's ``generate.py --subdirs``)."""
    return f"{seed - seed % 1000:06d}/{seed:06d}.png"


def _check_image_shape(image_shape: Sequence[int], where: str) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in image_shape)
    if len(shape) != 3 or shape[0] not in CHANNEL_COUNTS or min(shape[1:]) < 1:
        raise ValueError(f"{where}: image shape must be (C, H, W) with C in {CHANNEL_COUNTS} and H, W ≥ 1, "
                         f"got {tuple(image_shape)}")
    return shape


def _nhwc(images: torch.Tensor, where: str, image_shape: tuple[int, ...] | None) -> np.ndarray:
    """A batch of uint8 NCHW images of ``image_shape`` (None: any (C, H, W) with C in 1, 3) as a
    C-contiguous NHWC array (one copy of the batch)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where}: images must be a torch tensor (uint8, NCHW), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"{where}: images must be uint8 (quantise them first), got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{where}: images must be NCHW (4 axes), got shape {list(images.shape)}")
    if image_shape is None:
        _check_image_shape(images.shape[1:], where)
    elif tuple(images.shape[1:]) != image_shape:
        raise ValueError(f"{where}: images have shape (C, H, W) = {tuple(images.shape[1:])}, "
                         f"but this set holds {image_shape}")
    return np.ascontiguousarray(images.detach().cpu().numpy().transpose(0, 2, 3, 1))


def _where(place: Path, first: int, images) -> str:
    count = len(images) if isinstance(images, torch.Tensor) and images.ndim else 0
    return f"{place}: images {first}..{first + count - 1}" if count else f"{place}: image batch at {first}"


def _labels(labels: torch.Tensor | None, count: int, expected: bool, where: str) -> np.ndarray | None:
    """Class labels as int64 ``[count]``, or None for an unconditional set."""
    if not expected:
        if labels is not None:
            raise ValueError(f"{where}: got class labels, but this set was opened with labels=False")
        return None
    if labels is None:
        raise ValueError(f"{where}: class labels are missing; this set was opened with labels=True")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        raise ValueError(f"{where}: class labels must be an integer tensor of class indices, "
                         f"got {getattr(labels, 'dtype', type(labels).__name__)}")
    if tuple(labels.shape) != (count,):
        raise ValueError(f"{where}: expected {count} class labels (shape [{count}]), got shape {list(labels.shape)}")
    return labels.detach().cpu().numpy().astype(np.int64)


class _SampleWriter:
    """A context manager: :meth:`close` on success, :meth:`discard` on an exception."""

    def close(self) -> Path:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


class NpzSampleWriter(_SampleWriter):
    """``count`` images of ``image_shape`` (C, H, W) streamed into an ADM-style ``.npz`` at ``path``.

    The file is a zip archive of ``arr_0.npy`` (``[count, H, W, C]`` uint8) and, with
    ``labels=True``, ``arr_1.npy`` (``[count]`` int64), stored uncompressed with zip64 headers:
    the same members, byte for byte, as ``np.savez(path, images, labels)``. The ``.npy`` header is
    written for the final shape, then each batch's NHWC bytes follow, so only one batch is in
    memory; labels are collected and written at :meth:`close`.

    Everything goes to a temporary file in ``path``'s folder that :meth:`close` renames to
    ``path`` once exactly ``count`` images arrived; an error, :meth:`discard` or a crash leaves
    nothing under ``path``. An existing ``path`` is refused unless ``overwrite``.
    """

    def __init__(self, path: str | os.PathLike, count: int, image_shape: Sequence[int], *, labels: bool,
                 overwrite: bool = False):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ValueError(f"{self.path}: sample batches are saved as .npz files; give a path ending in .npz")
        if count < 1:
            raise ValueError(f"{self.path}: count must be at least 1 image, got {count}")
        self.count = int(count)
        self.image_shape = _check_image_shape(image_shape, str(self.path))
        self.labels = labels
        self.written = 0
        self._labels: list[np.ndarray] = []
        self._target = AtomicFile(self.path, overwrite=overwrite)  # FileExistsError if path exists
        self._open = True
        try:
            self._archive = zipfile.ZipFile(self._target.file, mode="w", compression=zipfile.ZIP_STORED,
                                            allowZip64=True)
            self._member = self._archive.open("arr_0.npy", "w", force_zip64=True)
            channels, height, width = self.image_shape
            npy_format.write_array_header_1_0(self._member, {
                "descr": npy_format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": (self.count, height, width, channels),
            })
        except BaseException:
            self.discard()
            raise

    def write(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Append a batch: uint8 NCHW ``images`` and, for a labelled set, their class labels."""
        where = _where(self.path, self.written, images)
        if not self._open:
            raise ValueError(f"{self.path}: the sample file is closed; no more images can be written")
        array = _nhwc(images, where, self.image_shape)
        label_array = _labels(labels, len(array), self.labels, where)
        if self.written + len(array) > self.count:
            raise ValueError(f"{where}: this batch of {len(array)} would make {self.written + len(array)} images, "
                             f"but the file was opened for {self.count}")
        self._member.write(memoryview(array).cast("B"))
        if label_array is not None:
            self._labels.append(label_array)
        self.written += len(array)

    def close(self) -> Path:
        """Finish the archive and move it to ``path``; an error (and no file) unless exactly
        ``count`` images arrived. Closing a closed writer does nothing."""
        if not self._open:
            return self.path
        try:
            if self.written != self.count:
                raise ValueError(f"{self.path}: received {self.written} images but the file was opened for "
                                 f"{self.count}; nothing was saved")
            self._member.close()
            if self.labels:
                with self._archive.open("arr_1.npy", "w", force_zip64=True) as member:
                    npy_format.write_array(member, np.concatenate(self._labels), allow_pickle=False)
            self._archive.close()
            self._open = False
            return self._target.commit()
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop what was written (the temporary file); ``path`` is left as it was."""
        self._open = False
        for handle in (getattr(self, "_member", None), getattr(self, "_archive", None)):
            if handle is not None:
                with contextlib.suppress(Exception):  # unfinished handles would write at garbage collection
                    handle.close()
        self._target.discard()



def _check_seeds(seeds: Sequence[int], folder: Path) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError(f"{folder}: no seeds given; one image is saved per seed")
    if seeds[0] < 0:
        raise ValueError(f"{folder}: seeds must be ≥ 0 (they name the files), got {seeds[0]}")
    for before, after in zip(seeds, seeds[1:]):
        if after <= before:
            raise ValueError(f"{folder}: seeds must increase (seed {after} follows {before}): images are named by "
                             "seed and a folder is read in name order")
    if len(f"{seeds[0]:06d}") != len(f"{seeds[-1]:06d}"):
        raise ValueError(f"{folder}: seeds {seeds[0]}..{seeds[-1]} give names of different lengths (EDM's "
                         "{seed:06d}: six digits below 1,000,000, more above), which do not sort in seed order; "
                         "choose seeds whose names have one length (e.g. all below 1,000,000)")
    return seeds


def _sample_files_in(folder: Path) -> list[Path]:
    """What a reader of ``folder`` would take as a sample set: image files (as cmbench.stats
    reads them, recursively) and the labels file."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and
                  (p.suffix.lower() in IMAGE_SUFFIXES or p.relative_to(folder).as_posix() == LABELS_FILE))


class PngSampleWriter(_SampleWriter):
    """One PNG per seed under ``folder``, in EDM's ``generate.py --subdirs`` layout:
    ``{seed - seed % 1000:06d}/{seed:06d}.png``, mode ``RGB`` (3 channels) or ``L`` (1 channel).

    ``seeds`` are the seeds of the images in the order :meth:`write` receives them; they must
    increase, so the folder read in relative-path order (as ``cmbench stats``, EDM's datasets and
    sorted globs read it) gives the images in seed order. Class-conditional sets (``labels=True``)
    also get ``dataset.json``, EDM's ``dataset_tool.py`` convention that EDM's
    ``ImageFolderDataset`` reads: ``{"labels": [["000000/000000.png", 3], ...]}``, written at
    :meth:`close` once every seed has its image.

    Each file is written atomically (whole or absent). A folder that already holds images (or a
    ``dataset.json``) is refused unless ``overwrite``; with ``overwrite`` the images of these
    seeds are replaced, and images under other names are still an error, since reading the folder
    would mix two sets. A run that stops early keeps the images it wrote and has no
    ``dataset.json``.
    """

    def __init__(self, folder: str | os.PathLike, *, seeds: Sequence[int], labels: bool, overwrite: bool = False):
        self.folder = Path(folder)
        self.seeds = _check_seeds(seeds, self.folder)
        self.labels = labels
        self.overwrite = overwrite
        self.written = 0
        self.image_shape: tuple[int, ...] | None = None
        self._label_rows: list[list] = []
        self._open = True
        existing = _sample_files_in(self.folder)
        if existing and not overwrite:
            raise FileExistsError(f"{self.folder} already holds {len(existing)} image file(s) or {LABELS_FILE} "
                                  f"(e.g. {existing[0].relative_to(self.folder)}); refusing to write samples into it "
                                  "without overwrite")
        ours = {png_name(s) for s in self.seeds} | ({LABELS_FILE} if labels else set())
        foreign = [p for p in existing if p.relative_to(self.folder).as_posix() not in ours]
        if foreign:
            raise FileExistsError(f"{self.folder} holds {len(foreign)} file(s) this set does not write (e.g. "
                                  f"{foreign[0].relative_to(self.folder)}); reading the folder would mix two sample "
                                  "sets: remove them or choose another folder")

    def write(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Save a batch: uint8 NCHW ``images`` for the next ``len(images)`` seeds and, for a
        labelled set, their class labels."""
        where = _where(self.folder, self.written, images)
        if not self._open:
            raise ValueError(f"{self.folder}: the sample folder is closed; no more images can be written")
        array = _nhwc(images, where, self.image_shape)
        label_array = _labels(labels, len(array), self.labels, where)
        if self.written + len(array) > len(self.seeds):
            raise ValueError(f"{where}: this batch of {len(array)} would make {self.written + len(array)} images, "
                             f"but {len(self.seeds)} seeds were given")
        self.image_shape = tuple(images.shape[1:])
        mode = PNG_MODES[self.image_shape[0]]
        for i, image in enumerate(array):
            name = png_name(self.seeds[self.written + i])
            _save_png(self.folder / name, image, mode, self.overwrite)
            if label_array is not None:
                self._label_rows.append([name, int(label_array[i])])
        self.written += len(array)

    def close(self) -> Path:
        """Check that every seed has its image and write ``dataset.json`` (labelled sets).
        Closing a closed writer does nothing."""
        if not self._open:
            return self.folder
        self._open = False
        if self.written != len(self.seeds):
            raise ValueError(f"{self.folder}: received {self.written} images for {len(self.seeds)} seeds; the folder "
                             f"is incomplete{' and has no ' + LABELS_FILE if self.labels else ''}")
        if self.labels:
            atomic_write_text(self.folder / LABELS_FILE, json.dumps({"labels": self._label_rows}),
                              overwrite=self.overwrite)
        return self.folder

    def discard(self) -> None:
        """Stop writing; the images written so far stay, and no ``dataset.json`` is written."""
        self._open = False



def _save_png(path: Path, image: np.ndarray, mode: str, overwrite: bool) -> None:
    """One HWC uint8 image as a PNG of ``mode``, as EDM's generate.py saves it (PIL, default settings)."""
    from PIL import Image

    pixels = image[:, :, 0] if mode == "L" else image
    picture = Image.fromarray(pixels)  # 2-D uint8: L, H×W×3 uint8: RGB
    atomic_write(path, lambda f: picture.save(f, format="PNG"), overwrite=overwrite)
