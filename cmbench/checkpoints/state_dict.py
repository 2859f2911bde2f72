"""Official PyTorch state dicts: openai/consistency_models (EDM teachers, CD, CT) and sony/ctm.

Those releases are bare ``{parameter name: tensor}`` dicts saved with ``torch.save``; the file
does not say which network it holds, so the suite names an architecture preset
(:data:`cmbench.checkpoints.official.OFFICIAL_ARCHS`). The file is read once, hashed, opened
with ``torch.load(weights_only=True)`` (no code runs) and loaded strictly: every key and every
shape must match the preset's network. A preset may strip a key prefix (CTM's CIFAR-10 files
hold the whole preconditioner, so the network's keys start with ``model.``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cmbench.checkpoints.hashing import read_verified
from cmbench.checkpoints.native import _check_state_dict, load_plain_state
from cmbench.checkpoints.official import OfficialArch, official_arch
from cmbench.nets import build_network


@dataclass
class StateDictCheckpoint:
    """A network rebuilt from a preset and an official state dict."""

    net: nn.Module
    preset: OfficialArch
    sha256: str
    path: Path


def load_state_dict_checkpoint(
    path: str | os.PathLike,
    arch: str,
    *,
    device: torch.device | str = "cpu",
    expected_sha256: str | None = None,
) -> StateDictCheckpoint:
    """Load the state dict at ``path`` into a fresh network of preset ``arch``.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for a hash
    mismatch, a file torch refuses to open without unpickling objects, or a state dict that
    does not fit the preset (listing missing / unexpected keys and shape mismatches).
    """
    path = Path(path)
    preset = official_arch(arch)
    data, sha256 = read_verified(path, expected_sha256, "checkpoint")
    state = load_plain_state(io.BytesIO(data), path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of parameter names to tensors (an official state dict), "
                         f"got a {type(state).__name__}")
    # float32 weights whatever the file stores (precision: is autocast's job), prefix stripped
    state = {k.removeprefix(preset.strip_prefix): v.float() if v.is_floating_point() else v for k, v in state.items()}
    # Built on the meta device: no random init of 0.3–0.5 B weights about to be replaced. The
    # presets have no non-persistent buffers, so assigning the strict state dict fills every tensor.
    with torch.device("meta"):
        net = build_network(preset.arch, preset.kwargs)
    _check_state_dict(net, state, path)
    net.load_state_dict(state, strict=True, assign=True)
    return StateDictCheckpoint(net.eval().to(device), preset, sha256, path)
