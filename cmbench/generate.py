"""Sampling and scoring one schedule: the step a suite row and a tuning candidate share.

Images are generated seed by seed (:class:`~cmbench.seeds.SampleNoise`), quantised once and passed
through the feature extractor in the same batch, so only features are kept. The unit of work is a
list of seeds, so under torchrun each rank takes its own run of whole batches and the main rank
gathers the features (:mod:`cmbench.distributed`); suite rows do the same through shards on disk
(:mod:`cmbench.row_features`).

The pipeline runs one batch ahead, so a GPU never waits for the host between batches: batch i is
sampled, quantised and passed through the extractor, its per-image finite flags, features and kept
images start their copies to the host (pinned memory, a CUDA event marks their arrival), and batch
i + 1 is queued behind it before the host waits for batch i. Only then is batch i checked: a batch
that is not finite raises :class:`~cmbench.finite.NonFiniteSamples` naming its seeds, as if it had
been checked at once, and nothing of it or of any later batch is kept. The sampler's seconds are
measured with CUDA events, not by waiting. On the CPU the same code runs; the copies are no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .console import progress_bar
from .distributed import SINGLE, World
from .features import FeatureExtractor
from .finite import check_features, check_finite_rows, finite_by_row, first_non_finite, non_finite_parameters
from .metrics import MetricOptions, ReferenceStats, compute_metrics, layers_for
from .metrics.bootstrap import bootstrap_standard_errors
from .models import ModelAdapter
from .samplers import Sampler
from .pipeline import Clock, Launcher, extraction_passes, one_ahead
from .seeds import SampleNoise, to_device


@dataclass(frozen=True)
class Scoring:
    """How one evaluator profile turns samples into numbers: the quantisation to uint8, the feature
    extractor, the metrics with their conventions, and the reference statistics."""

    quantisation: str
    extractor: FeatureExtractor
    metrics: tuple[str, ...]
    metric_options: MetricOptions
    reference: ReferenceStats | None


def generate_features(
    model: ModelAdapter,
    sampler: Sampler,
    sigmas: torch.Tensor,
    options: dict[str, Any],
    seeds: list[int],
    *,
    batch_size: int,
    device: torch.device,
    quantisation: str,
    extractor: FeatureExtractor,
    layers: tuple[str, ...],
    keep_images: int = 0,
    progress: bool | None = False,
    desc: str = "",
) -> tuple[dict[str, np.ndarray], torch.Tensor, int, float]:
    """Sample the images of ``seeds`` and extract ``layers`` from them in one pass.

    Returns (features by layer, the first ``keep_images`` uint8 images, NFE per image,
    seconds spent in the sampler).
    """
    (features,), grid, nfe, seconds = generate_views(
        model, sampler, sigmas, options, seeds, batch_size=batch_size, device=device,
        views=[(quantisation, extractor, tuple(layers))], keep_images=keep_images, progress=progress, desc=desc,
    )
    return features, grid, nfe, seconds


@dataclass(frozen=True)
class ImageBatch:
    """One batch of images with the seeds they stand for: floats in [-1, 1] from a sampler, or
    uint8 images already quantised (a stored sample set); ``labels`` are class indices or None;
    ``finite``: each sampled image's :func:`~cmbench.finite.finite_by_row` flag, on the device
    (None for stored images, which are uint8)."""

    seeds: Sequence[int]
    images: torch.Tensor
    labels: torch.Tensor | None
    finite: torch.Tensor | None = None


class SampledBatches:
    """The images a sampler makes for ``seeds``, batch by batch; iterate once. A batch is not
    checked on the way: :meth:`check` its finite flags once they are on the host. Afterwards
    ``nfe`` is the evaluations per image and ``seconds`` the time spent in the sampler."""

    def __init__(self, model: ModelAdapter, sampler: Sampler, sigmas: torch.Tensor, options: Mapping[str, Any],
                 seeds: Sequence[int], *, batch_size: int, device: torch.device, desc: str = ""):
        self.model, self.sampler, self.sigmas, self.options = model, sampler, sigmas, options
        self.batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
        self.device, self.desc = device, desc
        self.nfe: int | None = None
        self._clocks: list[Clock] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[ImageBatch]:
        for seeds in self.batches:
            clock = Clock(self.device)
            with torch.no_grad():
                images, labels, nfe = sample_batch(self.model, self.sampler, self.sigmas, self.options, seeds,
                                                   self.device)
            self._clocks.append(clock.stop())
            if self.nfe is not None and nfe != self.nfe:
                raise RuntimeError(f"{self.desc}: the sampler made {nfe} evaluations on one batch and {self.nfe} on another")
            self.nfe = nfe
            yield ImageBatch(seeds, images, labels, finite_by_row(images))

    def check(self, seeds: Sequence[int], finite: torch.Tensor | None) -> None:
        """Raise :class:`~cmbench.finite.NonFiniteSamples` for the batch of ``seeds`` unless every
        ``finite`` flag (on the host) is set, naming where its sampling first went non-finite."""
        check_finite_rows(finite, seeds, self.desc, lambda: _locate_non_finite(
            self.model, self.sampler, self.sigmas, self.options, seeds, self.device))

    @property
    def seconds(self) -> float:
        """Seconds spent in the sampler so far (on a GPU, waits for the batches sampled)."""
        return sum(clock.seconds() for clock in self._clocks)


class StoredBatches:
    """The images of a stored sample set (:class:`~cmbench.models.samples.SampleSetModel`) for
    ``seeds``: image i of the set stands for the i-th seed, so the first ``len(seeds)`` images are
    read, in stored order (from image ``first`` when ``seeds`` are a later part of the row's).
    Nothing is sampled: ``nfe`` and ``seconds`` stay None, and there is nothing to :meth:`check`."""

    nfe = None
    seconds = None

    def __init__(self, model, seeds: Sequence[int], *, batch_size: int, device: torch.device, first: int = 0):
        self.model, self.seeds, self.batch_size, self.device, self.first = model, seeds, batch_size, device, first

    def __len__(self) -> int:
        return -(-len(self.seeds) // self.batch_size)

    def __iter__(self) -> Iterator[ImageBatch]:
        done = 0
        for images in self.model.read(len(self.seeds), self.batch_size, start=self.first):
            yield ImageBatch(self.seeds[done : done + len(images)], to_device(images, self.device), None)
            done += len(images)

    def check(self, seeds: Sequence[int], finite: torch.Tensor | None) -> None:
        """uint8 images are finite."""


def image_batches(model: ModelAdapter, sampler: Sampler, sigmas: torch.Tensor, options: Mapping[str, Any],
                  seeds: Sequence[int], *, batch_size: int, device: torch.device,
                  desc: str = "", first: int = 0) -> SampledBatches | StoredBatches:
    """The images of ``seeds``: sampled, or read from a stored sample set (a model with ``images``)
    from its image ``first`` (the position of ``seeds[0]`` among the row's seeds)."""
    if model.has("images"):
        return StoredBatches(model, seeds, batch_size=batch_size, device=device, first=first)
    return SampledBatches(model, sampler, sigmas, options, seeds, batch_size=batch_size, device=device, desc=desc)


SaveSamples = Callable[[torch.Tensor, "torch.Tensor | None", Sequence[int]], None]
"""Called with each batch's uint8 images (NCHW, on the CPU), labels and seeds, in seed order."""


def generate_views(
    model: ModelAdapter,
    sampler: Sampler,
    sigmas: torch.Tensor,
    options: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    batch_size: int,
    device: torch.device,
    views: list[tuple[str, FeatureExtractor, tuple[str, ...]]],
    keep_images: int = 0,
    progress: bool | None = False,
    desc: str = "",
    save: SaveSamples | None = None,
    first: int = 0,
) -> tuple[list[dict[str, np.ndarray]], torch.Tensor, int | None, float | None]:
    """Sample once (or read a stored sample set, from its image ``first``) and extract features for
    several views ``(quantisation, extractor, layers)``.

    Views with the same quantisation and extractor share one extraction (of their layers'
    union). ``save`` receives every batch under the first view's quantisation. Returns (features
    by layer for each view, the first ``keep_images`` images under the first view's quantisation,
    NFE per image, seconds spent in the sampler); a stored set has neither NFE nor seconds (None).
    """
    stream = image_batches(model, sampler, sigmas, options, seeds, batch_size=batch_size, device=device, desc=desc,
                           first=first)
    passes = extraction_passes(views)
    chunks = {key: {layer: [] for layer in layers} for key, (_, layers) in passes.items()}
    kept: list[torch.Tensor] = []
    launch = Launcher(passes, views[0][0], keep_images, save is not None, device)
    for done in one_ahead(progress_bar(stream, progress=progress, desc=desc, unit="batch", leave=False), launch):
        done.arrival.wait()
        stream.check(done.seeds, done.finite)
        for key, (extractor, layers) in passes.items():
            check_features(done.features[key], done.seeds, desc, extractor.name)
            for layer in layers:
                chunks[key][layer].append(done.features[key][layer])
        if save is not None:
            save(done.images, done.labels, done.seeds)
        if done.images is not None and sum(len(k) for k in kept) < keep_images:
            kept.append(done.images)
    merged = {key: {layer: torch.cat(parts).numpy() for layer, parts in by_layer.items()} for key, by_layer in chunks.items()}
    features = [{layer: merged[(q, id(e))][layer] for layer in layers} for q, e, layers in views]
    grid = torch.cat(kept)[:keep_images] if kept else torch.zeros(0, dtype=torch.uint8)
    return features, grid, stream.nfe, stream.seconds


def batch_probe(model: ModelAdapter, sampler: Sampler, sigmas: torch.Tensor, options: Mapping[str, Any],
                views: list[tuple[str, FeatureExtractor, tuple[str, ...]]], device: torch.device) -> Callable[[int], None]:
    """``probe(size)``: one batch of ``size`` images sampled, quantised and extracted as
    :func:`generate_views` does, then dropped; ``batch_size: auto`` measures its memory
    (:mod:`cmbench.batch_size`)."""
    passes = extraction_passes(views)

    def probe(size: int) -> None:
        launch = Launcher(passes, views[0][0], 0, False, device)
        for batch in SampledBatches(model, sampler, sigmas, options, range(size), batch_size=size, device=device):
            launch(batch).arrival.wait()

    return probe


def sample_batch(model, sampler: Sampler, sigmas: torch.Tensor, options: Mapping[str, Any], seeds,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The images of one batch of seeds (each seed's latent, then its label, then its sampler
    noise), their labels and the sampler's NFE."""
    noise = SampleNoise(seeds, device)
    latents = noise.randn(model.image_shape)
    labels = noise.randint(model.label_dim) if model.label_dim else None
    images, nfe = sampler.run(model, latents, sigmas, noise=noise, labels=labels, options=options)
    return images, labels, nfe


def _locate_non_finite(model, sampler: Sampler, sigmas: torch.Tensor, options: Mapping[str, Any], seeds,
                       device: torch.device) -> str:
    """Where a batch's samples went non-finite: the batch sampled again with every evaluation checked."""
    rerun = lambda checked: sample_batch(checked, sampler, sigmas, options, seeds, device)  # noqa: E731
    return first_non_finite(rerun, model) + non_finite_parameters(model)


def sample_and_score(
    model: ModelAdapter,
    sampler: Sampler,
    nfe: int,
    options: Mapping[str, Any],
    seeds: list[int],
    *,
    metrics: tuple[str, ...],
    metric_options: MetricOptions,
    reference: ReferenceStats | None,
    batch_size: int,
    device: torch.device,
    quantisation: str,
    extractor: FeatureExtractor,
    keep_images: int = 0,
    progress: bool | None = False,
    desc: str = "",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    world: World = SINGLE,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor, int, float]:
    """The ``metrics`` of ``sampler`` at ``nfe`` on ``seeds``.

    Returns (metric values by column, the float64 σ grid, the first ``keep_images`` uint8 images,
    NFE per image, seconds spent in the sampler). With ``bootstrap`` ≥ 2 the values also hold
    each scored column's standard error (``<column>_se``, :mod:`cmbench.metrics.bootstrap`);
    the metric values themselves do not depend on it. Under torchrun (``world``) every rank
    returns the same values (:func:`sample_and_score_many`).
    """
    scoring = Scoring(quantisation, extractor, tuple(metrics), metric_options, reference)
    (values,), sigmas, grid, made_nfe, seconds = sample_and_score_many(
        model, sampler, nfe, options, seeds, [scoring], batch_size=batch_size, device=device,
        keep_images=keep_images, progress=progress, desc=desc, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
        world=world,
    )
    return values, sigmas, grid, made_nfe, seconds


def sample_and_score_many(
    model: ModelAdapter,
    sampler: Sampler,
    nfe: int,
    options: Mapping[str, Any],
    seeds: Sequence[int],
    scorings: list[Scoring],
    *,
    batch_size: int,
    device: torch.device,
    keep_images: int = 0,
    progress: bool | None = False,
    desc: str = "",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    save: SaveSamples | None = None,
    world: World = SINGLE,
) -> tuple[list[dict[str, float]], torch.Tensor, torch.Tensor, int, float | None]:
    """:func:`sample_and_score` under several scorings (evaluator profiles) of the same samples.

    A stored sample set is read instead of sampled; its NFE is the ``nfe`` given (what it was
    made with, as the suite states it) and its seconds None.

    Under torchrun (``world``) each rank samples its share of the batches, the main rank scores
    all features and every rank returns its values (the grid only on the main rank; seconds are
    summed over ranks). ``save`` is for one process only."""
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    views = [(s.quantisation, s.extractor, layers_for(s.metrics)) for s in scorings]
    made = gather_views(model, sampler, sigmas, options, seeds, views, batch_size=batch_size, device=device,
                        keep_images=keep_images, progress=progress, desc=desc, save=save, world=world)
    grid = torch.zeros(0, dtype=torch.uint8)

    def scored() -> tuple[list[dict[str, float]], int | None, float | None]:  # on the main rank
        nonlocal grid
        features, grid, made_nfe, seconds = made
        return ([score_features(scoring, feats, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed, device=device)
                 for scoring, feats in zip(scorings, features)], made_nfe, seconds)

    results, made_nfe, seconds = world.decide(scored)
    return results, sigmas, grid, nfe if made_nfe is None else made_nfe, seconds


def gather_views(
    model: ModelAdapter,
    sampler: Sampler,
    sigmas: torch.Tensor,
    options: Mapping[str, Any],
    seeds: Sequence[int],
    views: list[tuple[str, FeatureExtractor, tuple[str, ...]]],
    *,
    batch_size: int,
    device: torch.device,
    keep_images: int = 0,
    progress: bool | None = False,
    desc: str = "",
    save: SaveSamples | None = None,
    world: World = SINGLE,
) -> tuple[list[dict[str, np.ndarray]], torch.Tensor, int | None, float | None] | None:
    """:func:`generate_views` of ``seeds`` with the batches shared among the ranks of ``world``:
    its result for all seeds on the main rank (seconds summed over ranks), None on the others.
    ``save`` is for one process only."""
    if world.distributed and save is not None:
        raise ValueError("saving samples while sampling on several ranks is done by the row shards, not here")
    batches = world.part(-(-len(seeds) // batch_size))
    mine = seeds[batches.start * batch_size : batches.stop * batch_size]
    made = generate_views(
        model, sampler, sigmas, options, mine, batch_size=batch_size, device=device, views=views,
        keep_images=keep_images, progress=progress, desc=desc, save=save, first=batches.start * batch_size,
    ) if len(mine) else None
    if not world.distributed:
        return made
    gathered = world.gather(made)
    return _joined_views(gathered, keep_images) if world.main else None


def score_features(scoring: Scoring, features: Mapping[str, np.ndarray], *, bootstrap: int = 0,
                   bootstrap_seed: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """``scoring``'s metric values of ``features``; with ``bootstrap`` ≥ 2 also each scored column's
    standard error (:mod:`cmbench.metrics.bootstrap`)."""
    values = compute_metrics(scoring.metrics, features, scoring.reference, scoring.metric_options, device=device)
    if bootstrap:
        values.update(bootstrap_standard_errors(scoring.metrics, features, scoring.reference, scoring.metric_options,
                                                resamples=bootstrap, seed=bootstrap_seed, device=device))
    return values


def _joined_views(parts: list, keep_images: int) -> tuple[list[dict[str, np.ndarray]], torch.Tensor, int | None,
                                                           float | None]:
    """The ranks' :func:`generate_views` results (None from a rank that had no batches) as one
    process's: features and kept images concatenated in rank order (rank order is seed order)."""
    made = [part for part in parts if part is not None]
    features = [{layer: np.concatenate([part[0][view][layer] for part in made]) for layer in made[0][0][view]}
                for view in range(len(made[0][0]))]
    grid = torch.cat([part[1] for part in made])[:keep_images]
    nfes = {part[2] for part in made}
    if len(nfes) > 1:
        raise RuntimeError(f"the ranks' samplers made different numbers of evaluations per image: {sorted(nfes)}")
    seconds = [part[3] for part in made]
    return features, grid, nfes.pop(), None if None in seconds else sum(seconds)
