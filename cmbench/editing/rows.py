"""Editing rows: real images degraded by a task, restored by a sampler with a replacement step,
scored against the ground truth (PSNR, SSIM, LPIPS, the data-consistency residual) and, as a
set, against the reference statistics (the suite's metrics: FID, KID, ...).

Image i of the data is edited with seed ``seed_start + i``: its latent, then its label (a
class-conditional model; the data carry none), then the task's draws, then the sampler's noise,
so an edit depends on its seed alone, as a generated sample does. Every per-image metric is a
mean over the images with a bootstrap standard error over the same resamples as the set metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..console import progress_bar
from ..finite import NonFiniteSamples, check_features, check_samples, show_seeds
from ..images import from_uint8, to_uint8
from ..metrics.restoration import PSNR_CONVENTION, SSIM_CONVENTION, psnr, ssim, ssim_window
from ..models import ModelAdapter
from ..samplers import Sampler
from ..seeds import SampleNoise
from ..stats import ImageSource
from .tasks import EditTask

PerImage = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
"""A full-reference distance per image, (outputs, truths) as uint8 NCHW → float64 [N] (LPIPS)."""

START_CONVENTION = "y + σ_0·z (CM Algorithm 4)"


@dataclass
class EditedSet:
    """What editing one row's images made: per-image values by column, the outputs' features by
    layer, the first images (truth, degraded input, output, uint8) and the sampler's NFE and time."""

    per_image: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    truth: torch.Tensor
    shown: torch.Tensor
    output: torch.Tensor
    nfe: int
    seconds: float


def edit_images(model: ModelAdapter, sampler: Sampler, sigmas: torch.Tensor, options: dict[str, Any], task: EditTask,
                data: ImageSource, seed_start: int, *, batch_size: int, device: torch.device, quantisation: str,
                extractor, layers: tuple[str, ...], lpips: PerImage | None = None, keep: int = 0,
                progress: bool | None = False, desc: str = "") -> EditedSet:
    """Edit every image of ``data`` (in stored order, image i with seed ``seed_start + i``) and
    measure the outputs, batch by batch, keeping only per-image values, features and ``keep`` images."""
    values: dict[str, list[np.ndarray]] = {"psnr": [], "ssim": [], "lpips": [], "consistency": []}
    features: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    kept: dict[str, list[torch.Tensor]] = {"truth": [], "shown": [], "output": []}
    seconds, nfe, done = 0.0, 0, 0
    bar = progress_bar(progress=progress, total=data.count, desc=desc, unit="img", leave=False)
    for truth in data.batches(batch_size):
        seeds = range(seed_start + done, seed_start + done + len(truth))
        started = time.perf_counter()
        with torch.no_grad():
            output, shown, residual, nfe = _edit_batch(model, sampler, sigmas, options, task,
                                                       from_uint8(truth).to(device), seeds, device)
        seconds += time.perf_counter() - started
        check_samples(output, seeds, desc, lambda: "the sampler's output is not finite")
        out8, shown8 = to_uint8(output, quantisation).cpu(), to_uint8(shown, quantisation).cpu()
        values["psnr"].append(psnr(out8, truth))
        values["ssim"].append(ssim(out8, truth))
        if lpips is not None:
            values["lpips"].append(lpips(out8, truth))
        if residual is not None:
            values["consistency"].append(residual.cpu().numpy())
        if layers:
            with torch.no_grad():
                feats = extractor.extract(out8.to(device), list(layers))
            check_features(feats, seeds, desc, extractor.name)
            for layer in layers:
                features[layer].append(feats[layer].float().cpu().numpy())
        if done < keep:
            for key, images in (("truth", truth), ("shown", shown8), ("output", out8)):
                kept[key].append(images[: keep - done])
        done += len(truth)
        bar.update(len(truth))
    bar.close()
    per_image = {key: np.concatenate(parts) for key, parts in values.items() if parts}
    _check_per_image(per_image, seed_start, desc)
    return EditedSet(per_image, {layer: np.concatenate(parts) for layer, parts in features.items()},
                     *(torch.cat(kept[key]) if kept[key] else torch.zeros(0, dtype=torch.uint8)
                       for key in ("truth", "shown", "output")), nfe, seconds)


def _edit_batch(model: ModelAdapter, sampler: Sampler, sigmas: torch.Tensor, options: dict[str, Any], task: EditTask,
                truth: torch.Tensor, seeds, device: torch.device):
    """One batch: (outputs, degraded inputs, per-image residual or None, NFE)."""
    noise = SampleNoise(seeds, device)
    latents = noise.randn(model.image_shape)
    labels = noise.randint(model.label_dim) if model.label_dim else None
    measurement = task.measure(truth, noise)
    output, nfe = sampler.run(model, latents, sigmas, noise=noise, labels=labels, options=options, chain=measurement)
    return output, measurement.shown, measurement.residual(output), nfe


def _check_per_image(per_image: dict[str, np.ndarray], seed_start: int, desc: str) -> None:
    """Fail closed on a non-finite per-image value (PSNR is infinite for an output equal to its truth)."""
    for key, values in per_image.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            seeds = range(seed_start, seed_start + len(values))
            why = " (the output equals the ground truth exactly)" if key == "psnr" else ""
            raise NonFiniteSamples(f"{desc}: {key} is not finite for {show_seeds(seeds, bad.tolist())}{why}; "
                             "nothing was scored")


def mean_and_se(values: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float | None]:
    """The mean of per-image ``values`` and its bootstrap standard error (ddof 1 over ``resamples``
    means of resampled images, drawn from ``np.random.default_rng(seed)``); None without resamples."""
    mean = float(np.mean(values))
    if resamples < 2:
        return mean, None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return mean, float(np.std(means, ddof=1))


def per_image_columns(edited: EditedSet, *, resamples: int, seed: int) -> dict[str, float | None]:
    """psnr, ssim, lpips and consistency_rms (means over images) with their ``_se``, and
    consistency_max, the largest residual (0 to rounding where the chain ends with the replacement)."""
    columns: dict[str, float | None] = {}
    for key, values in edited.per_image.items():
        name = "consistency_rms" if key == "consistency" else key
        columns[name], se = mean_and_se(values, resamples=resamples, seed=seed)
        if resamples >= 2:
            columns[f"{name}_se"] = se
    if "consistency" in edited.per_image:
        columns["consistency_max"] = float(edited.per_image["consistency"].max())
    return columns


def conventions(task: EditTask, image_shape: tuple[int, int, int], lpips: dict[str, Any] | None) -> dict[str, Any]:
    """The conventions behind an editing row's numbers, recorded in the row."""
    window = ssim_window(image_shape[1], image_shape[2], SSIM_CONVENTION["window"])
    return {"psnr": PSNR_CONVENTION, "ssim": {**SSIM_CONVENTION, "window_used": window},
            "lpips": lpips, "start": "y (noisy)" if task.kind == "denoising" else START_CONVENTION,
            "labels": "drawn from each image's seed (class-conditional models)"}
