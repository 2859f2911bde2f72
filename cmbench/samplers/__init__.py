"""Sampler registry: each sampler is a pure function plus the rule that builds its time grid.

Every sampler has the signature ``sample(model, latents, sigmas, *, noise, labels, **options)
-> (images, nfe)`` where ``latents`` are standard normal, ``sigmas`` a float64 grid and ``nfe``
the number of model evaluations the call made per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from ..models.base import NoiseRange
from .consistency import RENOISE, sample_cm_multistep
from .chain import FREE, Chain
from .ctm import sample_ctm_gamma
from .ddim import sample_ddim
from .edm import sample_edm
from .onestep import generator_grid, read_stored, sample_generator
from .progdist import sample_progdist
from .scm import PAPER_INTERMEDIATE_T, T_MAX_CHOICES, sample_scm, scm_grid
from .schedules import append_zero, cosine_ve_sigmas, karras_index_sigmas, karras_sigmas

TIME_POINT_UNITS = ("sigma", "karras_index")


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: what it needs from the model, its options and its grid rule."""

    name: str
    requires: str
    summary: str
    sample: Callable[..., tuple[torch.Tensor, int]]
    sample_options: Mapping[str, Any]
    schedule_options: Mapping[str, Any]
    nfe_rule: str
    nfe_ok: Callable[[int], bool]
    build_grid: Callable[[NoiseRange, int, Mapping[str, Any]], torch.Tensor]
    edits: str = ""
    """How the sampler edits (zero-shot, :mod:`cmbench.editing`) when run with a :class:`Chain`
    that holds a measurement; "" when it takes no chain."""

    @property
    def options(self) -> dict[str, Any]:
        """Every accepted option with its default."""
        return {**self.schedule_options, **self.sample_options}

    def with_defaults(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options merged over the defaults, after checking names, types and ranges."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"sampler {self.name!r} has no option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(self.options))}"
            )
        for name, value in options.items():
            _check_option(self.name, name, value, self.options[name])
        return {**self.options, **options}

    def schedule(self, noise_range: NoiseRange, nfe: int, options: Mapping[str, Any]) -> torch.Tensor:
        """The float64 time grid this sampler uses for ``nfe`` evaluations."""
        if not self.nfe_ok(nfe):
            raise ValueError(f"sampler {self.name!r} cannot make NFE {nfe}: {self.nfe_rule}")
        return self.build_grid(noise_range, nfe, self.with_defaults(options))

    def run(
        self,
        model,
        latents: torch.Tensor,
        sigmas: torch.Tensor,
        *,
        noise,
        labels: torch.Tensor | None,
        options: Mapping[str, Any],
        chain: Chain = FREE,
    ) -> tuple[torch.Tensor, int]:
        """The images and NFE of one batch; ``chain`` (:mod:`.chain`) says where the chain starts and
        what it holds fixed (generation: from noise, nothing)."""
        full = self.with_defaults(options)
        kwargs = {k: full[k] for k in self.sample_options}
        if chain is not FREE:
            if not self.edits:
                raise ValueError(f"sampler {self.name!r} has no replacement step for editing; editing samplers: "
                                 f"{', '.join(editing_samplers())}")
            kwargs["chain"] = chain
        return self.sample(model, latents, sigmas, noise=noise, labels=labels, **kwargs)


# Allowed values beyond the type of the default: (test, what is accepted).
_OPTION_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "gamma": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "rho": (lambda v: v > 0, "a positive number"),
    "s_noise": (lambda v: v > 0, "a positive number"),
    "s_churn": (lambda v: v >= 0, "a number ≥ 0 (EDM's S_churn)"),
    "karras_steps": (lambda v: v >= 2, "an integer ≥ 2"),
    "time_point_units": (lambda v: v in TIME_POINT_UNITS, " or ".join(TIME_POINT_UNITS)),
    "renoise": (lambda v: v in RENOISE, " or ".join(RENOISE) + " (cm: √(τ² − σ_min²), CM Algorithm 1; ect: τ, ECT)"),
    "time_points": (
        lambda v: all(str(k).isdigit() and isinstance(p, (list, tuple)) for k, p in v.items()),
        "a mapping from NFE to a list of time points, e.g. {2: [0, 22, 39]}",
    ),
    "t_max": (lambda v: v in T_MAX_CHOICES, " or ".join(f"{k} ({v})" for k, v in T_MAX_CHOICES.items())),
    "intermediate_t": (
        lambda v: all(str(k).isdigit() and isinstance(p, (list, tuple)) for k, p in v.items()),
        "a mapping from NFE to its NFE − 1 TrigFlow times in (0, π/2), e.g. {2: [1.1]}",
    ),
}


def _check_option(sampler: str, name: str, value: Any, default: Any) -> None:
    """Raise ValueError unless ``value`` has the default's type and lies in the option's range."""
    if isinstance(default, bool):
        ok, accepted = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)) and not isinstance(default, bool):
        integral = isinstance(default, int)
        ok = isinstance(value, int if integral else (int, float)) and not isinstance(value, bool)
        accepted = "an integer" if integral else "a number"
    elif isinstance(default, Mapping):
        ok, accepted = isinstance(value, Mapping), "a mapping"
    elif isinstance(default, str) and name in _OPTION_RANGES:  # a choice: name the choices, whatever came
        ok, accepted = isinstance(value, str) and _OPTION_RANGES[name][0](value), _OPTION_RANGES[name][1]
    else:
        ok, accepted = isinstance(value, type(default)), type(default).__name__
    if ok and isinstance(value, float) and not math.isfinite(value) and value != default:
        ok, accepted = False, "a finite number" + (" (or .inf, its default)" if default == math.inf else "")
    if ok and name in _OPTION_RANGES:
        ok, accepted = _OPTION_RANGES[name][0](value), _OPTION_RANGES[name][1]
    if not ok:
        raise ValueError(f"sampler {sampler!r} option {name} = {value!r} is not accepted; expected {accepted}")


def _edm_grid(noise_range: NoiseRange, steps: int, options: Mapping[str, Any]) -> torch.Tensor:
    return append_zero(karras_sigmas(steps, noise_range.sigma_min, noise_range.sigma_max, options["rho"]))


def _trajectory_grid(noise_range: NoiseRange, nfe: int, options: Mapping[str, Any]) -> torch.Tensor:
    """The n + 1 grid points σ_0 > … > σ_n of CM multistep and CTM γ-sampling.

    ``time_points`` maps an NFE to explicit points: σ values (``time_point_units: sigma``) or
    indices into a ``karras_steps``-point Karras grid (``karras_index``, the official ``ts``, whose
    last index is the grid's end σ_min). NFEs without an entry use a Karras grid of n + 1 points.
    """
    units = options["time_point_units"]
    if units not in TIME_POINT_UNITS:
        raise ValueError(f"time_point_units {units!r} is not one of {', '.join(TIME_POINT_UNITS)}")
    points = {int(k): v for k, v in (options["time_points"] or {}).items()}.get(nfe)
    lo, hi, rho = noise_range.sigma_min, noise_range.sigma_max, options["rho"]
    if points is None:
        return karras_sigmas(nfe + 1, lo, hi, rho)
    if len(points) != nfe + 1:
        raise ValueError(
            f"time_points for NFE {nfe} must list {nfe + 1} points (NFE evaluation points and the "
            f"terminal one), got {len(points)}: {list(points)}"
        )
    if units == "karras_index":
        grid = karras_index_sigmas(points, options["karras_steps"], lo, hi, rho)
    else:
        grid = torch.tensor([float(p) for p in points], dtype=torch.float64)
    if not bool((grid[:-1] > grid[1:]).all()) or float(grid[-1]) <= 0:
        raise ValueError(f"time_points for NFE {nfe} must be positive and strictly decreasing in σ, got {grid.tolist()}")
    return grid


def _progdist_grid(noise_range: NoiseRange, nfe: int, options: Mapping[str, Any]) -> torch.Tensor:
    return karras_sigmas(nfe + 1, noise_range.sigma_min, noise_range.sigma_max, options["rho"])


def _ddim_grid(noise_range: NoiseRange, nfe: int, options: Mapping[str, Any]) -> torch.Tensor:
    return cosine_ve_sigmas(nfe, options["logsnr_min"], options["logsnr_max"])


# clip_denoised: false is NVlabs/edm's edm_sampler; openai's karras_sample defaults to true.
_EDM_SAMPLE_OPTIONS = {"s_churn": 0.0, "s_min": 0.0, "s_max": float("inf"), "s_noise": 1.0, "clip_denoised": False}
_TRAJECTORY_SCHEDULE = {"rho": 7.0, "time_points": {}, "time_point_units": "sigma", "karras_steps": 40}


def _heun(model, latents, sigmas, **kwargs):
    return sample_edm(model, latents, sigmas, second_order=True, **kwargs)


def _euler(model, latents, sigmas, **kwargs):
    return sample_edm(model, latents, sigmas, second_order=False, **kwargs)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler(
            name="heun",
            requires="denoise",
            summary="EDM Algorithm 2, second order (Heun), optional churn",
            sample=_heun,
            sample_options=MappingProxyType(_EDM_SAMPLE_OPTIONS),
            schedule_options=MappingProxyType({"rho": 7.0}),
            nfe_rule="Heun with N steps makes 2N − 1 evaluations, so NFE must be odd (1, 3, 5, …)",
            nfe_ok=lambda n: n >= 1 and n % 2 == 1,
            build_grid=lambda r, n, o: _edm_grid(r, (n + 1) // 2, o),
            edits="the replacement method on EDM's Heun steps (known part noised to each step's σ)",
        ),
        Sampler(
            name="euler",
            requires="denoise",
            summary="EDM Algorithm 2, first order (Euler), optional churn",
            sample=_euler,
            sample_options=MappingProxyType(_EDM_SAMPLE_OPTIONS),
            schedule_options=MappingProxyType({"rho": 7.0}),
            nfe_rule="Euler with N steps makes N evaluations (NFE ≥ 1)",
            nfe_ok=lambda n: n >= 1,
            build_grid=_edm_grid,
            edits="the replacement method on EDM's Euler steps (known part noised to each step's σ)",
        ),
        Sampler(
            name="cm_multistep",
            requires="consistency",
            summary="consistency-model multistep sampling (CM Algorithm 1)",
            sample=sample_cm_multistep,
            sample_options=MappingProxyType({"clip_denoised": True, "renoise": "cm"}),
            schedule_options=MappingProxyType(_TRAJECTORY_SCHEDULE),
            nfe_rule="one consistency evaluation per time point (NFE ≥ 1)",
            nfe_ok=lambda n: n >= 1,
            build_grid=_trajectory_grid,
            edits="CM Algorithm 4 (replacement after each clamped f, as openai's iterative_* routines)",
        ),
        Sampler(
            name="ctm_gamma",
            requires="jump",
            summary="CTM γ-sampling (γ = 0 long jumps, γ = 1 CM multistep)",
            sample=sample_ctm_gamma,
            sample_options=MappingProxyType({"gamma": 0.0}),
            schedule_options=MappingProxyType(_TRAJECTORY_SCHEDULE),
            nfe_rule="one jump per step (NFE ≥ 1)",
            nfe_ok=lambda n: n >= 1,
            build_grid=_trajectory_grid,
            edits="γ-sampling with the replacement after each jump (known part noised to √(s² − σ_min²))",
        ),
        Sampler(
            name="ddim",
            requires="ddim_x0",
            summary="deterministic DDIM in the cosine log-SNR schedule (PD)",
            sample=sample_ddim,
            sample_options=MappingProxyType({"clip_denoised": True}),
            schedule_options=MappingProxyType({"logsnr_min": -20.0, "logsnr_max": 20.0}),
            nfe_rule="one evaluation per DDIM step (NFE ≥ 1)",
            nfe_ok=lambda n: n >= 1,
            build_grid=_ddim_grid,
        ),
        Sampler(
            name="progdist",
            requires="ddim_x0",
            summary="Euler on a Karras grid ending at σ_min (the CM paper's PD sampler)",
            sample=sample_progdist,
            sample_options=MappingProxyType({"clip_denoised": True}),  # openai's karras_sample default
            schedule_options=MappingProxyType({"rho": 7.0}),
            nfe_rule="one evaluation per Euler step (NFE ≥ 1)",
            nfe_ok=lambda n: n >= 1,
            build_grid=_progdist_grid,
        ),
        Sampler(
            name="scm",
            requires="trig_consistency",
            summary="sCM's sampler in TrigFlow time: f at t_max, then re-noise to each intermediate t (2 steps: 1.1)",
            sample=sample_scm,
            sample_options=MappingProxyType({"clip_denoised": False}),
            schedule_options=MappingProxyType({"t_max": "sigma_max", "intermediate_t": PAPER_INTERMEDIATE_T}),
            nfe_rule="one consistency evaluation per TrigFlow time: t_max, then the NFE's intermediate_t entry "
                     "(NFE ≥ 1; the default has NFE 2's [1.1], larger NFEs need their own list)",
            nfe_ok=lambda n: n >= 1,
            build_grid=scm_grid,
        ),
        Sampler(
            name="onestep",
            requires="generate",
            summary="a one-step generator x = G(z, labels) (family generator; SiD / DMD2: D(σ_init·z; σ_init))",
            sample=sample_generator,
            sample_options=MappingProxyType({}),
            schedule_options=MappingProxyType({}),
            nfe_rule="a one-step generator makes exactly one evaluation (NFE 1)",
            nfe_ok=lambda n: n == 1,
            build_grid=generator_grid,
        ),
        Sampler(
            name="stored",
            requires="images",
            summary="images made elsewhere, read in stored order (family samples); NFE as stated",
            sample=read_stored,
            sample_options=MappingProxyType({}),
            schedule_options=MappingProxyType({}),
            nfe_rule="the NFE the stored images were made with, as the suite states it (0: not stated)",
            nfe_ok=lambda n: n >= 0,
            build_grid=lambda r, n, o: torch.zeros(0, dtype=torch.float64),
        ),
    )
}


def editing_samplers() -> list[str]:
    """The samplers that can run an editing chain."""
    return [s.name for s in SAMPLERS.values() if s.edits]


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}") from None
