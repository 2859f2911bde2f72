"""Training losses of the five families, as pure functions of models, data and a generator.

Each follows its paper (shared/reference/facts.md §1); the models are cmbench's adapters with a
trainable network, so the preconditioning trained here is exactly the one evaluated later.
All noise comes from the ``generator`` argument, so a training run is reproducible from its seed.
"""

from __future__ import annotations

import math

import torch

from ...models.base import per_sample
from ...samplers.schedules import cosine_ve_sigmas, karras_sigmas

EDM_P_MEAN, EDM_P_STD = -1.2, 1.2


def _randn(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype)


def edm_sigmas(batch: int, generator: torch.Generator) -> torch.Tensor:
    """EDM's training noise levels: ln σ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1)."""
    return torch.exp(torch.randn(batch, generator=generator) * EDM_P_STD + EDM_P_MEAN)


def denoising_loss(model, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """EDM's denoising score matching: λ(σ)·‖D(x0 + σn; σ) − x0‖², λ = (σ² + σd²)/(σ·σd)²."""
    sigma = edm_sigmas(x0.shape[0], generator)
    noisy = x0 + per_sample(sigma, x0) * _randn(x0, generator)
    weight = (sigma**2 + model.sigma_data**2) / (sigma * model.sigma_data) ** 2
    err = (model.denoise(noisy, sigma) - x0) ** 2
    return (per_sample(weight, x0) * err).mean()


@torch.no_grad()
def heun_step(teacher, x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> torch.Tensor:
    """One EDM Heun step of the teacher's PF ODE from σ_from to σ_to (> 0), per sample."""
    t, s = per_sample(sigma_from, x), per_sample(sigma_to, x)
    d = (x - teacher.denoise(x, sigma_from)) / t
    x_euler = x + (s - t) * d
    d_next = (x_euler - teacher.denoise(x_euler, sigma_to)) / s
    return x + (s - t) * 0.5 * (d + d_next)


def _adjacent_levels(grid: torch.Tensor, batch: int, generator: torch.Generator):
    """Random neighbouring grid levels σ_hi > σ_lo (indices into a descending grid)."""
    n = torch.randint(0, len(grid) - 1, (batch,), generator=generator)
    return grid[n].float(), grid[n + 1].float()


def consistency_distillation_loss(student, target, teacher, x0, grid, generator) -> torch.Tensor:
    """CD (Song et al. 2023, Alg. 2) with the squared ℓ2 metric and λ = 1: the student at σ_hi
    matches the EMA target at σ_lo, where x_lo is one teacher Heun step from x_hi."""
    sigma_hi, sigma_lo = _adjacent_levels(grid, x0.shape[0], generator)
    x_hi = x0 + per_sample(sigma_hi, x0) * _randn(x0, generator)
    with torch.no_grad():
        x_lo = heun_step(teacher, x_hi, sigma_hi, sigma_lo)
        goal = target.consistency(x_lo, sigma_lo)
    return ((student.consistency(x_hi, sigma_hi) - goal) ** 2).mean()


def ct_schedule(step: int, total: int, s0: int = 2, s1: int = 150, mu0: float = 0.9) -> tuple[int, float]:
    """CT's progressive schedules (Song et al. 2023, App. C): the number of grid points N(k) and
    the target EMA rate μ(k) = exp(s0·ln μ0 / N(k))."""
    n = math.ceil(math.sqrt(step / total * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1
    return n, math.exp(s0 * math.log(mu0) / n)


def consistency_training_loss(student, target, x0, grid, generator) -> torch.Tensor:
    """CT (Song et al. 2023, Alg. 3): both levels share one noise draw, no teacher."""
    sigma_hi, sigma_lo = _adjacent_levels(grid, x0.shape[0], generator)
    z = _randn(x0, generator)
    with torch.no_grad():
        goal = target.consistency(x0 + per_sample(sigma_lo, x0) * z, sigma_lo)
    return ((student.consistency(x0 + per_sample(sigma_hi, x0) * z, sigma_hi) - goal) ** 2).mean()


def karras_sigma(rank: torch.Tensor, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """σ at continuous ``rank`` ∈ [0, 1] of the Karras parameterisation (0 → σ_max, 1 → σ_min)."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + rank * (lo - hi)) ** rho


def _jittered_rank(index: torch.Tensor, last: int, generator: torch.Generator) -> torch.Tensor:
    """Grid index → rank in [0, 1], moved by up to half a cell unless it is an end point."""
    jitter = (torch.rand(index.shape, generator=generator) - 0.5) * ((index > 0) & (index < last))
    return ((index + jitter) / last).clamp(0.0, 1.0)


def ctm_loss(student, target, teacher, x0, generator, *, grid_steps: int, dsm_weight: float) -> torch.Tensor:
    """CTM (Kim et al. 2024, Alg. 1): soft consistency matching plus denoising score matching.

    Times t > s are grid points of a ``grid_steps``-point Karras grid, as in the paper, jittered
    by up to half a cell in ρ-space except at the ends (so the s embedding learns every target
    time, while σ_max → σ_min keeps the grid's probability); u is uniform in ρ-space between
    them. The teacher solves t → u with Heun steps no coarser than the grid. The estimate
    G_θ(x_t, t, s) must match G_θ⁻(Solver(x_t, t → u), u, s); both are compared after a
    stop-gradient jump G_sg(θ)(·, s, σ_min) to the data end. The DSM term on g_θ(x, σ, σ)
    keeps score access.
    """
    batch, last = x0.shape[0], grid_steps - 1
    lo, hi = student.sigma_min, student.sigma_max
    i_t = torch.randint(0, last, (batch,), generator=generator)
    i_s = i_t + 1 + (torch.rand(batch, generator=generator) * (last - i_t)).long()
    r_t, r_s = _jittered_rank(i_t, last, generator), _jittered_rank(i_s, last, generator)
    r_s = torch.maximum(r_s, r_t)
    r_u = r_t + (r_s - r_t) * torch.rand(batch, generator=generator)
    sigma_t, sigma_s = karras_sigma(r_t, lo, hi), karras_sigma(r_s, lo, hi)
    x_t = x0 + per_sample(sigma_t, x0) * _randn(x0, generator)
    num_steps = int(torch.ceil((r_u - r_t).max() * (grid_steps - 1)).clamp(min=1))
    with torch.no_grad():
        x_u = x_t
        for k in range(num_steps):  # per sample: equal steps in ρ-space from t to u
            x_u = heun_step(teacher, x_u, karras_sigma(r_t + (r_u - r_t) * k / num_steps, lo, hi),
                            karras_sigma(r_t + (r_u - r_t) * (k + 1) / num_steps, lo, hi))
        goal = target.jump(x_u, karras_sigma(r_u, lo, hi), sigma_s)
    estimate = student.jump(x_t, sigma_t, sigma_s)
    sigma_min = torch.full_like(sigma_s, lo)
    student.net.requires_grad_(False)  # stop-gradient network; gradients still reach `estimate`
    try:
        mapped_estimate = student.jump(estimate, sigma_s, sigma_min)
        with torch.no_grad():
            mapped_goal = student.jump(goal, sigma_s, sigma_min)
    finally:
        student.net.requires_grad_(True)
    matching = ((mapped_estimate - mapped_goal) ** 2).mean()
    return matching + dsm_weight * denoising_loss(student, x0, generator)


@torch.no_grad()
def _ddim_step(model, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    x0 = model.ddim_x0(x, sigma).clamp(-1.0, 1.0)
    return x0 + per_sample(sigma_next, x) * (x - x0) / per_sample(sigma, x)


def progressive_distillation_loss(student, teacher, x0, student_steps, generator, *, logsnr_min, logsnr_max) -> torch.Tensor:
    """PD (Salimans & Ho 2022, Alg. 2) in VE form: two teacher DDIM steps t → t − 1/2N → t − 1/N
    define the clean target x̃ that one student DDIM step must produce; weight max(SNR, 1)
    (truncated SNR, SNR = 1/σ² in VE terms)."""
    teacher_grid = cosine_ve_sigmas(2 * student_steps, logsnr_min, logsnr_max).float()
    batch = x0.shape[0]
    i = torch.randint(0, student_steps, (batch,), generator=generator) * 2  # index of t in the fine grid
    sigma_t, sigma_mid, sigma_s = teacher_grid[i], teacher_grid[i + 1], teacher_grid[i + 2]
    x_t = x0 + per_sample(sigma_t, x0) * _randn(x0, generator)
    x_s = _ddim_step(teacher, _ddim_step(teacher, x_t, sigma_t, sigma_mid), sigma_mid, sigma_s)
    ratio = per_sample(sigma_s / sigma_t, x0)
    goal = (x_s - ratio * x_t) / (1 - ratio)
    weight = torch.clamp(1.0 / sigma_t**2, min=1.0)
    return (per_sample(weight, x0) * (student.ddim_x0(x_t, sigma_t) - goal) ** 2).mean()


def karras_training_grid(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The descending Karras grid the CD, CT and CTM losses pick neighbouring levels from."""
    return karras_sigmas(n, sigma_min, sigma_max)
