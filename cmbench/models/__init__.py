"""Model families, their maps, suite-spec validation and construction.

``family_maps`` answers which maps a suite row can use before anything is loaded, so an
impossible row (Heun on a CD model) fails at validation, not after an hour of sampling.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..validate import Checker
from .base import TRAJECTORY_MAPS, MissingMapError, ModelAdapter, NoiseRange
from .external import build_entry_point_model, is_external, validate_external_spec
from .gmm import GaussianMixture, GaussianMixtureModel, mixture_from_spec
from .loading import build_network_model, check_sigma_range, validate_network_spec
from .samples import SampleSetModel, validate_samples_spec
from .trigflow import TRIGFLOW, TRIGFLOW_MAPS

FAMILIES = ("edm", "cd", "ct", "ctm", "pd", "gmm", "generator", "samples")
_STATIC_MAPS = {
    "edm": {"denoise", "ddim_x0"},
    "cd": {"consistency"},
    "ct": {"consistency"},
    "ctm": set(TRAJECTORY_MAPS),
    "gmm": set(TRAJECTORY_MAPS),
    "generator": {"generate"},
    "samples": {"images"},
}
GMM_OPTIONAL = ("components", "random", "class_conditional", "sigma_min", "sigma_max", "ode_steps")

__all__ = [
    "FAMILIES", "MissingMapError", "ModelAdapter", "NoiseRange", "GaussianMixture",
    "GaussianMixtureModel", "SampleSetModel", "build_model", "family_maps", "validate_model_spec",
]


def family_maps(family: str, options: dict[str, Any]) -> set[str]:
    """The maps a model of ``family`` with these suite options offers."""
    if family == "pd":
        return {"denoise", "ddim_x0"} if options.get("role") == "teacher" else {"ddim_x0"}
    if options.get("preconditioning") == TRIGFLOW and family in TRIGFLOW_MAPS:
        return set(TRIGFLOW_MAPS[family])
    return _STATIC_MAPS[family]


def validate_model_spec(c: Checker, family: str, spec: dict[str, Any], path: str) -> None:
    """Check a suite's model entry (everything but ``family``) for its family."""
    if family == "samples":
        validate_samples_spec(c, spec, path)
        return
    if is_external(spec):
        validate_external_spec(c, family, spec, path)
        return
    if family == "generator" and "checkpoint" not in spec:
        raise c.fail(path, "a one-step generator comes from your code (give entry_point, a builder, and image_shape, "
                           "or pass it to cmbench.evaluate) or is an EDM network run once at sigma_init (give "
                           "checkpoint, format edm_pickle or state_dict, and sigma_init)")
    if family != "gmm":
        validate_network_spec(c, family, spec, path)
        return
    c.keys(spec, path, ("image_shape",), GMM_OPTIONAL)
    shape = c.sequence(spec["image_shape"], f"{path}.image_shape")
    if len(shape) != 3:
        raise c.fail(f"{path}.image_shape", f"expected [channels, height, width], got {shape}")
    for i, d in enumerate(shape):
        c.integer(d, f"{path}.image_shape[{i}]", minimum=1)
    _validate_mixture(c, spec, path, math.prod(shape))
    c.boolean(spec.get("class_conditional", False), f"{path}.class_conditional")
    c.integer(spec.get("ode_steps", 256), f"{path}.ode_steps", minimum=1)
    for key in ("sigma_min", "sigma_max"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=True)
    check_sigma_range(c, spec, path, NoiseRange())


def _validate_mixture(c: Checker, spec: dict[str, Any], path: str, dim: int) -> None:
    if ("components" in spec) == ("random" in spec):
        raise c.fail(path, "give exactly one of 'components' (a list) or 'random' (count, seed, mean_scale, std)")
    if "random" in spec:
        rnd = c.mapping(spec["random"], f"{path}.random")
        c.keys(rnd, f"{path}.random", ("count", "seed", "mean_scale", "std"))
        c.integer(rnd["count"], f"{path}.random.count", minimum=1)
        c.integer(rnd["seed"], f"{path}.random.seed", minimum=0)
        c.number(rnd["mean_scale"], f"{path}.random.mean_scale", minimum=0)
        c.number(rnd["std"], f"{path}.random.std", minimum=0, exclusive=True)
        return
    for i, comp in enumerate(c.sequence(spec["components"], f"{path}.components")):
        p = f"{path}.components[{i}]"
        comp = c.mapping(comp, p)
        c.keys(comp, p, ("mean", "std"), ("weight",))
        mean = comp["mean"]
        if isinstance(mean, list):
            if len(mean) != dim:
                raise c.fail(f"{p}.mean", f"a list mean needs {dim} numbers (the image size), got {len(mean)}")
            for j, v in enumerate(mean):
                c.number(v, f"{p}.mean[{j}]")
        else:
            c.number(mean, f"{p}.mean")
        c.number(comp["std"], f"{p}.std", minimum=0, exclusive=True)
        c.number(comp.get("weight", 1.0), f"{p}.weight", minimum=0, exclusive=True)


def build_model(family: str, spec: dict[str, Any], checkpoint_dir: Path, device: str = "cpu", *,
                name: str = "model", base_dir: Path | None = None) -> ModelAdapter:
    """Construct a validated model entry ``name``; relative checkpoint paths start at
    ``checkpoint_dir``, sample sets and entry-point files at ``base_dir`` (the suite's folder;
    default ``checkpoint_dir``). Checkpoints are loaded without executing code (unless an EDM
    pickle's entry trusts it); an entry point's code runs because the suite names it."""
    base_dir = checkpoint_dir if base_dir is None else base_dir
    if family == "samples":
        path = Path(spec["path"]).expanduser()
        try:
            return SampleSetModel(path if path.is_absolute() else base_dir / path, quantisation=spec.get("quantisation"))
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"models.{name}.path: {err}") from None
    if "in_memory" in spec:
        raise ValueError(f"models.{name} is a model in memory: only the Python API (cmbench.evaluate) can supply it")
    if "entry_point" in spec:
        return build_entry_point_model(name, family, spec, base_dir, checkpoint_dir, device)
    if family == "gmm":
        shape = tuple(spec["image_shape"])
        mixture = mixture_from_spec(spec, math.prod(shape))
        noise_range = NoiseRange(spec.get("sigma_min", 0.002), spec.get("sigma_max", 80.0))
        model = GaussianMixtureModel(
            mixture, shape, class_conditional=spec.get("class_conditional", False),
            noise_range=noise_range, ode_steps=spec.get("ode_steps", 256),
        )
        return model.to(device)
    return build_network_model(family, spec, checkpoint_dir, device)
