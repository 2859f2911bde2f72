"""TrigFlow (Lu & Song 2024, "Simplifying, Stabilizing and Scaling Continuous-Time Consistency
Models", sCM, arXiv 2410.11081 §3): one network, read as a diffusion model or a consistency model.

TrigFlow noises data as x_t = cos(t)·x₀ + sin(t)·z with z ~ N(0, σ_d² I) and t ∈ [0, π/2]. The
network F_θ sees x_t/σ_d and c_noise(t), and both the diffusion model's clean-image prediction
and the consistency model are

    f_θ(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F_θ(x_t/σ_d, c_noise(t)),

with f_θ(x, 0) = x exactly (sin 0 = 0): TrigFlow's boundary condition sits at t = 0, not at σ_min.

cmbench's maps take EDM's σ and x_EDM = x₀ + σ·n. The two are the same process under
σ = σ_d·tan(t) and x_t = cos(t)·x_EDM, so the EDM-σ maps are exact rewritings, not fits:
``denoise(x, σ)`` (family ``edm``) and ``consistency(x, σ)`` (``cd`` / ``ct``) are
f_θ(cos(t)·x, t) with t = arctan(σ/σ_d). A consistency model also offers
``trig_consistency(x_t, t)``, f_θ itself in TrigFlow time, which reaches t = π/2 (σ = ∞, pure
noise) that no σ can name; sCM's sampler (:mod:`cmbench.samplers.scm`) uses it.

In EDM's terms TrigFlow is EDMPrecond with c_out's sign flipped: c_skip = σ_d²/(σ² + σ_d²),
c_out = −σ·σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), and c_noise(t) = t (sCM §4.1's identity time
transformation; ``time_input: trigflow_t``, times ``noise_label_scale`` for nets fed 1000·t).
σ_d is the model's ``sigma_data`` (default 0.5, as sCM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..validate import Checker
from .base import per_sample
from .networks import NetworkModel
from .preconditioning import TimeInput

TRIGFLOW = "trigflow"
TRIGFLOW_TIME = "trigflow_t"
TRIGFLOW_MAPS = {
    "edm": frozenset({"denoise", "ddim_x0"}),
    "cd": frozenset({"consistency", "trig_consistency"}),
    "ct": frozenset({"consistency", "trig_consistency"}),
}
"""The maps of a TrigFlow model by family: a diffusion model (``edm``) or a consistency model."""


@dataclass(frozen=True)
class TrigFlowNoiseLabel:
    """c_noise(t): the network's time input as a function of TrigFlow time.

    ``trigflow_t`` gives scale·t (sCM's c_noise(t) = t); any other :class:`TimeInput` is
    evaluated at σ = σ_d·tan(t), for networks trained on an EDM-style label such as ln(σ)/4.
    """

    time_input: TimeInput
    sigma_data: float

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1)
        if self.time_input.kind == TRIGFLOW_TIME:
            return self.time_input.scale * t
        return self.time_input(self.sigma_data * torch.tan(t))


def trigflow_time(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """t = arctan(σ/σ_d): the TrigFlow time of EDM noise level σ (σ = ∞ gives π/2)."""
    return torch.atan(sigma / sigma_data)


class TrigFlowModel(NetworkModel):
    """A TrigFlow network F_θ as family ``edm`` (a diffusion model: ``denoise``, ``ddim_x0``) or
    ``cd`` / ``ct`` (a consistency model: ``consistency`` and ``trig_consistency``).

    Every map is the one formula f_θ (:meth:`_f`); the network's noise labels are
    :class:`TrigFlowNoiseLabel` of t, so ``time_input`` here maps TrigFlow time, not σ.
    """

    def __init__(self, *args, family: str = "ct", **kwargs):
        if family not in TRIGFLOW_MAPS:
            raise ValueError(f"preconditioning 'trigflow' is for families {', '.join(TRIGFLOW_MAPS)}, not {family!r}")
        super().__init__(*args, **kwargs)
        self.family = family
        self.maps = TRIGFLOW_MAPS[family]
        self.preconditioning = TRIGFLOW
        self.time_input = TrigFlowNoiseLabel(self.time_input, self.sigma_data)

    def _f(self, x_t: torch.Tensor, t: torch.Tensor, labels) -> torch.Tensor:
        """f_θ(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F_θ(x_t/σ_d, c_noise(t)) (sCM §3)."""
        t_b = per_sample(t, x_t)
        sigma_data = self.sigma_data
        return torch.cos(t_b) * x_t - torch.sin(t_b) * sigma_data * self._call(x_t / sigma_data, t_b, labels)

    def _f_of_sigma(self, x: torch.Tensor, sigma: torch.Tensor, labels) -> torch.Tensor:
        """f_θ(cos(t)·x, t) with t = arctan(σ/σ_d): the same map on EDM's x and σ."""
        t_b = trigflow_time(per_sample(sigma, x), self.sigma_data)
        return self._f(torch.cos(t_b) * x, t_b, labels)

    def trig_consistency(self, x, t, labels=None):
        if "trig_consistency" not in self.maps:
            raise self.missing_map("trig_consistency")
        return self._f(x, t, labels)

    def consistency(self, x, sigma, labels=None):
        if "consistency" not in self.maps:
            raise self.missing_map("consistency")
        return self._f_of_sigma(x, sigma, labels)

    def denoise(self, x, sigma, labels=None):
        if "denoise" not in self.maps:
            raise self.missing_map("denoise")
        return self._f_of_sigma(x, sigma, labels)


def check_trigflow_time_input(c: Checker, spec: dict[str, Any], path: str, preconditioning: str | None) -> None:
    """Refuse ``time_input: trigflow_t`` on a model whose ``preconditioning`` is not TrigFlow
    (None: not known yet, a checkpoint file may still name it)."""
    if spec.get("time_input") == TRIGFLOW_TIME and preconditioning not in (None, TRIGFLOW):
        raise c.fail(f"{path}.time_input", f"{TRIGFLOW_TIME!r} is TrigFlow time t = arctan(σ/σ_data): it needs "
                                           f"preconditioning: {TRIGFLOW} (this model's is {preconditioning})")
