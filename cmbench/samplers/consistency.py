"""Consistency-model multistep sampling (Song et al. 2023, Algorithm 1).

x ← f(τ_0·z, τ_0); for each later time point τ: x ← f(x + s(τ)·z, τ). One f evaluation per time
point, so NFE = number of time points (the grid's length − 1). With ``clip_denoised`` each f output
is clamped to [-1, 1] before re-noising, as the official sampler does.

The re-noising standard deviation s(τ) is a named convention (:data:`RENOISE`), because the
official codes differ:

- ``cm``: s(τ) = √(τ² − σ_min²), CM Algorithm 1 and openai/consistency_models
  ``stochastic_iterative_sampler`` (the sample then has noise level τ measured from σ_min, where
  f(x, σ_min) = x);
- ``ect``: s(τ) = τ, ECT's ``generator_fn`` (locuslab/ect ``ct_eval.py`` and
  ``training/ct_training_loop.py``: ``x = x + t_next * torch.randn_like(x)``).
"""

from __future__ import annotations

import math

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise
from .chain import FREE, Chain

RENOISE = ("cm", "ect")
"""Re-noising conventions: ``cm`` √(τ² − σ_min²), ``ect`` τ."""


def renoise_std(tau: float, sigma_min: float, renoise: str) -> float:
    """The standard deviation of the noise added before evaluating f at τ (:data:`RENOISE`)."""
    if renoise == "cm":
        return math.sqrt(tau**2 - sigma_min**2)
    if renoise == "ect":
        return tau
    raise ValueError(f"renoise {renoise!r} is not one of {', '.join(RENOISE)}")


def sample_cm_multistep(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    clip_denoised: bool = True,
    renoise: str = "cm",
    chain: Chain = FREE,
) -> tuple[torch.Tensor, int]:
    """``sigmas`` is the grid τ_0 > … > τ_n: f is evaluated at τ_0 … τ_{n−1}; τ_n is the terminal
    point (σ_min), as in the official ``ts`` whose last index is the end of the Karras grid.
    ``renoise`` names the re-noising standard deviation (module docstring). ``chain``: where to start
    and what to put back after each (clamped) f (:mod:`.chain`; editing with it is CM Algorithm 4)."""
    points = sigmas[:-1]
    x = chain.start(latents, float(points[0]))
    for i, tau in enumerate(float(s) for s in points):
        if i > 0:
            x = x + renoise_std(tau, model.sigma_min, renoise) * noise.randn_like(x)
        sigma = torch.full((x.shape[0],), tau, dtype=torch.float64, device=x.device)
        x = model.consistency(x, sigma, labels).to(torch.float64)
        if clip_denoised:
            x = x.clamp(-1.0, 1.0)
        x = chain.replace(x, 0.0, latents)
    return x, len(points)
