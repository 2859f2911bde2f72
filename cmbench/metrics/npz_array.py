"""One array inside an ``.npz`` file, read in row batches without loading it whole.

``np.load`` on an ``.npz`` reads a member completely on access; an ADM reference batch's
``arr_0`` (10,000 images of 256×256×3) is 2 GB, and a 50k sample batch more. An ``.npz`` is a
zip archive of ``.npy`` files, so this reads the member's ``.npy`` header for its shape and dtype
and then streams rows from the (possibly deflated) member. Object arrays are refused, so reading
never unpickles anything.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format


def _read_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{where}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects (dtype {dtype}); only plain numeric arrays are read (no pickle)")
    return tuple(int(n) for n in shape), bool(fortran_order), dtype


def _read_exact(f: BinaryIO, size: int, where: str) -> bytes:
    chunks, left = [], size
    while left:
        block = f.read(left)
        if not block:
            raise ValueError(f"{where}: the array data end early (file truncated?)")
        chunks.append(block)
        left -= len(block)
    return b"".join(chunks)


class NpzArray:
    """The array ``key`` of the ``.npz`` at ``path``: ``shape`` and ``dtype`` from its header,
    rows on demand with :meth:`batches`."""

    def __init__(self, path: str | os.PathLike, key: str):
        self.path = Path(path)
        self.key = key
        self.where = f"{self.path}: array {key!r}"
        with zipfile.ZipFile(self.path) as archive:
            names = archive.namelist()
            if self.member not in names:
                found = sorted(n[:-4] if n.endswith(".npy") else n for n in names)
                raise KeyError(f"{self.path} has no array {key!r}; it has: {', '.join(found) or 'nothing'}")
            with archive.open(self.member) as f:
                self.shape, fortran_order, self.dtype = _read_header(f, self.where)
        if fortran_order and len(self.shape) > 1:
            raise ValueError(f"{self.where}: stored in Fortran order; rows can only be streamed from C-order arrays")
        if not self.shape:
            raise ValueError(f"{self.where}: is a scalar, not an array of rows")

    @property
    def member(self) -> str:
        return f"{self.key}.npy"

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int, limit: int | None = None, start: int = 0) -> Iterator[np.ndarray]:
        """Consecutive row blocks of at most ``batch_size`` rows of the first ``limit`` rows, from row
        ``start`` on (the rows before it are skipped unread, or for a compressed member decompressed
        and dropped)."""
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if start < 0:
            raise ValueError(f"start row must be ≥ 0, got {start}")
        total = len(self) if limit is None else min(limit, len(self))
        row_shape = self.shape[1:]
        row_bytes = math.prod(row_shape) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as f:
            _read_header(f, self.where)
            done = min(start, total)
            if done:
                f.seek(done * row_bytes, os.SEEK_CUR)
            while done < total:
                count = min(batch_size, total - done)
                data = _read_exact(f, count * row_bytes, self.where)
                yield np.frombuffer(data, dtype=self.dtype).reshape((count, *row_shape))
                done += count


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The array names of an ``.npz`` (from the archive's directory; nothing is read)."""
    with zipfile.ZipFile(path) as archive:
        return sorted(n[:-4] if n.endswith(".npy") else n for n in archive.namelist())
