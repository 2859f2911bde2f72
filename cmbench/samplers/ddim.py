"""Deterministic DDIM in progressive distillation's cosine schedule (Salimans & Ho 2022).

For i = N−1…0 with t = (i+1)/N, s = i/N: x̂ = clip(x̂(z_t)), ε̂ = (z_t − α_t x̂)/σ_t,
z_s = α_s x̂ + σ_s ε̂; the last step outputs x̂. NFE = N.

The loop runs on the VE variable x = z/α with σ = σ_vp/α (``cosine_ve_sigmas``), where the same
update reads ε̂ = (x − x̂)/σ_t, x_s = x̂ + σ_s·ε̂. The start z_1 = ε becomes x = ε·√(1 + σ_0²).
Any model with a clean-image prediction (``ddim_x0``) runs on it: PD students and teachers,
EDM and CTM denoisers, the analytic mixture.
"""

from __future__ import annotations

import math

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise


def sample_ddim(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, int]:
    num_steps = len(sigmas) - 1
    x = latents.to(torch.float64) * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    x0 = x
    for i in range(num_steps):
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        sigma = torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)
        x0 = model.ddim_x0(x, sigma, labels).to(torch.float64)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x - x0) / t
        x = x0 + t_next * eps
    return x0, num_steps
