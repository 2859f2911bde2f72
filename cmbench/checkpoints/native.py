"""cmbench's own checkpoint format (the toy zoo and anything cmbench trains).

A native checkpoint is a plain dict written by ``torch.save``::

    {"format": "cmbench-native-v1", "arch": str, "arch_kwargs": dict, "family": str,
     "model_options": dict, "meta": dict, "state_dict": {name: tensor}}

holding only tensors, str, int, float, bool, None and lists / tuples / dicts of those, so it
loads with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects and so
never runs code from the file. The network is rebuilt from ``arch`` and ``arch_kwargs`` through
:func:`cmbench.nets.build_network`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cmbench.atomic import atomic_write
from cmbench.checkpoints.hashing import read_verified, sha256_file
from cmbench.nets import build_network

FORMAT = "cmbench-native-v1"
KEYS = ("format", "arch", "arch_kwargs", "family", "model_options", "meta", "state_dict")
_PLAIN = (str, int, float, bool, type(None))
_SHOWN = 5  # how many offending keys an error message lists


@dataclass
class NativeCheckpoint:
    """A loaded native checkpoint: the network (in eval mode) and what the file said about it."""

    net: nn.Module
    arch: str
    arch_kwargs: dict
    family: str
    model_options: dict
    meta: dict
    sha256: str
    path: Path


def save_native(
    path: str | os.PathLike,
    net: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict,
    family: str,
    model_options: dict,
    meta: dict | None = None,
    overwrite: bool = False,
    storage_dtype: torch.dtype = torch.float32,
) -> str:
    """Write ``net`` as a native checkpoint at ``path`` atomically; return the file's sha256.

    Floating-point tensors are stored as ``storage_dtype`` (float16 halves a shipped file; the
    loader casts back to the network's dtype, so the evaluated weights are the stored ones).

    Refuses (FileExistsError) to replace an existing file unless ``overwrite``. Raises
    ValueError if a field holds something other than plain data.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "family": family,
        "model_options": model_options,
        "meta": {} if meta is None else meta,
        "state_dict": {
            k: v.detach().cpu().to(storage_dtype) if v.is_floating_point() else v.detach().cpu()
            for k, v in net.state_dict().items()
        },
    }
    for key in ("arch", "family"):
        if not isinstance(payload[key], str):
            raise ValueError(f"save_native({path}): {key} must be a str, got {type(payload[key]).__name__}")
    for key in ("arch_kwargs", "model_options", "meta"):
        if not isinstance(payload[key], dict):
            raise ValueError(f"save_native({path}): {key} must be a dict, got {type(payload[key]).__name__}")
        _check_plain(payload[key], f"{key}", path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    atomic_write(path, lambda f: torch.save(payload, f), overwrite=overwrite)
    return sha256_file(path)


def load_native(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    expected_sha256: str | None = None,
) -> NativeCheckpoint:
    """Load a native checkpoint without unpickling arbitrary objects; rebuild and check its net.

    Raises FileNotFoundError if ``path`` is missing and ValueError (naming the file) if it is
    not a native checkpoint, its state dict does not fit its architecture, or its hash differs
    from ``expected_sha256``. The file is read once, so the hash is that of the bytes loaded.
    """
    path = Path(path)
    data, sha256 = read_verified(path, expected_sha256, "native checkpoint")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a cmbench native checkpoint: torch.load(weights_only=True) refused it "
            f"(it is corrupt or contains non-tensor objects, which cmbench never unpickles): "
            f"{_reason(err)}"
        ) from err
    _check_payload(payload, path)

    try:
        net = build_network(payload["arch"], payload["arch_kwargs"])
    except ValueError as err:
        raise ValueError(f"{path}: cannot build its network: {err}") from err
    _check_state_dict(net, payload["state_dict"], path)
    net.load_state_dict(payload["state_dict"], strict=True)
    net.eval().to(device)
    return NativeCheckpoint(
        net=net,
        arch=payload["arch"],
        arch_kwargs=payload["arch_kwargs"],
        family=payload["family"],
        model_options=payload["model_options"],
        meta=payload["meta"],
        sha256=sha256,
        path=path,
    )


def _check_plain(value, where: str, path: Path) -> None:
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):  # exact types: subclasses may not load
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", path)
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) not in _PLAIN:
                raise ValueError(f"save_native({path}): {where} has a non-plain key {key!r}")
            _check_plain(item, f"{where}[{key!r}]", path)
        return
    raise ValueError(
        f"save_native({path}): {where} holds a {type(value).__name__}; accepted: tensors, str, "
        "int, float, bool, None and lists / tuples / dicts of those"
    )


def _check_payload(payload, path: Path) -> None:
    if not isinstance(payload, dict):
        raise ValueError(f"{path} is not a cmbench native checkpoint: top level is a {type(payload).__name__}, not a dict")
    found = payload.get("format", "<no 'format' key>")
    if found != FORMAT:
        raise ValueError(f"{path}: checkpoint format is {found!r}; accepted: {FORMAT!r}")
    missing = [k for k in KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: native checkpoint lacks key(s) {', '.join(missing)}; expected {', '.join(KEYS)}")
    expected_types = {"arch": str, "family": str, "arch_kwargs": dict, "model_options": dict,
                      "meta": dict, "state_dict": dict}
    for key, kind in expected_types.items():
        if not isinstance(payload[key], kind):
            raise ValueError(f"{path}: {key!r} must be a {kind.__name__}, got {type(payload[key]).__name__}")
    not_tensors = [k for k, v in payload["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {_first(not_tensors)}")


def _check_state_dict(net: nn.Module, state_dict: dict, path: Path) -> None:
    """Raise ValueError listing missing / unexpected keys and shape mismatches, if any."""
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs net {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_first(shapes)}")
        raise ValueError(f"{path}: state_dict does not fit its architecture; " + "; ".join(parts))


def load_plain_state(source, path, *, mmap: bool = False):
    """``torch.load(source, weights_only=True)`` onto the CPU (no code from the file runs); a file
    torch refuses is a ValueError naming ``path`` with the reason."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise ValueError(
            f"{path} is not a plain state dict: torch.load(weights_only=True) refused it: {_reason(err)}"
        ) from err


def _reason(err: Exception) -> str:
    """The informative line of torch.load's refusal (it also suggests unsafe loading; drop that)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = " ".join(text.split(marker, 1)[1].split())
        detail = detail.split(" Please use ")[0].split(" Check the documentation")[0]
        return f"{marker} {detail}"
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and "weights_only" not in line and "can still be loaded" not in line]  # torch's advice to unpickle
    return lines[0] if lines else type(err).__name__


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")
