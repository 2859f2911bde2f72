"""CTM γ-sampling (Kim et al. 2024, Algorithm 2).

On a grid σ_0 > … > σ_n: s = √(1−γ²)·(σ_{i+1} − σ_min) + σ_min; x ← G(x, σ_i, s); then, except
after the last step, x ← x + √(σ_{i+1}² − s²)·z. γ = 0 gives deterministic long jumps, γ = 1
gives consistency-model multistep sampling. NFE = n.
"""

from __future__ import annotations

import math

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise
from .chain import FREE, Chain


def sample_ctm_gamma(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    gamma: float = 0.0,
    chain: Chain = FREE,
) -> tuple[torch.Tensor, int]:
    """``chain`` (:mod:`.chain`): where to start, and what to put back after each jump, at the noise the
    state carries beyond σ_min, √(s² − σ_min²) (0 for γ = 1, which makes editing CM Algorithm 4)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"CTM gamma must lie in [0, 1], got {gamma}")
    num_steps = len(sigmas) - 1
    sigma_min = model.sigma_min
    x = chain.start(latents, float(sigmas[0]))
    for i in range(num_steps):
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        s = math.sqrt(1.0 - gamma**2) * (t_next - sigma_min) + sigma_min
        batch = (x.shape[0],)
        t_vec = torch.full(batch, t, dtype=torch.float64, device=x.device)
        s_vec = torch.full(batch, s, dtype=torch.float64, device=x.device)
        x = model.jump(x, t_vec, s_vec, labels).to(torch.float64)
        x = chain.replace(x, math.sqrt(max(s**2 - sigma_min**2, 0.0)), latents)
        if i < num_steps - 1:
            x = x + math.sqrt(max(t_next**2 - s**2, 0.0)) * noise.randn_like(x)
    return x, num_steps
