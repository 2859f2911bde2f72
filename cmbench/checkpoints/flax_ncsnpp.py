"""The Consistency Models paper's CIFAR-10 flax checkpoints, loaded into cmbench's torch NCSN++.

openai/consistency_models_cifar10 writes its training state with ``flax.serialization.to_bytes``
(``jcm/checkpoints.py``): a map with ``step, lr, ema_rate, params, params_ema, model_state,
opt_state, rng_state`` (and ``target_params`` for the EMA-target CT / PD runs). The network's
weights for sampling are ``params_ema``. That tree is read without JAX or flax
(:mod:`cmbench.checkpoints.flax_msgpack`) and mapped totally and strictly onto
:class:`cmbench.nets.ncsnpp.NCSNpp`: every array has exactly one torch tensor, every tensor
exactly one array, and every shape must match after the layout change (conv kernels HWIO to
OIHW, Dense and NIN matrices (in, out) to (out, in)). A missing array, an extra one or a shape
mismatch is refused with its tree path, e.g. ``params_ema/ResnetBlockBigGANpp_3/Conv_0/kernel``.

Flax numbers submodules of one class in call order (``ResnetBlockBigGANpp_0, _1, ...``); the torch
net keeps its blocks in flat lists in that same order, so the mapping enumerates them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmbench.checkpoints.flax_msgpack import SKIPPED, flatten_tree, read_flax_msgpack
from cmbench.checkpoints.hashing import read_verified
from cmbench.checkpoints.official import OfficialArch
from cmbench.nets import build_network
from cmbench.nets.ncsnpp import NCSNPP_CIFAR10, NCSNpp
from cmbench.nets.ncsnpp_layers import NIN, FIRDownsampleConv, GaussianFourierProjection

PARAMS_TREE = "params_ema"

FLAX_ARCHS: dict[str, OfficialArch] = {
    "ncsnpp-cifar10": OfficialArch(
        "ncsnpp-cifar10", "ncsnpp", dict(NCSNPP_CIFAR10),
        {"image_shape": [3, 32, 32], "label_dim": 0, "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5,
         "time_input": "log_sigma", "noise_label_scale": 1.0},
        "openai/consistency_models_cifar10: edm_cifar10_ema, cd-l1 / cd-l2 / cd-lpips checkpoint_80, "
        "ct-lpips checkpoint_74, continuous-time CD / CT (flax msgpack State, params_ema)",
    ),
}

# How a flax array becomes a torch tensor, and the flax shape a torch shape implies.
_TO_TORCH = {
    "conv": lambda a: np.transpose(a, (3, 2, 0, 1)),  # HWIO -> OIHW
    "matrix": lambda a: np.transpose(a),  # Dense kernel / NIN W: (in, out) -> (out, in)
    "vector": lambda a: a,
}
_FLAX_SHAPE = {
    "conv": lambda s: (s[2], s[3], s[1], s[0]),
    "matrix": lambda s: (s[1], s[0]),
    "vector": lambda s: tuple(s),
}


@dataclass(frozen=True)
class FlaxLeaf:
    """One array of the flax tree: its torch state-dict key, layout and expected flax shape."""

    torch_key: str
    layout: str
    flax_shape: tuple[int, ...]


@dataclass
class FlaxCheckpoint:
    """A network rebuilt from a preset and the ``params_ema`` tree of a flax checkpoint."""

    net: nn.Module
    preset: OfficialArch
    sha256: str
    path: Path


def flax_arch(name: str) -> OfficialArch:
    """The flax preset ``name`` (a deep copy, so callers may not alter the registry)."""
    try:
        return copy.deepcopy(FLAX_ARCHS[name])
    except KeyError:
        raise ValueError(f"unknown flax architecture preset {name!r}; accepted: {', '.join(FLAX_ARCHS)}") from None


def load_flax_checkpoint(
    path: str | os.PathLike,
    arch: str,
    *,
    device: torch.device | str = "cpu",
    expected_sha256: str | None = None,
) -> FlaxCheckpoint:
    """Load the ``params_ema`` tree of the flax checkpoint at ``path`` into a network of preset ``arch``.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for a hash
    mismatch, a file that is not a flax msgpack state, one without ``params_ema`` (naming the
    top-level keys found), and a tree that does not fit the preset (naming the arrays).
    """
    path = Path(path)
    preset = flax_arch(arch)
    data, sha256 = read_verified(path, expected_sha256, "checkpoint")
    state = read_flax_msgpack(data, path, keep=(PARAMS_TREE,))
    if PARAMS_TREE not in state:
        raise ValueError(f"{path} has no {PARAMS_TREE!r} tree (the EMA weights a flax training state holds); "
                         f"top-level keys found: {', '.join(state) or 'none'}")
    params = state[PARAMS_TREE]
    if not isinstance(params, Mapping):
        raise ValueError(f"{path}: its {PARAMS_TREE!r} entry is a {type(params).__name__}, not a tree of arrays")
    net = build_network(preset.arch, preset.kwargs)
    net.load_state_dict(torch_state_from_flax(params, net, path), strict=True)
    return FlaxCheckpoint(net.eval().to(device), preset, sha256, path)


def torch_state_from_flax(params: Mapping, net: NCSNpp, source: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of ``net`` from the flax ``params`` tree (float32), after
    :func:`check_flax_tree`; ``source`` names the file in errors."""
    flat = flatten_tree(params, PARAMS_TREE)
    leaves = flax_leaves(net)
    check_flax_tree(flat, leaves, source)
    return {leaf.torch_key: torch.from_numpy(np.array(_TO_TORCH[leaf.layout](flat[path]), dtype=np.float32, order="C"))
            for path, leaf in leaves.items()}


def check_flax_tree(flat: Mapping[str, Any], leaves: Mapping[str, FlaxLeaf], source: str | Path) -> None:
    """Refuse a flat flax tree (path -> array, or anything with ``shape`` and ``dtype``) that does
    not hold exactly ``leaves``' arrays, each floating point and of its expected shape."""
    missing = [path for path in leaves if path not in flat]
    extra = [path for path in flat if path not in leaves]
    wrong = []
    for path, leaf in leaves.items():
        if path not in flat:
            continue
        array = flat[path]
        if array is SKIPPED or not (hasattr(array, "shape") and hasattr(array, "dtype")):
            wrong.append(f"{path} is a {type(array).__name__}, not an array")
        elif not np.issubdtype(np.dtype(array.dtype), np.floating):
            wrong.append(f"{path} has dtype {np.dtype(array.dtype).name}; weights are floating point")
        elif tuple(array.shape) != leaf.flax_shape:
            wrong.append(f"{path} has shape {tuple(array.shape)}, the network needs {leaf.flax_shape}")
    if missing or extra or wrong:
        problems = [f"{len(missing)} missing: {_listed(missing)}"] if missing else []
        problems += [f"{len(extra)} not in the network: {_listed(extra)}"] if extra else []
        problems += [f"{len(wrong)} mismatched: {_listed(wrong)}"] if wrong else []
        raise ValueError(f"{source}: the {PARAMS_TREE} tree does not fit the NCSN++ network "
                         f"({len(leaves)} arrays): " + "; ".join(problems))


def flax_leaves(net: NCSNpp) -> dict[str, FlaxLeaf]:
    """Every array of ``net``'s flax tree by path (``params_ema/...``), in the official order."""
    shapes = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    leaves: dict[str, FlaxLeaf] = {}
    for flax_prefix, torch_prefix, module in _flax_modules(net):
        for flax_name, torch_name, layout in _module_arrays(module):
            key = f"{torch_prefix}.{torch_name}"
            leaves[f"{PARAMS_TREE}/{flax_prefix}/{flax_name}"] = FlaxLeaf(key, layout, _FLAX_SHAPE[layout](shapes[key]))
    unmapped = set(shapes) - {leaf.torch_key for leaf in leaves.values()}
    if unmapped or len(leaves) != len(shapes):
        raise RuntimeError(f"cmbench's flax mapping does not cover NCSNpp's tensors {sorted(unmapped)}")
    return leaves


def _flax_modules(net: NCSNpp) -> list[tuple[str, str, nn.Module]]:
    """(flax module path, torch module path, module) for every module with arrays."""
    modules = [
        ("GaussianFourierProjection_0", "fourier", net.fourier),
        ("Dense_0", "emb_linear0", net.emb_linear0),
        ("Dense_1", "emb_linear1", net.emb_linear1),
        ("Conv_0", "conv_in", net.conv_in),
    ]
    for i, block in enumerate(net.res_blocks):
        parts = [("GroupNorm_0", "norm0"), ("Conv_0", "conv0"), ("Dense_0", "emb_proj"), ("GroupNorm_1", "norm1"),
                 ("Conv_1", "conv1")] + ([("Conv_2", "skip")] if block.skip is not None else [])
        modules += [(f"ResnetBlockBigGANpp_{i}/{f}", f"res_blocks.{i}.{t}", getattr(block, t)) for f, t in parts]
    for i, block in enumerate(net.attn_blocks):
        parts = [("GroupNorm_0", "norm"), ("NIN_0", "q"), ("NIN_1", "k"), ("NIN_2", "v"), ("NIN_3", "proj_out")]
        modules += [(f"AttnBlockpp_{i}/{f}", f"attn_blocks.{i}.{t}", getattr(block, t)) for f, t in parts]
    modules += [(f"Downsample_{i}/Conv2d_0", f"pyramid_downsamplers.{i}", down)
                for i, down in enumerate(net.pyramid_downsamplers)]
    modules += [("GroupNorm_0", "norm_out", net.norm_out), ("Conv_1", "conv_out", net.conv_out)]
    return modules


def _module_arrays(module: nn.Module) -> list[tuple[str, str, str]]:
    """(flax array name, torch tensor name, layout) of one layer."""
    if isinstance(module, (nn.Conv2d, FIRDownsampleConv)):
        kernel = "weight" if isinstance(module, FIRDownsampleConv) else "kernel"  # StyleGAN2's Conv2d names
        return [(kernel, "weight", "conv"), ("bias", "bias", "vector")]
    if isinstance(module, nn.Linear):
        return [("kernel", "weight", "matrix"), ("bias", "bias", "vector")]
    if isinstance(module, nn.GroupNorm):
        return [("scale", "weight", "vector"), ("bias", "bias", "vector")]
    if isinstance(module, NIN):
        return [("W", "weight", "matrix"), ("b", "bias", "vector")]
    if isinstance(module, GaussianFourierProjection):
        return [("W", "W", "vector")]
    raise RuntimeError(f"no flax layout for {type(module).__name__}")


def _listed(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
