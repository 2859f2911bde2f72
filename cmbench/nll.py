"""``cmbench nll``: bits/dim (or nats/dim) of a data set under a model's probability-flow ODE.

Discrete data follow score_sde: every pass dequantises each uint8 image afresh
((v + U)/256, scaled to [−1, 1]); an image's bits/dim is its mean over passes, and the result is
the mean over images with its standard error. ``--continuous`` takes float images in [−1, 1] as
they are and reports nats/dim.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .likelihood import dequantise, pf_ode_log_likelihood
from .models.base import ModelAdapter

TOY_PREFIX = "toy:"


def load_images(spec: str, continuous: bool) -> torch.Tensor:
    """NCHW images from ``toy:<split>`` or an .npz whose ``arr_0`` is NHWC (uint8, or float with
    ``continuous``)."""
    if spec.startswith(TOY_PREFIX):
        from .zoo.toy.data import load_toy

        images = load_toy(spec[len(TOY_PREFIX):])[0]
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} not found (give an .npz with arr_0, or toy:train / toy:test)")
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" not in data.files:
                raise ValueError(f"{path} has no arr_0 (it has {', '.join(data.files)}); expected NHWC images in arr_0")
            array = data["arr_0"]
        if array.ndim != 4:
            raise ValueError(f"{path}: arr_0 must be NHWC images, got shape {array.shape}")
        images = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    if continuous and images.dtype == torch.uint8:
        raise ValueError(f"{spec}: --continuous expects float images in [-1, 1], got uint8 (drop --continuous)")
    if not continuous and images.dtype != torch.uint8:
        raise ValueError(f"{spec}: images are {images.dtype}; uint8 images are dequantised, float ones need --continuous")
    return images


def evaluate_nll(
    model: ModelAdapter,
    images: torch.Tensor,
    *,
    continuous: bool,
    passes: int,
    divergence: str,
    batch_size: int,
    rtol: float,
    atol: float,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> dict:
    """Per-image bits/dim (nats/dim when continuous), averaged over passes; mean and its standard error."""
    if tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(f"data images are {tuple(images.shape[1:])}, the model makes {model.image_shape}")
    dim = images[0].numel()
    passes = 1 if continuous else passes
    per_image = torch.zeros(len(images), dtype=torch.float64)
    solves, nfe_total = 0, 0
    bar = tqdm(total=passes * len(images), desc="nll", unit="img", disable=not progress)
    for p in range(passes):
        noise = torch.Generator().manual_seed(seed + p)
        probes = torch.Generator().manual_seed(seed + 1_000_003 + p)
        x_all = images.to(torch.float64) if continuous else dequantise(images, noise)
        for start in range(0, len(images), batch_size):
            x = x_all[start : start + batch_size].to(device)
            result = pf_ode_log_likelihood(model, x, divergence=divergence, rtol=rtol, atol=atol, generator=probes)
            value = result.nats_per_dim(dim) if continuous else result.bits_per_dim(dim)
            per_image[start : start + len(x)] += value.cpu() / passes
            solves, nfe_total = solves + 1, nfe_total + result.nfe
            bar.update(len(x))
    bar.close()
    unit = "nats_per_dim" if continuous else "bpd"
    return {
        unit: float(per_image.mean()),
        "stderr": float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1 else None,
        "num_images": len(per_image), "passes": passes, "nfe_mean": nfe_total / solves,
        "divergence": divergence, "rtol": rtol, "atol": atol, "seed": seed,
        "checkpoint_sha256": model.checkpoint_sha256, "family": model.family,
    }
