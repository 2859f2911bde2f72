"""One-step generators whose network is an EDM denoiser, run once at a fixed noise level σ_init.

SiD (Zhou et al. 2024) and DMD2 (Yin et al. 2024) distil an EDM diffusion model into a generator
that keeps the teacher's form: EDM's ``EDMPrecond`` around a SongUNet or DhariwalUNet, called
once on pure noise at one σ it was trained at,

    x = G(z) = D(σ_init·z; σ_init, labels),   D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, ln(σ)/4)

with EDM's scalings (:func:`~cmbench.models.preconditioning.edm_scalings`) and one-hot labels:

- SiD: mingyuanzhou/SiD ``sid_generate.py`` ``sid_sampler``: ``net(latents·init_sigma,
  init_sigma, class_labels)`` with ``--init_sigma`` 2.5 (fixed during distillation and generation);
  labels one-hot, drawn per seed after the latent (EDM's ``StackedRandomGenerator``).
- DMD2: tianweiy/DMD2 ``main/edm/test_folder_edm.py``: ``current_model(noise·conditioning_sigma,
  conditioning_sigma, one_hot_labels)`` with ``--conditioning_sigma`` 80.

A suite says so with ``family: generator``, an EDM checkpoint and ``sigma_init``; a generator from
the user's own code (an entry point, or the Python API) keeps mapping the standard-normal latent
itself (:class:`~cmbench.models.networks.GeneratorModel`). The model's noise range is the single
level [σ_init, σ_init], the only one the generator is defined at; the ``onestep`` sampler records
it as the row's schedule (:func:`cmbench.samplers.onestep.generator_grid`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..validate import Checker
from .base import NoiseRange, per_sample
from .networks import NetworkModel
from .preconditioning import edm_scalings

DENOISER_GENERATOR_PRECONDITIONING = "edm"
"""The preconditioning of a denoiser generator's network (EDMPrecond: SiD's and DMD2's)."""

GENERATOR_FORMATS = ("edm_pickle", "state_dict")
"""Checkpoint formats a one-step generator loads from: an EDM snapshot (SiD) or a state dict of a
preset that declares an EDMPrecond (DMD2)."""

GENERATOR_FIXED_KEYS = ("sigma_min", "sigma_max", "time_input", "noise_label_scale")
"""Model options a denoiser generator refuses: its only noise level is σ_init and EDMPrecond's
time input is ln(σ)/4."""

SNAPSHOT_FAMILIES = {"edm": ("edm", "pd", "generator"), "vp": ("edm", "pd"), "ve": ("edm", "pd"), "cm": ("cd", "ct")}
"""Which suite families an EDM-codebase snapshot's preconditioner serves: EDMPrecond a diffusion
model (also as a PD teacher) or, SiD's, a one-step generator; VPPrecond / VEPrecond a diffusion
model; ECT's ECMPrecond a consistency model."""


class DenoiserGeneratorModel(NetworkModel):
    """x = D(σ_init·z; σ_init, labels) with EDM's scalings: one network evaluation per image."""

    family = "generator"
    maps = frozenset({"generate"})

    def __init__(self, net, *, sigma_init: float, image_shape, label_dim: int = 0,
                 noise_range: NoiseRange = NoiseRange(), preconditioning: str = DENOISER_GENERATOR_PRECONDITIONING,
                 **kwargs):
        check_sigma_init(sigma_init)
        if preconditioning != DENOISER_GENERATOR_PRECONDITIONING:
            raise ValueError(f"a one-step generator run at sigma_init needs an EDMPrecond network (preconditioning "
                             f"{DENOISER_GENERATOR_PRECONDITIONING!r}), got preconditioning {preconditioning!r}")
        single_level = NoiseRange(float(sigma_init), float(sigma_init), noise_range.sigma_data)
        super().__init__(net, image_shape, label_dim, single_level, **kwargs)
        self.sigma_init = float(sigma_init)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = z.to(torch.float64) * self.sigma_init
        sigma = per_sample(self.sigma_init, x)
        c_skip, c_out, c_in = edm_scalings(sigma, self.sigma_data)
        return (c_skip * x + c_out * self._call(c_in * x, sigma, labels)).to(z.dtype)


def check_sigma_init(sigma_init: Any) -> None:
    """Refuse a σ_init that is not a positive finite number (the generator's one noise level)."""
    if isinstance(sigma_init, bool) or not isinstance(sigma_init, (int, float)) or not 0 < sigma_init < float("inf"):
        raise ValueError(f"sigma_init must be a positive finite number (SiD: 2.5, DMD2: 80), got {sigma_init!r}")


def validate_generator_options(c: Checker, family: str, spec: dict[str, Any], path: str) -> None:
    """Check ``sigma_init`` and what goes with it in a checkpoint model's suite entry.

    Only ``family: generator`` takes ``sigma_init``, and a generator from a checkpoint needs it, an
    EDM checkpoint (``edm_pickle``, or a ``state_dict`` preset of an EDMPrecond), and none of the
    σ-range or time-input keys (:data:`GENERATOR_FIXED_KEYS`).
    """
    if family != "generator":
        if "sigma_init" in spec:
            raise c.fail(f"{path}.sigma_init", f"only a one-step generator (family: generator) runs at sigma_init; "
                                               f"a {family} model is sampled by its sampler's time grid")
        return
    fmt = spec.get("format", "native")
    if fmt not in GENERATOR_FORMATS:
        raise c.fail(f"{path}.format", f"a one-step generator comes from your code (give entry_point, a builder, and "
                                       f"image_shape, or pass it to cmbench.evaluate) or is an EDM network run once "
                                       f"at sigma_init, loaded from {' or '.join(GENERATOR_FORMATS)}; got format {fmt}")
    if "sigma_init" not in spec:
        raise c.fail(f"{path}.sigma_init", "a one-step generator from a checkpoint is an EDM denoiser run once at "
                                           "sigma_init: give it (SiD: 2.5, DMD2: 80)")
    c.number(spec["sigma_init"], f"{path}.sigma_init", minimum=0, exclusive=True)
    if fmt == "state_dict" and spec.get("arch") not in generator_archs():
        raise c.fail(f"{path}.arch", f"a one-step generator's state dict needs the preset of an EDMPrecond "
                                     f"generator; accepted: {', '.join(generator_archs())}")
    for key in GENERATOR_FIXED_KEYS:
        if key in spec:
            raise c.fail(f"{path}.{key}", "a one-step generator's only noise level is sigma_init, and its "
                                          "EDMPrecond network takes ln(σ)/4: it takes no σ range or time input")


def generator_archs() -> list[str]:
    """The state-dict presets whose file is a whole EDMPrecond (their model options say so)."""
    from ..checkpoints.official import OFFICIAL_ARCHS

    return [name for name, arch in OFFICIAL_ARCHS.items()
            if arch.model_options.get("preconditioning") == DENOISER_GENERATOR_PRECONDITIONING]


def check_snapshot_family(preconditioning: str, family: str, checkpoint: str) -> None:
    """Refuse a suite family the snapshot's preconditioner does not serve (:data:`SNAPSHOT_FAMILIES`),
    naming the file, its preconditioner and the families it serves."""
    families = SNAPSHOT_FAMILIES.get(preconditioning)
    if families is not None and family not in families:
        raise ValueError(f"checkpoint {checkpoint}: its {preconditioning!r} preconditioner serves family "
                         f"{' or '.join(families)}, but the suite says family {family!r}")
