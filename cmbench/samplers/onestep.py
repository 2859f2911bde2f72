"""Samplers for models that are not trajectories: a one-step generator, and a stored sample set.

A one-step generator (SiD, DMD2, a user's GAN-style distilled net) maps a standard-normal latent
straight to an image: x = G(z, labels), one evaluation. A stored sample set (images made
elsewhere) is read, not sampled; its sampler exists so that a suite row names it like any other
(``sampler: stored``), and the row's NFE is the one the suite states the images were made with.
"""

from __future__ import annotations

import torch

from ..models.base import ModelAdapter, NoiseRange
from ..seeds import SampleNoise


def generator_grid(noise_range: NoiseRange, nfe: int, options) -> torch.Tensor:
    """The σ of the generator's one evaluation, which the result row records as its schedule.

    A generator whose network is an EDM denoiser run at σ_init (SiD, DMD2;
    :mod:`cmbench.models.denoiser_generator`) is defined at that single level, its noise range
    [σ_init, σ_init]: the grid is [σ_init]. A generator that maps the standard-normal latent itself
    has no σ (its noise range is a default, σ_min < σ_max): the grid is empty.
    """
    if noise_range.sigma_min == noise_range.sigma_max:
        return torch.tensor([noise_range.sigma_max], dtype=torch.float64)
    return torch.zeros(0, dtype=torch.float64)


def sample_generator(
    model: ModelAdapter,
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: SampleNoise,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """x = G(z, labels) with z each seed's standard-normal latent; NFE 1. ``sigmas``
    (:func:`generator_grid`) only records the σ of the evaluation: the model holds it."""
    return model.generate(latents, labels=labels).to(torch.float64), 1


def read_stored(model: ModelAdapter, latents: torch.Tensor, sigmas: torch.Tensor, **_) -> tuple[torch.Tensor, int]:
    """Never called: :func:`cmbench.generate.image_batches` reads a stored set's images itself."""
    raise RuntimeError("a stored sample set is read by cmbench.generate.image_batches, not sampled")
