"""CTM's bits/dim estimator, as sony/ctm's ``code/eval_bpd.py`` runs it (``likelihood``, mode
``'correct'``), restated: the ``ctm_eval_bpd`` likelihood protocol.

CTM's published 2.43 bits/dim (CIFAR-10) comes from this estimator, not from cmbench's exact
PF-ODE bits/dim (:mod:`cmbench.likelihood`). It differs in four ways, all kept here:

1. No dequantisation: uint8 v is scaled to x = v/127.5 − 1, as CTM's data loader does.
2. The ODE runs in t ∈ [t_min, 1] with σ(t) = u(t)^ρ, u(t) = σ_min^{1/ρ} + t(σ_max^{1/ρ} − σ_min^{1/ρ})
   (σ_min 0.002, σ_max 80, ρ 7, t_min 1e-3: the constants of eval_bpd.py's ``main`` and the
   defaults of its ``likelihood``), so dx/dt = ρ(σ_max^{1/ρ} − σ_min^{1/ρ})/u(t) · (x − D(x; σ(t))).
   It starts from x + σ(t_min)·z with σ(t_min) ≈ 0.00205 and ends at σ_max, where the prior is
   N(0, σ_max² I). scipy's RK45 with rtol = atol = 1e-3; the state and σ enter the model in
   float32; the divergence is Hutchinson's with one Rademacher probe per image, fixed for the solve.
3. A Gaussian residual for the step from σ to the data: log p₀(x) ≥ E[log p_σ(x_σ)] − R with
   R = ‖x − D(x_σ; σ)‖²/(2σ²) − D/2, the negative log-likelihood of the decoder N(D(x_σ; σ), σ² I)
   less the entropy of q(x_σ | x) = N(x, σ² I), for a fresh noise draw x_σ = x + σ z'.
4. The residual's σ is u(t_min) ≈ 0.413, the schedule before the power ρ (eval_bpd.py's
   ``residual`` calls ``sigma(t_min, ...)`` where ``likelihood`` and ``drift_fn`` use
   ``sigma(...) ** rho``), not the ODE's start σ(t_min) ≈ 0.00205. With σ that large, R is far
   below zero and the bits/dim come out low: by σ²/(s² + σ²)/(2 ln 2) ≈ 0.64 bits/dim on a
   mixture of well-separated Gaussians of std s = 0.15 (docs/likelihood.md).

bits/dim = −(log N(x_T; 0, σ_max² I) + ∫ ∇·(dx/dt) dt − R)/(D ln 2) + 7, the offset of
:data:`cmbench.likelihood.BPD_OFFSET_MINUS1_1`. Random draws come from one generator in CTM's
order: the probe, the ODE's starting noise, the residual's noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.integrate import solve_ivp

from .likelihood import LogLikelihood, drift_divergence, hutchinson_probe
from .models.base import ModelAdapter


@dataclass(frozen=True)
class CTMEvalBPD:
    """The constants of sony/ctm's ``code/eval_bpd.py`` likelihood (σ range, ρ, t_min, RK45 tolerances).

    They are CTM's own, whatever the model's noise range.
    """

    name: ClassVar[str] = "ctm_eval_bpd"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: int = 7
    t_min: float = 1e-3
    rtol: float = 1e-3
    atol: float = 1e-3

    def settings(self) -> dict:
        """What the JSON of ``cmbench nll`` records about the estimator."""
        return {"divergence": "hutchinson", "rtol": self.rtol, "atol": self.atol, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "rho": self.rho, "t_min": self.t_min}

    def root(self, t: torch.Tensor) -> torch.Tensor:
        """u(t) = σ_min^{1/ρ} + t(σ_max^{1/ρ} − σ_min^{1/ρ}) in float32; the noise level is u(t)^ρ."""
        low, high = self._roots(t.device)
        return low + t.to(torch.float32) * (high - low)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        """(dσ/dt)/σ = ρ(σ_max^{1/ρ} − σ_min^{1/ρ})/u(t), float32: dx/dt = rate·(x − D(x; σ(t)))."""
        low, high = self._roots(t.device)
        return self.rho * (high - low) / self.root(t)

    def _roots(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tensor(self.sigma_min, dtype=torch.float32, device=device) ** (1.0 / self.rho)
        high = torch.tensor(self.sigma_max, dtype=torch.float32, device=device) ** (1.0 / self.rho)
        return low, high


def ctm_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 x = v/127.5 − 1, without dequantisation (CTM's data loader)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"the ctm_eval_bpd protocol takes uint8 images, got {images.dtype}")
    return images.to(torch.float32) / 127.5 - 1


def ctm_eval_bpd_log_likelihood(
    model: ModelAdapter,
    x: torch.Tensor,
    protocol: CTMEvalBPD = CTMEvalBPD(),
    *,
    generator: torch.Generator | None = None,
) -> LogLikelihood:
    """CTM's estimate of log p₀(x) in nats ``[B]`` for images ``x`` [B, C, H, W] in [−1, 1]."""
    if not model.has("denoise"):
        raise model.missing_map("denoise")
    x = x.to(torch.float32)
    batch, device = x.shape[0], x.device
    root_at_start = protocol.root(torch.full((batch,), protocol.t_min, device=device))
    probe, start_noise, residual_noise = (draw.to(device) for draw in ctm_draws(x.shape, generator))
    x_end, divergence_integral, nfe = _solve(model, x + _per_image(root_at_start**protocol.rho) * start_noise, probe,
                                             protocol)
    prior = _gaussian_log_density(x_end, protocol.sigma_max)
    residual = _residual(model, x, root_at_start, residual_noise)  # CTM's σ: u(t_min), not u(t_min)^ρ
    return LogLikelihood((prior.double() + divergence_integral.double() - residual).cpu(), nfe)


def ctm_draws(shape: torch.Size, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Every draw one solve makes from ``generator``, in CTM's order, float32 on the CPU: the
    Rademacher probe, the ODE's starting noise and the residual's noise. The solve itself draws
    nothing, so drawing the residual's noise before it gives CTM's numbers; callers replay this to
    skip a batch's draws."""
    probe = hutchinson_probe(shape, generator).to(torch.float32)
    start_noise = torch.randn(shape, generator=generator)
    return probe, start_noise, torch.randn(shape, generator=generator)


def _solve(model: ModelAdapter, x_start: torch.Tensor, probe: torch.Tensor,
           protocol: CTMEvalBPD) -> tuple[torch.Tensor, torch.Tensor, int]:
    """x(1) (float32) and ∫_{t_min}^1 ∇·(dx/dt) dt (float32) by RK45, and the drift evaluations."""
    shape, batch, device = x_start.shape, x_start.shape[0], x_start.device
    size = x_start.numel()

    def drift_and_divergence(t: float, state: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(state[:size]).reshape(shape).to(device, torch.float32).requires_grad_(True)
        times = torch.full((batch,), t, dtype=torch.float32, device=device)
        with torch.enable_grad():
            denoised = model.denoise(xs, protocol.root(times) ** protocol.rho, None).to(torch.float64)
            drift = _per_image(protocol.rate(times)) * (xs - denoised)
            div = drift_divergence(drift, xs, probe)
        return np.concatenate([drift.detach().reshape(-1).cpu().numpy(), div.detach().cpu().numpy()])

    start = np.concatenate([x_start.detach().reshape(-1).cpu().numpy(), np.zeros(batch)])
    solution = solve_ivp(drift_and_divergence, (protocol.t_min, 1.0), start, method="RK45",
                         rtol=protocol.rtol, atol=protocol.atol)
    if not solution.success:
        raise RuntimeError(f"the PF-ODE solve failed: {solution.message}")
    end = torch.from_numpy(solution.y[:, -1]).to(device, torch.float32)
    return end[:size].reshape(shape), end[size:], int(solution.nfev)


def _gaussian_log_density(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x; 0, σ² I) per image, in x's dtype (float32 here, as CTM's prior)."""
    dim = x[0].numel()
    variance = torch.tensor(sigma, dtype=x.dtype, device=x.device) ** 2
    return -0.5 * dim * torch.log(2 * math.pi * variance) - (x**2).flatten(1).sum(1) / (2 * variance)


def _residual(model: ModelAdapter, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """R = ‖x − D(x + σz; σ)‖²/(2σ²) − D/2 per image (float64): the Gaussian decoder's negative
    log-likelihood less the entropy of N(x, σ² I)."""
    with torch.no_grad():
        denoised = model.denoise(x + _per_image(sigma) * noise, sigma, None).to(torch.float64)
    squared = ((x - denoised) ** 2).flatten(1).sum(1)
    return squared / (2 * sigma.double() ** 2) - x[0].numel() / 2


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1)
