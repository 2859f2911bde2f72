"""Where a sampling chain starts and what it holds fixed after each step.

Generation starts from pure noise, ``x = σ_0·z``, and holds nothing fixed (:data:`FREE`). Zero-shot
editing (:mod:`cmbench.editing`) runs the same samplers from a measurement and puts its known part
back after every step (CM Algorithm 4's replacement), so an editing row is a sampler with a
replacement step rather than a second copy of each sampler.

``replace(x, level, latents)`` is called with the noise level the state carries at that point: 0
after a consistency evaluation (f maps to the data), the jump's target beyond σ_min for CTM, the
next grid point for EDM's Heun/Euler steps.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Chain(Protocol):
    def start(self, latents: torch.Tensor, sigma: float) -> torch.Tensor: ...

    def replace(self, x: torch.Tensor, level: float, latents: torch.Tensor) -> torch.Tensor: ...


class FreeChain:
    """Generation: start at σ_0·z (float64), hold nothing fixed."""

    def start(self, latents: torch.Tensor, sigma: float) -> torch.Tensor:
        return latents.to(torch.float64) * sigma

    def replace(self, x: torch.Tensor, level: float, latents: torch.Tensor) -> torch.Tensor:
        return x


FREE = FreeChain()
