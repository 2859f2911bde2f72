"""EDM's deterministic/stochastic sampler (Karras et al. 2022, Algorithm 2), Euler or Heun.

The loop runs in float64 as the official ``edm_sampler`` does. With ``s_churn > 0`` one noise
draw is made per step (as the official loop does), so a per-sample stream stays aligned with
EDM's; with ``s_churn == 0`` no noise is drawn after the latent.

``clip_denoised`` clamps D(x; σ) to [−1, 1] at every evaluation (both Heun stages) before the
derivative (x − D)/σ is formed. NVlabs/edm's ``edm_sampler`` never clamps (the default here);
openai/consistency_models' ``karras_sample(clip_denoised=True)`` clamps inside its denoiser
callable for every sampler, and sony/ctm forces it for its EDM teacher, so suites reproducing
their EDM-teacher rows turn it on. (karras_sample also clamps its final output, which
quantisation does anyway.)
"""

from __future__ import annotations

import math

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise
from .chain import FREE, Chain


def denoised(model: ModelAdapter, x: torch.Tensor, t: float, labels, clip_denoised: bool) -> torch.Tensor:
    """D(x; t) in float64 for a batch at one noise level, clamped to [−1, 1] when asked."""
    sigma = torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)
    out = model.denoise(x, sigma, labels).to(torch.float64)
    return out.clamp(-1.0, 1.0) if clip_denoised else out


def sample_edm(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    second_order: bool = True,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = math.inf,
    s_noise: float = 1.0,
    clip_denoised: bool = False,
    chain: Chain = FREE,
) -> tuple[torch.Tensor, int]:
    """Integrate the PF ODE along ``sigmas`` (t_0 > … > t_N = 0). NFE = 2N − 1 (Heun), N (Euler).
    ``chain`` (:mod:`.chain`): where to start, and what to put back after each step, at its end σ."""
    num_steps = len(sigmas) - 1
    x = chain.start(latents, float(sigmas[0]))
    nfe = 0

    def derivative(x: torch.Tensor, t: float) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return (x - denoised(model, x, t, labels, clip_denoised)) / t

    for i in range(num_steps):
        t_cur, t_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_min <= t_cur <= s_max else 0.0
        t_hat = t_cur * (1.0 + gamma)
        if s_churn > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * noise.randn_like(x)
        d_cur = derivative(x, t_hat)
        x_next = x + (t_next - t_hat) * d_cur
        if second_order and t_next > 0:
            d_next = derivative(x_next, t_next)
            x_next = x + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_next)
        x = chain.replace(x_next, t_next, latents)
    return x, nfe
