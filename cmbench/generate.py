"""Sampling and scoring one schedule: the step a suite row and a tuning candidate share.

Images are generated seed by seed (:class:`~cmbench.seeds.SampleNoise`), quantised once and passed
through the feature extractor in the same batch, so only features are kept. The unit of work is a
list of seeds, so a later multi-process mode gives each rank its own seed slice and gathers the
features; nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .features import FeatureExtractor
from .images import to_uint8
from .metrics import MetricOptions, ReferenceStats, compute_metrics, layers_for
from .metrics.bootstrap import bootstrap_standard_errors
from .models import ModelAdapter
from .samplers import Sampler
from .seeds import SampleNoise


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
    progress: bool = False,
    desc: str = "",
) -> tuple[dict[str, np.ndarray], torch.Tensor, int, float]:
    """Sample the images of ``seeds`` and extract ``layers`` from them in one pass.

    Returns (features by layer, the first ``keep_images`` uint8 images, NFE per image,
    seconds spent in the sampler).
    """
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    kept: list[torch.Tensor] = []
    nfe, seconds = None, 0.0
    batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        noise = SampleNoise(batch, device)
        latents = noise.randn(model.image_shape)
        labels = noise.randint(model.label_dim) if model.label_dim else None
        start = time.perf_counter()
        with torch.no_grad():
            images, batch_nfe = sampler.run(model, latents, sigmas, noise=noise, labels=labels, options=options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        if nfe is not None and batch_nfe != nfe:
            raise RuntimeError(f"{desc}: the sampler made {batch_nfe} evaluations on one batch and {nfe} on another")
        nfe = batch_nfe
        uint8 = to_uint8(images, quantisation)
        if sum(len(k) for k in kept) < keep_images:
            kept.append(uint8.cpu())
        if layers:
            with torch.no_grad():
                feats = extractor.extract(uint8, layers)
            for layer in layers:
                chunks[layer].append(feats[layer].float().cpu())
    features = {layer: torch.cat(parts).numpy() for layer, parts in chunks.items()}
    grid = torch.cat(kept)[:keep_images] if kept else torch.zeros(0, dtype=torch.uint8)
    return features, grid, int(nfe), seconds


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
    progress: bool = False,
    desc: str = "",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor, int, float]:
    """The ``metrics`` of ``sampler`` at ``nfe`` on ``seeds``.

    Returns (metric values by column, the float64 σ grid, the first ``keep_images`` uint8 images,
    NFE per image, seconds spent in the sampler). With ``bootstrap`` ≥ 2 the values also hold
    each scored column's standard error (``<column>_se``, :mod:`cmbench.metrics.bootstrap`);
    the metric values themselves do not depend on it.
    """
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    features, grid, made_nfe, seconds = generate_features(
        model, sampler, sigmas, options, seeds, batch_size=batch_size, device=device, quantisation=quantisation,
        extractor=extractor, layers=layers_for(metrics), keep_images=keep_images, progress=progress, desc=desc,
    )
    values = compute_metrics(metrics, features, reference, metric_options)
    if bootstrap:
        values.update(bootstrap_standard_errors(metrics, features, reference, metric_options,
                                                resamples=bootstrap, seed=bootstrap_seed))
    return values, sigmas, grid, made_nfe, seconds
