"""Time grids as data: float64 tensors of noise levels σ (EDM/VE convention), descending.

Building a grid is separate from sampling along it, so a tuned or official schedule is just a
different tensor handed to the same sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's grid (Karras et al. 2022, eq. 5): ``n`` points from σ_max down to σ_min.

    σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ. A one-point grid is [σ_max].
    """
    if n < 1:
        raise ValueError(f"a Karras grid needs at least 1 point, got {n}")
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    grid = (max_inv + i / (n - 1) * (min_inv - max_inv)) ** rho
    grid[0], grid[-1] = sigma_max, sigma_min  # exact ends (the power leaves ~1e-18 of round-off)
    return grid


def karras_index_sigmas(
    indices: Sequence[int], steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0
) -> torch.Tensor:
    """σ at integer ``indices`` of a ``steps``-point Karras grid (the official CM ``ts`` convention)."""
    bad = [i for i in indices if not 0 <= int(i) < steps]
    if bad:
        raise ValueError(f"time-point indices {bad} are outside a Karras grid of {steps} steps (0..{steps - 1})")
    return karras_sigmas(steps, sigma_min, sigma_max, rho)[torch.as_tensor([int(i) for i in indices])]


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def cosine_logsnr(t: torch.Tensor, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> torch.Tensor:
    """Cosine log-SNR schedule of progressive distillation (Salimans & Ho 2022).

    logsnr(t) = −2·ln tan(a·t + b), b = arctan(e^{−logsnr_max/2}), a = arctan(e^{−logsnr_min/2}) − b.
    """
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t.to(torch.float64) + b))


def cosine_ve_sigmas(n: int, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> torch.Tensor:
    """The VE noise levels of an ``n``-step DDIM grid t = 1, (n−1)/n, …, 0 (``n + 1`` points).

    With α² = sigmoid(logsnr) and σ_vp² = sigmoid(−logsnr), the VE level is σ = σ_vp/α = e^{−logsnr/2}
    (so z_t/α = x + σ·ε); the grid runs from e^{−logsnr_min/2} down to e^{−logsnr_max/2}.
    """
    if n < 1:
        raise ValueError(f"a DDIM grid needs at least 1 step, got {n}")
    t = torch.arange(n, -1, -1, dtype=torch.float64) / n
    return torch.exp(-0.5 * cosine_logsnr(t, logsnr_min, logsnr_max))
