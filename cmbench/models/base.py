"""The model interface every family adapter implements (shared/design.md, "Interfaces").

Noise levels are EDM/VE σ throughout: a noisy sample is ``x + σ·n`` with data in [-1, 1].
Every map takes ``x`` of shape ``[B, C, H, W]``, noise levels as a float tensor of shape ``[B]``
and class labels as int64 indices ``[B]`` (or ``None`` for unconditional models), and returns a
tensor with the dtype of ``x``. A family offers only the maps it really has:

- ``denoise(x, sigma, labels)``: D(x; σ), the posterior-mean estimate; gives score access,
  ``score = (D - x) / σ²`` (EDM, CTM through g(x, t, t), PD teachers, the analytic mixture).
- ``consistency(x, sigma, labels)``: f(x, σ), the map to the trajectory's origin (CD, CT; CTM
  as G(x, σ, σ_min)).
- ``jump(x, t, s, labels)``: G(x, t, s), the map from time t to time s ≤ t on the PF-ODE
  trajectory (CTM).
- ``trig_consistency(x_t, t, labels)``: the consistency function in TrigFlow time (sCM, Lu &
  Song 2024): x_t = cos(t)·x₀ + sin(t)·z with t ∈ [0, π/2], so t = π/2 (σ = ∞) is reachable
  (CD / CT models with ``preconditioning: trigflow``, :mod:`cmbench.models.trigflow`).
- ``ddim_x0(x, sigma, labels)``: the clean-image prediction a DDIM step uses. Every model with
  ``denoise`` has it; a PD student has only this one, valid on its own step grid.
- ``generate(z, labels)``: a one-step generator's image from a standard-normal latent z.
- ``images``: not a map but a stored sample set (images made elsewhere), read in stored order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRAJECTORY_MAPS = ("denoise", "consistency", "jump", "ddim_x0")
MAPS = (*TRAJECTORY_MAPS, "trig_consistency", "generate", "images")
SCORE_FAMILIES = "EDM, CTM, PD teachers and the analytic mixture (gmm)"
TRIGFLOW_TIME_MODELS = "a cd or ct model with preconditioning: trigflow"


class MissingMapError(RuntimeError):
    """A sampler or metric asked a model for a map its family does not have."""


@dataclass(frozen=True)
class NoiseRange:
    """The σ range a model was trained on, and its data standard deviation."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5


class ModelAdapter:
    """Base class: one subclass per family. Subclasses override the maps they have."""

    family: str = "?"
    maps: frozenset[str] = frozenset()

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        label_dim: int = 0,
        noise_range: NoiseRange = NoiseRange(),
        checkpoint_sha256: str | None = None,
    ):
        self.image_shape = tuple(int(d) for d in image_shape)
        self.label_dim = int(label_dim)
        self.noise_range = noise_range
        self.checkpoint_sha256 = checkpoint_sha256

    @property
    def sigma_min(self) -> float:
        return self.noise_range.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.noise_range.sigma_max

    @property
    def sigma_data(self) -> float:
        return self.noise_range.sigma_data

    def has(self, map_name: str) -> bool:
        return map_name in self.maps

    def to(self, device: torch.device | str) -> "ModelAdapter":
        """Move whatever the model holds to ``device``; returns ``self``."""
        return self

    def missing_map(self, map_name: str) -> MissingMapError:
        have = ", ".join(sorted(self.maps)) or "none"
        hint = ""
        if map_name == "denoise":
            hint = f"; score access (likelihood, Heun/Euler/DDIM sampling) needs {SCORE_FAMILIES}"
        elif map_name == "trig_consistency":
            hint = f"; TrigFlow time (the scm sampler) needs {TRIGFLOW_TIME_MODELS}"
        return MissingMapError(
            f"{self.family} models have no {map_name!r} map (they have: {have}){hint}"
        )

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise self.missing_map("denoise")

    def consistency(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise self.missing_map("consistency")

    def jump(
        self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise self.missing_map("jump")

    def trig_consistency(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise self.missing_map("trig_consistency")

    def ddim_x0(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if "denoise" not in self.maps:
            raise self.missing_map("ddim_x0")
        return self.denoise(x, sigma, labels)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise self.missing_map("generate")


def per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Noise levels as a ``[B, 1, 1, 1]`` tensor on ``x``'s device, in ``x``'s dtype. A number is
    filled in on the device (copying it from the host would wait for the GPU's queue)."""
    if isinstance(sigma, (int, float)):
        sigma = torch.full((), float(sigma), dtype=x.dtype, device=x.device)
    else:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).expand(x.shape[0], *([1] * (x.ndim - 1)))
