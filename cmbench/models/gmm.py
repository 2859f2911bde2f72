"""The analytic model: a mixture of isotropic Gaussians in image shape.

Data x ~ Σ_k w_k N(μ_k, s_k² I). At noise level σ the marginal is Σ_k w_k N(μ_k, (s_k² + σ²) I),
so the ideal denoiser is exact (Karras et al. 2022, eq. 3 with a Gaussian-mixture prior):

    D(x; σ) = Σ_k r_k(x, σ) [μ_k + s_k²/(s_k² + σ²)·(x − μ_k)],
    r_k ∝ w_k N(x; μ_k, (s_k² + σ²) I).

The consistency function and CTM's jump G(x, t, s) are the PF-ODE flow of that denoiser,
dx/d ln σ = x − D(x; σ), integrated with classical RK4 in ln σ (float64, ``ode_steps`` steps per
call). With ``class_conditional`` the label picks the component (equal weights required).
Everything is float64; this model is the ground truth the samplers and metrics are tested on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import ModelAdapter, NoiseRange


@dataclass(frozen=True)
class GaussianMixture:
    """Means ``[K, D]``, standard deviations ``[K]`` and weights ``[K]`` (normalised), float64."""

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        k, _ = self.means.shape
        if self.stds.shape != (k,) or self.weights.shape != (k,):
            raise ValueError(f"a mixture of {k} components needs {k} stds and {k} weights")
        if bool((self.stds <= 0).any()) or bool((self.weights <= 0).any()):
            raise ValueError("mixture stds and weights must be positive")

    @classmethod
    def create(cls, means, stds, weights=None) -> "GaussianMixture":
        means = torch.as_tensor(means, dtype=torch.float64)
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)
        weights = torch.ones(len(means), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        return cls(means, stds, weights / weights.sum())

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_log_densities(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, (s_k² + σ²) I) for flat ``x [B, D]`` and ``sigma [B]``: ``[B, K]``.

        ‖x − μ_k‖² is expanded as ‖x‖² − 2 x·μ_k + ‖μ_k‖² (one matrix product, no ``[B, K, D]``
        tensor: the samplers call this thousands of times)."""
        var = self.stds[None, :] ** 2 + sigma.reshape(-1, 1) ** 2
        sq = ((x * x).sum(1, keepdim=True) - 2.0 * (x @ self.means.T) + (self.means * self.means).sum(1)[None, :])
        return self.weights.log()[None, :] - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * sq.clamp(min=0.0) / var

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Log density of the mixture convolved with N(0, σ² I) at flat ``x [B, D]``."""
        return torch.logsumexp(self.component_log_densities(x, sigma), dim=1)

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.component_log_densities(x, sigma), dim=1)

    def posterior_mean(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[x_0 | x_σ = x] for flat ``x``; with labels, conditioned on the component too.

        Σ_k r_k (μ_k + c_k (x − μ_k)) with c_k = s_k² / (s_k² + σ²), computed as
        (r ⊙ (1 − c)) μ + (Σ_k r_k c_k) x."""
        var_data = self.stds[None, :] ** 2
        shrink = var_data / (var_data + sigma.reshape(-1, 1) ** 2)  # [B, K]
        if labels is None:
            weights = self.responsibilities(x, sigma)
        else:
            weights = torch.nn.functional.one_hot(labels.long(), self.num_components).to(x.dtype)
        return (weights * (1.0 - shrink)) @ self.means + (weights * shrink).sum(1, keepdim=True) * x

    def sample(self, components: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """Exact draws given component indices ``[B]`` and standard normals ``[B, D]``."""
        return self.means[components] + self.stds[components, None] * normals


def mixture_from_spec(spec: dict, dim: int) -> GaussianMixture:
    """Build the mixture a suite describes, either by ``components`` or ``random`` (see suite docs).

    ``components``: list of {mean: number or list of D numbers, std: number, weight: number}.
    ``random``: {count, seed, mean_scale, std}: means uniform in [−mean_scale, mean_scale]^D from a
    generator seeded with ``seed``, one shared std, equal weights.
    """
    if "components" in spec:
        comps = spec["components"]
        means = []
        for c in comps:
            mean = torch.as_tensor(c["mean"], dtype=torch.float64).reshape(-1)
            means.append(mean.expand(dim).clone() if mean.numel() == 1 else mean)
        bad = [i for i, m in enumerate(means) if m.numel() != dim]
        if bad:
            raise ValueError(f"components {bad}: a mean must be one number or {dim} numbers (the image size)")
        stds = [float(c["std"]) for c in comps]
        weights = [float(c.get("weight", 1.0)) for c in comps]
        return GaussianMixture.create(torch.stack(means), stds, weights)
    rnd = spec["random"]
    gen = torch.Generator().manual_seed(int(rnd["seed"]))
    count = int(rnd["count"])
    means = (torch.rand(count, dim, generator=gen, dtype=torch.float64) * 2 - 1) * float(rnd["mean_scale"])
    return GaussianMixture.create(means, [float(rnd["std"])] * count)


class GaussianMixtureModel(ModelAdapter):
    """Adapter exposing every map of the analytic mixture: exact denoiser, ODE-oracle f and G."""

    family = "gmm"
    maps = frozenset({"denoise", "consistency", "jump", "ddim_x0"})

    def __init__(
        self,
        mixture: GaussianMixture,
        image_shape: tuple[int, int, int],
        *,
        class_conditional: bool = False,
        noise_range: NoiseRange = NoiseRange(),
        ode_steps: int = 256,
    ):
        if math.prod(image_shape) != mixture.dim:
            raise ValueError(f"image shape {tuple(image_shape)} has {math.prod(image_shape)} values, the mixture {mixture.dim}")
        if class_conditional and not torch.allclose(mixture.weights, mixture.weights[0]):
            raise ValueError("a class-conditional mixture needs equal weights (labels are drawn uniformly)")
        super().__init__(image_shape, mixture.num_components if class_conditional else 0, noise_range)
        self.mixture = mixture
        self.ode_steps = int(ode_steps)

    def to(self, device):
        m = self.mixture
        self.mixture = GaussianMixture(m.means.to(device), m.stds.to(device), m.weights.to(device))
        return self

    def denoise(self, x, sigma, labels=None):
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(x.shape[0])
        return self.mixture.posterior_mean(flat, sigma, labels).reshape(x.shape).to(x.dtype)

    def jump(self, x, t, s, labels=None):
        """G(x, t, s): RK4 on dx/du = x − D(x; e^u) from u = ln t to ln s (per sample)."""
        y = x.to(torch.float64)
        u = torch.log(torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0]))
        u_end = torch.log(torch.as_tensor(s, dtype=torch.float64, device=x.device).expand(x.shape[0]))
        h = ((u_end - u) / self.ode_steps).reshape(-1, *([1] * (x.ndim - 1)))
        h_flat = h.reshape(-1)

        def velocity(y, u):
            return y - self.denoise(y, torch.exp(u), labels)

        for _ in range(self.ode_steps):
            k1 = velocity(y, u)
            k2 = velocity(y + 0.5 * h * k1, u + 0.5 * h_flat)
            k3 = velocity(y + 0.5 * h * k2, u + 0.5 * h_flat)
            k4 = velocity(y + h * k3, u + h_flat)
            y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            u = u + h_flat
        return y.to(x.dtype)

    def consistency(self, x, sigma, labels=None):
        return self.jump(x, sigma, torch.full_like(torch.as_tensor(sigma, dtype=torch.float64), self.sigma_min), labels)
