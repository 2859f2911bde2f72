"""Models cmbench does not build itself: the user's own builder (an entry point in a suite) and a
model handed over in memory (the Python API, :mod:`cmbench.api`).

Both enter as a network plus a parameterisation, so they go through the same family adapters
(:func:`~cmbench.models.adapters.network_adapter`) as checkpoint files. A suite entry::

    mine:
      family: cd                      # edm, cd, ct, ctm, pd or generator
      entry_point: nets.py:build      # a .py file (relative to the suite's folder) or module:function
      kwargs: {channels: 64}          # keyword arguments of the builder
      checkpoint: runs/ema.pt         # optional: a state dict loaded strictly into what build returns
      state_dict_key: ema             # optional: the state dict inside a training checkpoint
      image_shape: [3, 32, 32]
      preconditioning: cm             # how the network's output becomes the family's map (below)

cmbench imports and runs the entry point's code because the suite names it: that is the user's
explicit request; nothing else in a suite executes code. The checkpoint is opened with
``torch.load(weights_only=True)``. The builder's module file and the checkpoint are hashed into
the row fingerprint, so changing either makes a rerun refuse the stale rows.

``preconditioning`` by family: ``edm``: edm (EDMPrecond, the default), vp, ve or none (the network
is D(x, σ)); ``cd`` / ``ct``: cm (the boundary-condition scalings, the default) or none (the network
is f(x, σ)); ``edm``, ``cd`` and ``ct`` also take trigflow (sCM's TrigFlow form, :mod:`.trigflow`);
``ctm``: edm (the default) or none (the network is g(x, t, s)); ``pd``: set by ``prediction`` (v, x,
eps, edm; a ``role: teacher`` in v, x or eps prediction is a VP diffusion model); ``generator``:
none (the network maps a standard-normal latent to an image).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints.hashing import read_verified, sha256_file
from ..validate import Checker
from ..zoo import resolve_checkpoint
from .adapters import DEFAULT_PRECONDITIONING, network_adapter
from .base import ModelAdapter
from .networks import RUN_OPTIONS, run_options, validate_run_options
from .pd import PREDICTIONS, ROLES
from .preconditioning import TIME_INPUTS
from .trigflow import TRIGFLOW, check_trigflow_time_input

PRECONDITIONING_CHOICES = {
    "edm": ("edm", "vp", "ve", "none", TRIGFLOW), "cd": ("cm", "none", TRIGFLOW), "ct": ("cm", "none", TRIGFLOW),
    "ctm": ("edm", "none"),
    "generator": ("none",),
}
EXTERNAL_FAMILIES = ("edm", "cd", "ct", "ctm", "pd", "generator")
_MODEL_OPTIONS = ("label_dim", "preconditioning", "time_input", "noise_label_scale", "sigma_min", "sigma_max",
                  "sigma_data", "beta_d", "beta_min", "M", "role", "prediction", *RUN_OPTIONS)
ENTRY_POINT_KEYS = ("kwargs", "checkpoint", "sha256", "state_dict_key", *_MODEL_OPTIONS)
IN_MEMORY_KEYS = ("state_sha256", *_MODEL_OPTIONS)


def is_external(spec: dict[str, Any]) -> bool:
    return "entry_point" in spec or "in_memory" in spec


def validate_external_spec(c: Checker, family: str, spec: dict[str, Any], path: str) -> None:
    """Check an entry-point or in-memory model entry (everything but ``family``)."""
    if family not in EXTERNAL_FAMILIES:
        raise c.fail(f"{path}.family", f"a model from an entry point or from memory is one of {', '.join(EXTERNAL_FAMILIES)}")
    if "entry_point" in spec:
        c.keys(spec, path, ("entry_point", "image_shape"), ENTRY_POINT_KEYS + (("role",) if family == "pd" else ()))
        target = c.string(spec["entry_point"], f"{path}.entry_point")
        module, _, attribute = target.rpartition(":")
        if not module or not attribute.isidentifier():
            raise c.fail(f"{path}.entry_point", f"expected 'file.py:function' or 'package.module:function', got {target!r}")
        c.mapping(spec.get("kwargs", {}), f"{path}.kwargs")
        for key in ("checkpoint", "state_dict_key"):
            if key in spec:
                c.string(spec[key], f"{path}.{key}")
        if "sha256" in spec and "checkpoint" not in spec:
            raise c.fail(f"{path}.sha256", "checks the checkpoint's hash; give a checkpoint too")
    else:
        c.keys(spec, path, ("in_memory", "image_shape"), IN_MEMORY_KEYS)
    shape = c.sequence(spec["image_shape"], f"{path}.image_shape")
    if len(shape) != 3:
        raise c.fail(f"{path}.image_shape", f"expected [channels, height, width], got {shape}")
    for i, d in enumerate(shape):
        c.integer(d, f"{path}.image_shape[{i}]", minimum=1)
    c.integer(spec.get("label_dim", 0), f"{path}.label_dim", minimum=0)
    if family == "pd":
        if "role" not in spec:
            raise c.fail(f"{path}.role", f"a PD model needs its role; accepted: {', '.join(ROLES)}")
        c.choice(spec["role"], f"{path}.role", ROLES)
        c.choice(spec.get("prediction", "v"), f"{path}.prediction", PREDICTIONS)
        if "preconditioning" in spec:
            raise c.fail(f"{path}.preconditioning", "a PD model's parameterisation is its prediction (v, x, eps, edm)")
    else:
        for key in ("role", "prediction"):
            if key in spec:
                raise c.fail(f"{path}.{key}", "only PD models take it")
        c.choice(spec.get("preconditioning", DEFAULT_PRECONDITIONING[family]), f"{path}.preconditioning",
                 PRECONDITIONING_CHOICES[family])
    if "time_input" in spec:
        c.choice(spec["time_input"], f"{path}.time_input", TIME_INPUTS)
        check_trigflow_time_input(c, spec, path, spec.get("preconditioning", DEFAULT_PRECONDITIONING.get(family, family)))
    validate_run_options(c, spec, path)
    for key in ("sigma_data", "noise_label_scale", "beta_d", "beta_min"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=key == "sigma_data")
    if "M" in spec:
        c.integer(spec["M"], f"{path}.M", minimum=2)
    for key in ("sigma_min", "sigma_max"):
        if key in spec:
            c.number(spec[key], f"{path}.{key}", minimum=0, exclusive=True)
    if spec.get("sigma_min", 0.002) >= spec.get("sigma_max", 80.0):
        raise c.fail(f"{path}.sigma_min", f"sigma_min must be below sigma_max; got {spec.get('sigma_min', 0.002)} "
                                          f"and {spec.get('sigma_max', 80.0)}")


def model_options(spec: dict[str, Any]) -> dict[str, Any]:
    """The adapter options of an external entry (image shape, labels, σ range, parameterisation)."""
    return {k: spec[k] for k in ("image_shape", *_MODEL_OPTIONS) if k in spec}


def state_sha256(net: nn.Module | Callable) -> str | None:
    """sha256 over a module's state dict (names, dtypes, shapes and values, in order); None for a
    plain callable, which has no state to hash."""
    if not isinstance(net, nn.Module):
        return None
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        if not isinstance(tensor, torch.Tensor):  # a module's get_extra_state() may return any object
            digest.update(f"{name}:{type(tensor).__name__}:{tensor!r};".encode())
            continue
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{list(value.shape)};".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def entry_point_file(target: str, base_dir: Path) -> Path:
    """The file of an entry point's module: ``file.py`` relative to ``base_dir``, or the file the
    import system finds for ``package.module`` (finding it imports the parent packages)."""
    module = target.rpartition(":")[0]
    if module.endswith(".py"):
        path = Path(module).expanduser()
        return path if path.is_absolute() else base_dir / path
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as err:
        raise ValueError(f"entry point {target!r}: module {module!r} cannot be found ({err})") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise ValueError(f"entry point {target!r}: module {module!r} is not importable (is its package installed, "
                         "or on PYTHONPATH?); or name a file: 'path/to/file.py:function'")
    return Path(found.origin)


def code_sha256(target: str, base_dir: Path) -> str:
    """sha256 of the entry point's module file (what the row fingerprint records)."""
    path = entry_point_file(target, base_dir)
    if not path.is_file():
        raise FileNotFoundError(f"entry point {target!r}: {path} does not exist (relative paths start at the suite's folder)")
    return sha256_file(path)


def _load_builder(target: str, base_dir: Path, where: str) -> Callable:
    module_name, _, attribute = target.rpartition(":")
    path = entry_point_file(target, base_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {path} does not exist (relative paths start at the suite's folder)")
    try:
        if module_name.endswith(".py"):
            name = f"cmbench_entry_point_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as err:  # the user's module: whatever it raises, say where
        sys.modules.pop(locals().get("name", ""), None)
        raise ValueError(f"{where}: importing {path} failed: {type(err).__name__}: {err}") from None
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise ValueError(f"{where}: {path} has no function {attribute!r}" if builder is None
                         else f"{where}: {attribute!r} in {path} is a {type(builder).__name__}, not a function")
    return builder


def _checkpoint_state(path: Path, key: str | None, expected_sha256: str | None, where: str) -> tuple[dict, str]:
    from ..checkpoints.native import _reason  # torch's refusal without its advice to unpickle

    data, sha256 = read_verified(path, expected_sha256, "checkpoint")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{where}: {path}: torch.load(weights_only=True) refused it (corrupt, or it holds "
                         f"objects other than tensors and plain data, which cmbench never unpickles): "
                         f"{_reason(err)}") from None
    if key is not None:
        if not isinstance(payload, dict) or key not in payload:
            have = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"{where}: {path} has no entry {key!r} (state_dict_key); it has: {have}")
        payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        hint = "" if key else "; if the state dict sits inside a training checkpoint, name it with state_dict_key"
        raise ValueError(f"{where}: {path} is not a state dict (a mapping of parameter names to tensors){hint}")
    return payload, sha256


def build_entry_point_model(name: str, family: str, spec: dict[str, Any], base_dir: Path, checkpoint_dir: Path,
                            device: str) -> ModelAdapter:
    """Run the entry point's builder, load the checkpoint into what it returns, wrap it for ``family``."""
    where = f"models.{name}.entry_point {spec['entry_point']!r}"
    builder = _load_builder(spec["entry_point"], base_dir, where)
    try:
        net = builder(**spec.get("kwargs", {}))
    except Exception as err:  # the user's builder
        raise ValueError(f"{where}: calling it with kwargs {spec.get('kwargs', {})} failed: {type(err).__name__}: {err}") from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"{where}: returned a {type(net).__name__}; expected a torch.nn.Module (the network)")
    sha256 = None
    if "checkpoint" in spec:
        from ..checkpoints.native import _check_state_dict  # the same strict check as native files

        path = resolve_checkpoint(spec["checkpoint"], checkpoint_dir)[0]
        state, sha256 = _checkpoint_state(path, spec.get("state_dict_key"), spec.get("sha256"), f"models.{name}.checkpoint")
        _check_state_dict(net, state, path)
        net.load_state_dict(state, strict=True)
    net = net.to(device)
    return network_adapter(family, net, model_options(spec), sha256=sha256 or state_sha256(net),
                           **run_options(spec))
