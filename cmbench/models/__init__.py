"""Model families, their maps, suite-spec validation and construction.

``family_maps`` answers which maps a suite row can use before anything is loaded, so an
impossible row (Heun on a CD model) fails at validation, not after an hour of sampling.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..validate import Checker
from ..zoo import resolve_checkpoint
from .base import MAPS, MissingMapError, ModelAdapter, NoiseRange
from .gmm import GaussianMixture, GaussianMixtureModel, mixture_from_spec
from .networks import ConsistencyModel, CTMModel, EDMModel
from .pd import PREDICTIONS, ROLES, ProgressiveDistillationModel

FAMILIES = ("edm", "cd", "ct", "ctm", "pd", "gmm")
_STATIC_MAPS = {
    "edm": {"denoise", "ddim_x0"},
    "cd": {"consistency"},
    "ct": {"consistency"},
    "ctm": set(MAPS),
    "gmm": set(MAPS),
}
CHECKPOINT_FORMATS = ("native",)
NETWORK_OPTIONAL = ("format", "sha256", "sigma_min", "sigma_max", "sigma_data", "noise_label_scale")
GMM_OPTIONAL = ("components", "random", "class_conditional", "sigma_min", "sigma_max", "ode_steps")

__all__ = [
    "FAMILIES", "MissingMapError", "ModelAdapter", "NoiseRange", "GaussianMixture",
    "GaussianMixtureModel", "build_model", "family_maps", "validate_model_spec",
]


def family_maps(family: str, options: dict[str, Any]) -> set[str]:
    """The maps a model of ``family`` with these suite options offers."""
    if family == "pd":
        return {"denoise", "ddim_x0"} if options.get("role") == "teacher" else {"ddim_x0"}
    return _STATIC_MAPS[family]


def validate_model_spec(c: Checker, family: str, spec: dict[str, Any], path: str) -> None:
    """Check a suite's model entry (everything but ``family``) for its family."""
    if family == "gmm":
        c.keys(spec, path, ("image_shape",), GMM_OPTIONAL)
        shape = c.sequence(spec["image_shape"], f"{path}.image_shape")
        if len(shape) != 3:
            raise c.fail(f"{path}.image_shape", f"expected [channels, height, width], got {shape}")
        for i, d in enumerate(shape):
            c.integer(d, f"{path}.image_shape[{i}]", minimum=1)
        _validate_mixture(c, spec, path, math.prod(shape))
        c.boolean(spec.get("class_conditional", False), f"{path}.class_conditional")
        c.integer(spec.get("ode_steps", 256), f"{path}.ode_steps", minimum=1)
    else:
        extra = ("prediction", "role") if family == "pd" else ()
        c.keys(spec, path, ("checkpoint",) + (("role",) if family == "pd" else ()), NETWORK_OPTIONAL + extra)
        c.string(spec["checkpoint"], f"{path}.checkpoint")
        if "sha256" in spec and not _is_sha256(spec["sha256"]):
            raise c.fail(f"{path}.sha256", "expected the checkpoint's sha256 as 64 hexadecimal digits")
        c.choice(spec.get("format", "native"), f"{path}.format", CHECKPOINT_FORMATS)
        if family == "pd":
            c.choice(spec["role"], f"{path}.role", ROLES)
            c.choice(spec.get("prediction", "v"), f"{path}.prediction", PREDICTIONS)
        if "sigma_data" in spec:
            c.number(spec["sigma_data"], f"{path}.sigma_data", minimum=0, exclusive=True)
        if "noise_label_scale" in spec:
            c.number(spec["noise_label_scale"], f"{path}.noise_label_scale")
    for key in ("sigma_min", "sigma_max"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=True)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value.lower())


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


def build_model(family: str, spec: dict[str, Any], base_dir: Path, device: str = "cpu") -> ModelAdapter:
    """Construct a validated model entry; checkpoints are loaded without executing code."""
    if family == "gmm":
        shape = tuple(spec["image_shape"])
        mixture = mixture_from_spec(spec, math.prod(shape))
        noise_range = NoiseRange(spec.get("sigma_min", 0.002), spec.get("sigma_max", 80.0))
        model = GaussianMixtureModel(
            mixture, shape, class_conditional=spec.get("class_conditional", False),
            noise_range=noise_range, ode_steps=spec.get("ode_steps", 256),
        )
        return model.to(device)
    return _build_network_model(family, spec, base_dir, device)


def _build_network_model(family: str, spec: dict[str, Any], base_dir: Path, device: str) -> ModelAdapter:
    from ..checkpoints import load_native  # imports the network registry only when a checkpoint is used

    path, zoo_sha256 = resolve_checkpoint(spec["checkpoint"], base_dir)
    expected = spec.get("sha256")
    if expected and zoo_sha256 and expected.lower() != zoo_sha256:
        raise ValueError(f"checkpoint {spec['checkpoint']}: the suite expects sha256 {expected}, the zoo manifest records {zoo_sha256}")
    ckpt = load_native(path, device=device, expected_sha256=expected or zoo_sha256)
    if ckpt.family != family:
        raise ValueError(f"checkpoint {path} holds a {ckpt.family!r} model, but the suite says family {family!r}")
    options = {**ckpt.model_options, **{k: v for k, v in spec.items() if k not in ("checkpoint", "format", "sha256")}}
    missing = [k for k in ("image_shape",) if k not in options]
    if missing:
        raise ValueError(f"checkpoint {path}: model_options lacks {', '.join(missing)}")
    common = dict(
        image_shape=tuple(options["image_shape"]),
        label_dim=int(options.get("label_dim", 0)),
        noise_range=NoiseRange(
            float(options.get("sigma_min", 0.002)), float(options.get("sigma_max", 80.0)),
            float(options.get("sigma_data", 0.5)),
        ),
        checkpoint_sha256=ckpt.sha256,
        noise_label_scale=float(options.get("noise_label_scale", 1.0)),
    )
    if family == "edm":
        return EDMModel(ckpt.net, **common)
    if family in ("cd", "ct"):
        return ConsistencyModel(ckpt.net, family=family, **common)
    if family == "ctm":
        if getattr(ckpt.net, "s_embedding", True) is False:  # nets without the flag are trusted
            raise ValueError(f"checkpoint {path}: a CTM network needs an s embedding (arch_kwargs s_embedding: true)")
        return CTMModel(ckpt.net, **common)
    return ProgressiveDistillationModel(
        ckpt.net, prediction=options.get("prediction", "v"), role=options["role"], **common
    )
