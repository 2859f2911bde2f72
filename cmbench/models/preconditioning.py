"""Preconditioning coefficients and network time inputs (shared/reference/facts.md §1).

Scalings take σ as a ``[B, 1, 1, 1]`` tensor and return tensors of the same shape. A network's
time input (c_noise) is a function of σ that differs between checkpoint families; a
:class:`TimeInput` names it, so one adapter serves every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PRECONDITIONINGS = ("edm", "vp", "ve")
TIME_INPUTS = ("log_sigma", "vp", "ve", "inv_cos", "sigmoid_logsnr", "sigma", "trigflow_t")


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM (Karras et al. 2022, Table 1): c_skip, c_out, c_in."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt()


def vp_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's VPPrecond (Table 1, "VP"): c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1); an ε-predictor."""
    return torch.ones_like(sigma), -sigma, 1.0 / (sigma**2 + 1).sqrt()


def ve_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's VEPrecond (Table 1, "VE"): c_skip = 1, c_out = σ, c_in = 1."""
    return torch.ones_like(sigma), sigma, torch.ones_like(sigma)


def no_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An already preconditioned network (``preconditioning: none``): c_skip = 0, c_out = c_in = 1,
    so the map is the network's output itself."""
    return torch.zeros_like(sigma), torch.ones_like(sigma), torch.ones_like(sigma)


SCALINGS = {"edm": edm_scalings, "vp": vp_scalings, "ve": ve_scalings, "none": no_scalings}


def consistency_scalings(
    sigma: torch.Tensor, sigma_data: float, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Consistency models (Song et al. 2023, App. C): c_skip(σ_min) = 1, c_out(σ_min) = 0."""
    shifted = sigma - sigma_min
    c_skip = sigma_data**2 / (shifted**2 + sigma_data**2)
    c_out = shifted * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1.0 / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in


def vp_noise_label(sigma: torch.Tensor, beta_d: float, beta_min: float, M: int) -> torch.Tensor:
    """EDM VPPrecond's c_noise = (M − 1)·σ⁻¹(σ), computed as NVlabs/edm computes it.

    training/networks.py casts σ to float32 in ``VPPrecond.forward`` and evaluates ``sigma_inv``
    with ``(1 + sigma ** 2).log()``, so for small σ the float32 sum 1 + σ² loses most of σ²
    (at σ = 0.0064 the label is 1.1e-3 off the exact log1p value). The VP checkpoints were trained
    and sampled with that label, so it is reproduced here step for step in float32; the result is
    returned in σ's dtype.
    """
    s = sigma.to(torch.float32)
    t = ((beta_min**2 + 2 * beta_d * (1 + s**2).log()).sqrt() - beta_min) / beta_d
    return ((M - 1) * t).to(sigma.dtype)


@dataclass(frozen=True)
class TimeInput:
    """How a network receives σ (its c_noise), times ``scale``.

    - ``log_sigma``: ln(σ)/4 (EDMPrecond, CTM, cmbench nets; openai's CM/CTM nets use scale 1000,
      i.e. 250·ln σ).
    - ``vp``: (M − 1)·t(σ) with t(σ) = (√(β_min² + 2β_d·ln(1+σ²)) − β_min)/β_d (EDM's VPPrecond),
      evaluated as the official network evaluates it (:func:`vp_noise_label`).
    - ``ve``: ln(σ/2) (EDM's VEPrecond).
    - ``inv_cos``: arctan(e^{−logsnr/2})/(π/2) = arctan(σ)·2/π with logsnr clipped to ±20, the
      t ∈ [0, 1] of progressive distillation's cosine nets (diffusion_distillation's "inv_cos";
      its nets multiply by 1000 inside their embedding, so such a port uses scale 1000).
    - ``sigmoid_logsnr``: sigmoid(logsnr) = 1/(1+σ²) (diffusion_distillation's "sigmoid").
    - ``sigma``: σ itself (the default of an already preconditioned network, ``preconditioning: none``).
    - ``trigflow_t``: TrigFlow time t = arctan(σ/σ_data) itself, sCM's c_noise(t) = t (the default of
      ``preconditioning: trigflow``; scale 1000 gives 1000·t). It needs σ_data, so only a TrigFlow
      model evaluates it (:class:`cmbench.models.trigflow.TrigFlowNoiseLabel`); called with σ it refuses.
    """

    kind: str = "log_sigma"
    scale: float = 1.0
    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000

    def __post_init__(self):
        if self.kind not in TIME_INPUTS:
            raise ValueError(f"time input {self.kind!r} is not one of {', '.join(TIME_INPUTS)}")

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1)
        if self.kind == "log_sigma":
            label = 0.25 * torch.log(sigma)
        elif self.kind == "vp":
            label = vp_noise_label(sigma, self.beta_d, self.beta_min, self.M)
        elif self.kind == "ve":
            label = torch.log(0.5 * sigma)
        elif self.kind == "sigma":
            label = sigma
        elif self.kind == "inv_cos":
            label = torch.atan(sigma.clamp(math.exp(-10.0), math.exp(10.0))) / (0.5 * math.pi)
        elif self.kind == "trigflow_t":
            raise ValueError("time_input 'trigflow_t' is TrigFlow time t = arctan(σ/σ_data): only models with "
                             "preconditioning: trigflow take it")
        else:
            label = 1.0 / (1.0 + sigma**2)
        return self.scale * label
