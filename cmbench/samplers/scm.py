"""sCM's few-step sampler (Lu & Song 2024, arXiv 2410.11081), in TrigFlow time.

TrigFlow noises data as x_t = cos(t)·x₀ + sin(t)·z, z ~ N(0, σ_d² I). One step starts from noise
at t_max and maps it to the data, x = f(sin(t_max)·σ_d·ε, t_max); each further step noises that
sample again to an intermediate time t_i and maps it back, x = f(cos(t_i)·x + sin(t_i)·σ_d·ε_i, t_i)
(CM Algorithm 1 written in TrigFlow time). sCM samples in 2 steps through t_mid = 1.1.

The grid is data in TrigFlow time (radians, float64): t_max, t_1 > … > t_{n−1}, 0, with n the
NFE; a row's recorded schedule is this grid. t_max is arctan(σ_max/σ_d) of the model by default
(the paper's: σ_max = 80, σ_d = 0.5 give 1.56454) or exactly π/2 (``t_max: pi/2``: pure noise,
x = σ_d·ε, the σ = ∞ no EDM σ can name). The intermediate times come from ``intermediate_t``,
a mapping from NFE to its n − 1 times (default {2: [1.1]}); the paper defines no NFE above 2, so
those need their own entry. ε is each seed's latent, ε_i its later draws (cmbench.seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..models.base import ModelAdapter, NoiseRange
from ..seeds import SampleNoise

T_MAX_CHOICES = {"sigma_max": "arctan(σ_max/σ_data) of the model, the paper's", "pi/2": "π/2 exactly, pure noise"}
PAPER_INTERMEDIATE_T = {2: [1.1]}


def sample_scm(
    model: ModelAdapter,
    latents: torch.Tensor,
    times: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
    clip_denoised: bool = False,
) -> tuple[torch.Tensor, int]:
    """``times`` is the TrigFlow grid t_max > t_1 > … > t_{n−1} > 0 (its last point, 0, is where f
    maps to); f is ``model.trig_consistency``, evaluated once per point before the last. With
    ``clip_denoised`` each f output is clamped to [−1, 1] before it is noised again."""
    points = [float(t) for t in times[:-1]]
    sigma_data = model.sigma_data
    x = math.sin(points[0]) * sigma_data * latents.to(torch.float64)
    for i, t in enumerate(points):
        if i > 0:
            x = math.cos(t) * x + math.sin(t) * sigma_data * noise.randn_like(x)
        t_vec = torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)
        x = model.trig_consistency(x, t_vec, labels).to(torch.float64)
        if clip_denoised:
            x = x.clamp(-1.0, 1.0)
    return x, len(points)


def scm_grid(noise_range: NoiseRange, nfe: int, options: Mapping[str, Any]) -> torch.Tensor:
    """The TrigFlow times [t_max, t_1, …, t_{nfe−1}, 0] (float64) of an NFE-``nfe`` run."""
    t_max = start_time(noise_range, options["t_max"])
    if nfe == 1:
        return torch.tensor([t_max, 0.0], dtype=torch.float64)
    middle = intermediate_times(options["intermediate_t"], nfe, t_max)
    return torch.tensor([t_max, *middle, 0.0], dtype=torch.float64)


def start_time(noise_range: NoiseRange, choice: str) -> float:
    """t_max: arctan(σ_max/σ_d) (``sigma_max``) or π/2 (``pi/2``)."""
    if choice not in T_MAX_CHOICES:
        raise ValueError(f"sampler 'scm' option t_max = {choice!r} is not accepted; expected "
                         + " or ".join(f"{k} ({v})" for k, v in T_MAX_CHOICES.items()))
    if choice == "pi/2":
        return math.pi / 2
    return math.atan(noise_range.sigma_max / noise_range.sigma_data)


def intermediate_times(table: Mapping[Any, Any], nfe: int, t_max: float) -> list[float]:
    """The NFE's n − 1 intermediate TrigFlow times from ``intermediate_t``, checked: numbers in
    (0, π/2), strictly decreasing, all below t_max."""
    entries = {}
    for key, value in table.items():
        if not str(key).isdigit():
            raise ValueError(f"sampler 'scm' option intermediate_t: key {key!r} is not an NFE; expected a mapping "
                             f"from NFE to its intermediate TrigFlow times, e.g. {PAPER_INTERMEDIATE_T}")
        entries[int(key)] = value
    where = f"sampler 'scm' option intermediate_t[{nfe}]"
    if nfe not in entries:
        raise ValueError(f"{where} is missing: NFE {nfe} needs {nfe - 1} intermediate TrigFlow time(s) in (0, π/2), "
                         f"decreasing (sCM defines 1 and 2 steps, the latter with {PAPER_INTERMEDIATE_T})")
    times = entries[nfe]
    if not isinstance(times, (list, tuple)) or len(times) != nfe - 1:
        raise ValueError(f"{where} = {times!r}: expected a list of {nfe - 1} TrigFlow time(s) (NFE − 1)")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
        raise ValueError(f"{where} = {times!r}: expected numbers (TrigFlow times in radians)")
    times = [float(t) for t in times]
    outside = [t for t in times if not 0.0 < t < math.pi / 2]
    if outside:
        raise ValueError(f"{where} = {times}: {outside[0]} lies outside (0, π/2); TrigFlow times are in (0, π/2) "
                         f"(σ = σ_data·tan t)")
    if any(a <= b for a, b in zip(times, times[1:])) or times[0] >= t_max:
        raise ValueError(f"{where} = {times}: expected strictly decreasing times below t_max = {t_max:.6g}")
    return times
