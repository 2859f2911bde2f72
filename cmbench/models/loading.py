"""Network-backed models from a suite entry: validation, checkpoint loading and the adapter.

A suite's network model names a ``checkpoint`` and its ``format``:

- ``native``: cmbench's own files (the toy zoo); the file says its architecture and family.
- ``state_dict``: an official PyTorch state dict (openai/consistency_models, sony/ctm); ``arch``
  names the preset network and the model defaults (image shape, labels, time input).
- ``edm_pickle``: an NVlabs/edm ``.pkl`` snapshot, read without running its embedded code
  unless ``trust_pickle_code: true``; the preconditioner class sets σ range and coefficients
  (ECT's ``ECMPrecond``: a ``cd`` / ``ct`` model with the σ_min it records).
- ``diffusers``: a folder as diffusers' ``save_pretrained`` writes it (the Hugging Face copies of
  openai's consistency models), read without diffusers into cmbench's ADM net
  (:mod:`cmbench.checkpoints.diffusers_unet`); its ``config.json`` names the architecture.
- ``flax``: a flax msgpack training state of openai/consistency_models_cifar10 (the CM paper's
  CIFAR-10 EDM, CD and CT nets), read without JAX or flax; its ``params_ema`` tree is mapped onto
  cmbench's NCSN++ port; ``arch`` names the preset (:mod:`cmbench.checkpoints.flax_ncsnpp`).

A ``generator`` from a checkpoint (SiD's snapshots, DMD2's state dict) is an EDM denoiser run once
at its ``sigma_init`` (:mod:`cmbench.models.denoiser_generator`).

Suite options override what the file or preset says (σ range, σ_data, time input), and
``precision`` / ``compile`` / ``channels_last`` choose how the network runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..validate import Checker
from ..zoo import resolve_checkpoint
from .base import ModelAdapter, NoiseRange
from .adapters import network_adapter
from .denoiser_generator import check_snapshot_family, validate_generator_options
from .networks import RUN_OPTIONS, run_options, validate_run_options
from .pd import PREDICTIONS, ROLES
from .preconditioning import PRECONDITIONINGS, TIME_INPUTS
from .trigflow import TRIGFLOW, check_trigflow_time_input

CHECKPOINT_FORMATS = ("native", "state_dict", "edm_pickle", "diffusers", "flax")
DIFFUSERS_FAMILIES = ("cd", "ct", "edm")  # an ADM net without CTM's s embedding
FLAX_FAMILIES = ("cd", "ct", "edm")  # the CM paper's CIFAR-10 NCSN++ nets
NETWORK_OPTIONAL = (
    "format", "sha256", "arch", "trust_pickle_code", "sigma_min", "sigma_max", "sigma_data",
    "time_input", "noise_label_scale", "preconditioning", *RUN_OPTIONS, "sigma_init",
)
PD_OPTIONAL = ("prediction",)
CHECKPOINT_PRECONDITIONINGS = {"edm": (*PRECONDITIONINGS, TRIGFLOW), "cd": ("cm", TRIGFLOW), "ct": ("cm", TRIGFLOW)}
_SPEC_ONLY = ("checkpoint", "format", "sha256", "arch", "trust_pickle_code", *RUN_OPTIONS)


def validate_network_spec(c: Checker, family: str, spec: dict[str, Any], path: str) -> None:
    """Check a network model's suite entry (everything but ``family``)."""
    required = ("checkpoint", "role") if family == "pd" else ("checkpoint",)
    c.keys(spec, path, required, NETWORK_OPTIONAL + (PD_OPTIONAL if family == "pd" else ()))
    c.string(spec["checkpoint"], f"{path}.checkpoint")
    if "sha256" in spec and not _is_sha256(spec["sha256"]):
        raise c.fail(f"{path}.sha256", "expected the checkpoint's sha256 as 64 hexadecimal digits")
    fmt = c.choice(spec.get("format", "native"), f"{path}.format", CHECKPOINT_FORMATS)
    if fmt == "state_dict":
        from ..checkpoints.official import OFFICIAL_ARCHS

        if "arch" not in spec:
            raise c.fail(f"{path}.arch", f"a state_dict checkpoint needs its architecture preset; accepted: "
                                         f"{', '.join(OFFICIAL_ARCHS)}")
        c.choice(spec["arch"], f"{path}.arch", OFFICIAL_ARCHS)
    elif fmt == "flax":
        from ..checkpoints.flax_ncsnpp import FLAX_ARCHS

        if "arch" not in spec:
            raise c.fail(f"{path}.arch", f"a flax checkpoint needs its architecture preset; accepted: {', '.join(FLAX_ARCHS)}")
        c.choice(spec["arch"], f"{path}.arch", FLAX_ARCHS)
        if family not in FLAX_FAMILIES:
            raise c.fail(f"{path}.format", f"a flax checkpoint holds an NCSN++ net of the CM paper for families "
                                           f"{', '.join(FLAX_FAMILIES)}, not {family}")
    elif "arch" in spec:
        raise c.fail(f"{path}.arch", f"only state_dict checkpoints take an arch (and flax ones, from the flax "
                                     f"presets); a {fmt} checkpoint names its own")
    if fmt == "diffusers" and family not in DIFFUSERS_FAMILIES:
        raise c.fail(f"{path}.format", f"a diffusers UNet2DModel folder holds an ADM net for families "
                                       f"{', '.join(DIFFUSERS_FAMILIES)}, not {family}")
    if "trust_pickle_code" in spec:
        c.boolean(spec["trust_pickle_code"], f"{path}.trust_pickle_code")
        if fmt != "edm_pickle":
            raise c.fail(f"{path}.trust_pickle_code", "only edm_pickle checkpoints are pickles with code")
    if "preconditioning" in spec:
        if family not in CHECKPOINT_PRECONDITIONINGS or fmt == "edm_pickle":
            raise c.fail(f"{path}.preconditioning", "only EDM, CD and CT models from native, state_dict or diffusers "
                                                    "checkpoints take it (an EDM pickle's preconditioner class sets it)")
        c.choice(spec["preconditioning"], f"{path}.preconditioning", CHECKPOINT_PRECONDITIONINGS[family])
    check_trigflow_time_input(c, spec, path, spec.get("preconditioning"))
    if family == "pd":
        c.choice(spec["role"], f"{path}.role", ROLES)
        c.choice(spec.get("prediction", "v"), f"{path}.prediction", PREDICTIONS)
    if "time_input" in spec:
        c.choice(spec["time_input"], f"{path}.time_input", TIME_INPUTS)
    validate_run_options(c, spec, path)
    for key in ("sigma_data", "noise_label_scale"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=key == "sigma_data")
    for key in ("sigma_min", "sigma_max"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=True)
    check_sigma_range(c, spec, path, None)
    validate_generator_options(c, family, spec, path)


def check_sigma_range(c: Checker, spec: dict[str, Any], path: str, default: NoiseRange | None) -> None:
    """Refuse σ_min ≥ σ_max. A key left out counts as ``default``'s value; with ``default`` None
    (a checkpoint's range, unknown before loading) only a pair given together is checked."""
    if default is None and not ("sigma_min" in spec and "sigma_max" in spec):
        return
    lo = spec.get("sigma_min", default.sigma_min if default else None)
    hi = spec.get("sigma_max", default.sigma_max if default else None)
    if lo >= hi:
        key = "sigma_min" if "sigma_min" in spec else "sigma_max"
        raise c.fail(f"{path}.{key}", f"sigma_min must be below sigma_max; got sigma_min {lo}, sigma_max {hi}"
                                      + ("" if "sigma_min" in spec and "sigma_max" in spec else " (the other is the default)"))


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value.lower())


def load_network(spec: dict[str, Any], family: str, checkpoint_dir: Path, device: str):
    """(network, the file's model options, its sha256) for a validated suite entry."""
    path, zoo_sha256 = resolve_checkpoint(spec["checkpoint"], checkpoint_dir)
    expected = spec.get("sha256")
    if expected and zoo_sha256 and expected.lower() != zoo_sha256:
        raise ValueError(f"checkpoint {spec['checkpoint']}: the suite expects sha256 {expected}, the zoo manifest records {zoo_sha256}")
    expected = expected or zoo_sha256
    fmt = spec.get("format", "native")
    if fmt == "state_dict":
        from ..checkpoints.state_dict import load_state_dict_checkpoint

        ckpt = load_state_dict_checkpoint(path, spec["arch"], device=device, expected_sha256=expected)
        return ckpt.net, dict(ckpt.preset.model_options), ckpt.sha256
    if fmt == "flax":
        from ..checkpoints.flax_ncsnpp import load_flax_checkpoint

        ckpt = load_flax_checkpoint(path, spec["arch"], device=device, expected_sha256=expected)
        return ckpt.net, dict(ckpt.preset.model_options), ckpt.sha256
    if fmt == "diffusers":
        from ..checkpoints.diffusers_unet import load_diffusers_unet

        ckpt = load_diffusers_unet(path, device=device, expected_sha256=expected)
        return ckpt.net, dict(ckpt.model_options), ckpt.sha256
    if fmt == "edm_pickle":
        from ..checkpoints.edm_pickle import load_edm_pickle

        ckpt = load_edm_pickle(path, device=device, expected_sha256=expected,
                               trust_pickle_code=spec.get("trust_pickle_code", False))
        check_snapshot_family(ckpt.preconditioning, family, spec["checkpoint"])
        return ckpt.net, edm_pickle_options(ckpt.preconditioning, ckpt.options), ckpt.sha256
    from ..checkpoints import load_native

    ckpt = load_native(path, device=device, expected_sha256=expected)
    if ckpt.family != family:
        raise ValueError(f"checkpoint {path} holds a {ckpt.family!r} model, but the suite says family {family!r}")
    return ckpt.net, dict(ckpt.model_options), ckpt.sha256


EDM_SAMPLER_RANGE = (0.002, 80.0)  # EDM's generate.py defaults, clamped to the network's own range


def edm_pickle_options(preconditioning: str, options: dict[str, Any]) -> dict[str, Any]:
    """Model options of an EDM snapshot: its preconditioner's coefficients and time input, and
    the σ range EDM's ``generate.py`` samples over: [max(0.002, σ_min), min(80, σ_max)] (an
    EDMPrecond records 0 and ∞; a VPPrecond its ε_t and t = 1 levels). ECT's ECMPrecond (``cm``)
    keeps the σ_min it records, which is its boundary condition f(x, σ_min) = x (0.003 by default in
    locuslab/ect ``training/networks.py``), and starts at min(80, ∞) = 80, ECT's ``t_max``."""
    if preconditioning not in (*PRECONDITIONINGS, "cm"):
        raise ValueError(f"EDM snapshots with the {preconditioning!r} preconditioner (iDDPMPrecond) are read but "
                         f"not evaluated yet: cmbench evaluates {', '.join(PRECONDITIONINGS)} and ECMPrecond (cm) "
                         "snapshots")
    keep = ("image_shape", "label_dim", "sigma_data", "beta_d", "beta_min", "M")
    out = {k: options[k] for k in keep if k in options}
    recorded_min = float(options.get("sigma_min", 0.0))
    out["sigma_min"] = recorded_min if preconditioning == "cm" else max(EDM_SAMPLER_RANGE[0], recorded_min)
    out["sigma_max"] = min(EDM_SAMPLER_RANGE[1], float(options.get("sigma_max", float("inf"))))
    out["preconditioning"] = preconditioning
    if preconditioning in ("vp", "ve"):
        out["time_input"] = preconditioning  # VPPrecond and VEPrecond each have their own c_noise
    return out


def build_network_model(family: str, spec: dict[str, Any], checkpoint_dir: Path, device: str) -> ModelAdapter:
    """The family's adapter around the checkpoint a validated suite entry names."""
    net, file_options, sha256 = load_network(spec, family, checkpoint_dir, device)
    options = {**file_options, **{k: v for k, v in spec.items() if k not in _SPEC_ONLY}}
    if "image_shape" not in options:
        raise ValueError(f"checkpoint {spec['checkpoint']}: its model options lack image_shape")
    if family == "ctm" and getattr(net, "s_embedding", True) is False:  # nets without the flag are trusted
        raise ValueError(f"checkpoint {spec['checkpoint']}: a CTM network needs an s embedding (s_embedding: true)")
    return network_adapter(family, net, options, sha256=sha256, **run_options(spec))
