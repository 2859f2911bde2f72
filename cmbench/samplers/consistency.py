"""Consistency-model multistep sampling (Song et al. 2023, Algorithm 1).

x ← f(τ_0·z, τ_0); for each later time point τ: x ← f(x + √(τ² − σ_min²)·z, τ).
One f evaluation per time point, so NFE = number of time points (the grid's length − 1). With ``clip_denoised`` each
f output is clamped to [-1, 1] before re-noising, as the official sampler does.
"""

from __future__ import annotations

import math

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise
from .chain import FREE, Chain


def sample_cm_multistep(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    clip_denoised: bool = True,
    chain: Chain = FREE,
) -> tuple[torch.Tensor, int]:
    """``sigmas`` is the grid τ_0 > … > τ_n: f is evaluated at τ_0 … τ_{n−1}; τ_n is the terminal
    point (σ_min), as in the official ``ts`` whose last index is the end of the Karras grid.
    ``chain``: where to start and what to put back after each (clamped) f (:mod:`.chain`; editing
    with it is CM Algorithm 4)."""
    points = sigmas[:-1]
    x = chain.start(latents, float(points[0]))
    for i, tau in enumerate(float(s) for s in points):
        if i > 0:
            x = x + math.sqrt(tau**2 - model.sigma_min**2) * noise.randn_like(x)
        sigma = torch.full((x.shape[0],), tau, dtype=torch.float64, device=x.device)
        x = model.consistency(x, sigma, labels).to(torch.float64)
        if clip_denoised:
            x = x.clamp(-1.0, 1.0)
        x = chain.replace(x, 0.0, latents)
    return x, len(points)
