"""Making the features of rows that share their samples, in work units stored as shards.

The row's work units (:func:`cmbench.shards.work_units`) not on disk yet are dealt out in rounds:
in each round every rank makes one unit, the main rank gathers and stores them
(:class:`cmbench.shards.ShardStore`), and only then does the next round start; so a run that is
killed (a rank, a node, the whole job) keeps every finished round, and a rerun makes only what is
missing, at any world size. When every unit is there, the main rank merges them in seed order:
the same features, bit for bit, as one process makes in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .console import progress_bar
from .distributed import World
from .features import FeatureExtractor
from .finite import NonFiniteSamples
from .generate import generate_views
from .models import ModelAdapter
from .samplers import Sampler
from .shards import MergedShards, ShardPart, ShardPiece, ShardStore, merge_pieces, uncovered, work_units


@dataclass(frozen=True)
class RowSamples:
    """What the rows sharing one set of samples need made: the sampler run on ``seeds`` (batches of
    ``batch_size``), and per row id its view ``(quantisation, extractor, layers)``. ``keep_images``:
    the first so many uint8 images (under the first view's quantisation) are kept, with labels;
    -1 keeps them all (saved samples)."""

    model: ModelAdapter
    sampler: Sampler
    sigmas: torch.Tensor
    options: dict[str, Any]
    seeds: Sequence[int]
    batch_size: int
    device: torch.device
    views: dict[str, tuple[str, FeatureExtractor, tuple[str, ...]]]
    keep_images: int
    desc: str


def make_piece(job: RowSamples, first: int, stop: int) -> ShardPiece:
    """The features (and kept images) of positions ``first``–``stop``; samples that are not finite
    give a piece that carries the error instead."""
    kept: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    keep = job.keep_images < 0 or first < job.keep_images

    def save(images: torch.Tensor, labels: torch.Tensor | None, seeds) -> None:
        if job.keep_images < 0 or first + sum(len(i) for i, _ in kept) < job.keep_images:
            kept.append((images, labels))

    try:
        features, _, nfe, seconds = generate_views(
            job.model, job.sampler, job.sigmas, job.options, job.seeds[first:stop], batch_size=job.batch_size,
            device=job.device, views=list(job.views.values()), desc=job.desc, save=save if keep else None, first=first,
        )
    except NonFiniteSamples as error:
        return ShardPiece(first, stop, {}, None, None, error=str(error))
    images = labels = None
    if kept:
        images = torch.cat([i for i, _ in kept]).numpy()
        labels = None if kept[0][1] is None else torch.cat([lab for _, lab in kept]).numpy()
    return ShardPiece(first, stop, dict(zip(job.views, features)), nfe, seconds, images, labels)


@dataclass(frozen=True)
class MadeHere:
    """What this run did for a row: work units made, and bytes of features and images the main
    rank received from the other ranks (the row's communication volume)."""

    units: int
    gathered_bytes: int


def make_row_features(job: RowSamples, store: ShardStore, world: World, *, part: ShardPart | None = None,
                      progress: bool | None = None) -> tuple[MergedShards | None, MadeHere]:
    """Make the units of the row not stored yet (only ``part``'s with ``--shard``) over the ranks of
    ``world``; returns (on the main rank, without ``part``: the merged row, else None; what this run
    made). A unit with non-finite samples stops the row on every rank (:class:`NonFiniteSamples`,
    with the seeds)."""
    units = work_units(len(job.seeds), job.batch_size, part)
    todo = world.decide(lambda: uncovered(units, store.pieces()))
    mine = [todo[i] for i in range(world.rank, len(todo), world.size)]
    bar = progress_bar(progress=progress, total=sum(b - a for a, b in mine), desc=job.desc, unit="img", leave=False)
    gathered = 0
    for start in range(0, len(todo), world.size):
        index = start + world.rank
        piece = make_piece(job, *todo[index]) if index < len(todo) else None
        pieces = world.gather(piece)
        if world.main:
            gathered += sum(other.nbytes for other in pieces[1:] if other is not None)
        error = world.decide(_store, store, pieces)
        if error:
            bar.close()
            raise NonFiniteSamples(error)
        if piece is not None:
            bar.update(piece.stop - piece.first)
    bar.close()
    made = MadeHere(len(todo), gathered)
    if part is not None or not world.main:
        return None, made
    return merge_pieces(store, len(job.seeds), job.desc), made


def _store(store: ShardStore, pieces: list[ShardPiece | None]) -> str | None:
    """Store a round's pieces (main rank); the first error one carries, if any, instead."""
    made = [piece for piece in pieces if piece is not None]
    errors = [piece.error for piece in made if piece.error]
    if errors:
        return errors[0]
    for piece in made:
        store.put(piece)
    return None


def kept_images(merged: MergedShards, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The first ``count`` kept images and labels of a merged row (all with ``count`` < 0)."""
    if merged.images is None:
        return None, None
    stop = None if count < 0 else count
    return merged.images[:stop], None if merged.labels is None else merged.labels[:stop]
