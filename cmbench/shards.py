"""A row's features on disk in pieces (shards), so that many processes can make them and a killed
run loses none that were finished.

A row's samples are positions ``0 .. num_samples − 1`` of its seeds, cut into batches of
``batch_size`` from position 0. A shard is a run of whole batches, so every image is made in the
same batch as one process makes it and the features are bitwise those of a single-process run.
A row is cut into at most :data:`SHARDS_PER_ROW` work units; ``--shard i/n`` takes the ``i``-th
of ``n`` equal runs of batches and cuts it the same way.

On disk (``<out>/shards/``; documented in docs/scale-out.md)::

    shards/<row>/<key>/<first>-<stop>.npz

``<row>`` is the row id without its ``@profile``; ``<key>`` hashes the fingerprints of the rows
scored from these samples, the batch size and how many images are kept, so pieces made under another configuration are
never mixed in; ``<first>-<stop>`` are the sample positions held (``stop`` excluded). Each file
holds, for each of those rows, its features by layer (``features/<row id>/<layer>``), the
sampler's ``nfe`` and ``seconds`` (absent for a stored sample set), and where the run keeps
images (saved samples, the report's grid) the uint8 ``images`` and class ``labels``. A file
appears whole or not at all (written aside and renamed). Once the rows are stored, their shards
are deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import AtomicFile
from .names import inside
from .shard_part import ShardPart

SHARDS_FOLDER = "shards"
SHARDS_PER_ROW = 64
"""Work units per row: small enough that a lost unit costs little, many enough that 2, 4, 8, 16, 32
or 64 ranks share a row evenly (a row has fewer when it has fewer batches)."""


def batch_starts(num_samples: int, batch_size: int) -> list[int]:
    """The first position of every batch, and ``num_samples`` last."""
    return [*range(0, num_samples, batch_size), num_samples]


def work_units(num_samples: int, batch_size: int, part: ShardPart | None = None) -> list[tuple[int, int]]:
    """The row's work units ``(first, stop)``: runs of whole batches, at most :data:`SHARDS_PER_ROW`
    for the row (only those of ``part`` when given)."""
    edges = batch_starts(num_samples, batch_size)
    batches = len(edges) - 1
    lo, hi = (0, batches) if part is None else (part.index * batches // part.count, (part.index + 1) * batches // part.count)
    per_unit = -(-batches // SHARDS_PER_ROW)
    return [(edges[b], edges[min(b + per_unit, hi)]) for b in range(lo, hi, per_unit)]


def uncovered(units: Sequence[tuple[int, int]], stored: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``units`` that no stored piece holds, each still a run of whole batches (stored
    pieces are runs of whole batches too)."""
    todo = []
    for first, stop in units:
        position = first
        for a, b in sorted(stored):
            if b <= position or a >= stop:
                continue
            if a > position:
                todo.append((position, a))
            position = max(position, b)
        if position < stop:
            todo.append((position, stop))
    return todo


def missing(num_samples: int, stored: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The positions of the row no stored piece holds."""
    return uncovered([(0, num_samples)], stored)


@dataclass
class ShardPiece:
    """One work unit's result: per row, features by layer; the uint8 images and labels the run
    keeps (or None); the sampler's NFE and seconds (None for a stored sample set)."""

    first: int
    stop: int
    features: dict[str, dict[str, np.ndarray]]
    nfe: int | None
    seconds: float | None
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    error: str | None = field(default=None)
    """A unit whose samples were not finite carries the error instead (nothing else is kept)."""

    @property
    def nbytes(self) -> int:
        """The size of its arrays (what travels from a rank to the main one)."""
        arrays = [value for layers in self.features.values() for value in layers.values()]
        return sum(a.nbytes for a in [*arrays, self.images, self.labels] if a is not None)


def shard_key(fingerprints: Sequence[str], batch_size: int, kept_images: int) -> str:
    """The folder name of one configuration's pieces: the rows' fingerprints, the batch size and how
    many images the pieces keep (-1: all)."""
    text = json.dumps({"rows": sorted(fingerprints), "batch_size": batch_size, "kept_images": kept_images})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ShardStore:
    """The stored pieces of one row's samples under one configuration (``key``)."""

    def __init__(self, out: Path, row: str, key: str):
        self.row_folder = inside(out, f"{SHARDS_FOLDER}/{row}")
        self.folder = self.row_folder / key

    def pieces(self) -> list[tuple[int, int]]:
        """``(first, stop)`` of every whole piece on disk, in order."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("*-*.npz"):
            first, _, stop = path.stem.partition("-")
            if first.isdigit() and stop.isdigit() and int(first) < int(stop):
                found.append((int(first), int(stop)))
        return sorted(found)

    def put(self, piece: ShardPiece) -> Path:
        """Write ``piece`` (whole or not at all); a piece already there is replaced."""
        arrays = {f"features/{row}/{layer}": value for row, layers in piece.features.items()
                  for layer, value in layers.items()}
        meta = {"first": piece.first, "stop": piece.stop, "nfe": piece.nfe, "seconds": piece.seconds}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        for name in ("images", "labels"):
            if getattr(piece, name) is not None:
                arrays[name] = getattr(piece, name)
        path = self.folder / f"{piece.first:09d}-{piece.stop:09d}.npz"
        written = AtomicFile(path)
        try:
            np.savez(written.file, **arrays)
        except BaseException:
            written.discard()
            raise
        written.commit()
        return path

    def read(self, first: int, stop: int) -> ShardPiece:
        """The stored piece ``first``–``stop``; a file that cannot be read is a ValueError naming it."""
        path = self.folder / f"{first:09d}-{stop:09d}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                features: dict[str, dict[str, np.ndarray]] = {}
                for name in data.files:
                    if name.startswith("features/"):
                        row, layer = name[len("features/"):].rsplit("/", 1)
                        features.setdefault(row, {})[layer] = data[name]
                images = data["images"] if "images" in data.files else None
                labels = data["labels"] if "labels" in data.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read this shard ({err}); delete it and run again to remake it") from None
        return ShardPiece(first, stop, features, meta["nfe"], meta["seconds"], images, labels)

    def remove(self) -> None:
        """Delete every stored piece of the row (all configurations): its rows are stored."""
        shutil.rmtree(self.row_folder, ignore_errors=True)
        try:
            self.row_folder.parent.rmdir()  # the shards folder, once no row has shards
        except OSError:
            pass


@dataclass
class MergedShards:
    """A row's whole sample set assembled from its pieces, in position order."""

    features: dict[str, dict[str, np.ndarray]]
    nfe: int | None
    seconds: float | None
    images: np.ndarray | None
    labels: np.ndarray | None


def merge_pieces(store: ShardStore, num_samples: int, where: str) -> MergedShards:
    """The row's features (and kept images) from the stored pieces, which must cover every position
    (pieces that overlap, made by shard jobs of different counts, are cut where the last one stopped)."""
    stored = store.pieces()
    gaps = missing(num_samples, stored)
    if gaps:
        raise ValueError(f"{where}: shards hold no features for positions {_ranges(gaps)}")
    position, parts = 0, []
    for first, stop in stored:
        if stop <= position or position >= num_samples:
            continue
        piece = store.read(first, stop)
        parts.append((position - first, min(stop, num_samples) - first, piece))
        position = min(stop, num_samples)
    rows = parts[0][2].features.keys()
    features = {row: {layer: np.concatenate([p.features[row][layer][a:b] for a, b, p in parts])
                      for layer in parts[0][2].features[row]} for row in rows}
    nfes = {p.nfe for _, _, p in parts}
    if len(nfes) > 1:
        raise ValueError(f"{where}: shards were sampled with different NFE ({sorted(nfes, key=str)}); "
                         f"delete {store.folder} and run again")
    seconds = [p.seconds for _, _, p in parts]
    return MergedShards(features, nfes.pop(), None if None in seconds else float(sum(seconds)),
                        _joined(parts, "images"), _joined(parts, "labels"))


def _joined(parts, name: str) -> np.ndarray | None:
    """The pieces' kept ``images`` (or ``labels``), in order, up to the first piece that kept none."""
    kept = []
    for a, b, piece in parts:
        value = getattr(piece, name)
        if value is None:
            break
        kept.append(value[a:b])
    return np.concatenate(kept) if kept else None


def _ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{a}–{b - 1}" for a, b in ranges)
