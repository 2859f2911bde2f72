"""The consistency-models paper's progressive-distillation sampler (openai ``progdist``).

The CM paper's PD baseline is an EDM-parameterised student sampled by Euler steps on a Karras
grid of NFE + 1 points from σ_max down to σ_min; the last step lands on σ_min and is returned
as is (no final denoising), clamped to [−1, 1]. Each Euler step x' = x + (σ' − σ)·(x − x̂)/σ is
DDIM's update in the VE variable, so a student with only its clean-image prediction
(``ddim_x0``) runs on it.

The sampler exists only as openai/consistency_models' ``sample_progdist``, so its defaults are
what that code runs: ``karras_sample`` builds the grid with ``get_sigmas_karras(steps + 1, …)``
and drops the appended zero, wraps the model in a denoiser that clamps x̂ to [−1, 1] at every
call when ``clip_denoised`` is true (its default, kept by ``scripts/image_sample.py``), and
clamps the final output whatever ``clip_denoised`` says.
"""

from __future__ import annotations

import torch

from ..models.base import ModelAdapter
from ..seeds import SampleNoise


def sample_progdist(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, int]:
    """Euler along ``sigmas`` (σ_0 = σ_max > … > σ_N = σ_min). NFE = N."""
    x = latents.to(torch.float64) * float(sigmas[0])
    for i in range(len(sigmas) - 1):
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        sigma = torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)
        x0 = model.ddim_x0(x, sigma, labels).to(torch.float64)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        x = x + (t_next - t) * (x - x0) / t
    return x.clamp(-1.0, 1.0), len(sigmas) - 1
