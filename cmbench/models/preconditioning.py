"""Preconditioning coefficients shared by the network families (shared/reference/facts.md §1).

All take σ as a ``[B, 1, 1, 1]`` tensor and return tensors of the same shape.
"""

from __future__ import annotations

import torch


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM (Karras et al. 2022, Table 1): c_skip, c_out, c_in."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt()


def consistency_scalings(
    sigma: torch.Tensor, sigma_data: float, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Consistency models (Song et al. 2023, App. C): c_skip(σ_min) = 1, c_out(σ_min) = 0."""
    shifted = sigma - sigma_min
    c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
    c_out = shifted * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1.0 / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in


def noise_label(sigma: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The network's time input ``scale · ln(σ)/4``: 1 for EDM and cmbench nets, 1000 for openai's."""
    return scale * 0.25 * torch.log(sigma.reshape(-1))
