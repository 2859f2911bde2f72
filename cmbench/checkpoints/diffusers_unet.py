"""diffusers ``UNet2DModel`` folders (``save_pretrained``) as cmbench ADM nets, without diffusers.

Hugging Face hosts openai's consistency models as diffusers pipelines
(``openai/diffusers-cd_imagenet64_l2``, ``-cd_imagenet64_lpips``, ``-ct_imagenet64`` and the
``bedroom256`` / ``cat256`` ones): ``unet/config.json`` plus
``unet/diffusion_pytorch_model.safetensors`` (or ``.bin``). The loader reads the config
(:mod:`~cmbench.checkpoints.diffusers_config`), builds cmbench's :class:`ADMUNet`, reads the
weights with cmbench's own safetensors reader or ``torch.load(weights_only=True)`` (nothing in
the folder is executed; diffusers is never imported) and renames them strictly
(:mod:`~cmbench.checkpoints.diffusers_keys`).

The net takes openai's time input: diffusers' ``CMStochasticIterativeScheduler`` gives the UNet
``1000 · 0.25 · ln σ`` and the input scaled by 1/√(σ² + σ_data²), which is cmbench's
``time_input: log_sigma`` with ``noise_label_scale: 1000`` and the adapters' c_in.

The recorded sha256 is that of the folder as :func:`cmbench.checkpoints.hashing.sha256_path`
defines it: ``folder_digest`` over ``[["config.json", sha256 of its bytes], [weights file
name, sha256 of its bytes]]``, so it covers exactly the bytes read and does not depend on
whether the pipeline folder or its ``unet`` folder is named.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cmbench.checkpoints.diffusers_config import adm_arguments, read_config
from cmbench.checkpoints.diffusers_files import locate_diffusers_unet
from cmbench.checkpoints.diffusers_keys import adm_state_dict
from cmbench.checkpoints.hashing import folder_digest, read_hashed
from cmbench.checkpoints.native import _reason
from cmbench.checkpoints.safetensors_file import read_safetensors
from cmbench.nets import build_network

OPENAI_TIME = {"time_input": "log_sigma", "noise_label_scale": 1000.0}  # 250·ln σ


@dataclass
class DiffusersUNet:
    """An ADM net rebuilt from a diffusers folder, its model options and the folder's digest."""

    net: nn.Module
    model_options: dict[str, Any]
    sha256: str
    folder: Path


def load_diffusers_unet(
    folder: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    expected_sha256: str | None = None,
) -> DiffusersUNet:
    """Load the ``UNet2DModel`` in ``folder`` (a pipeline folder or its ``unet`` folder) into an
    :class:`~cmbench.nets.adm_unet.ADMUNet` in eval mode with float32 weights.

    Raises FileNotFoundError for a missing folder or file, and ValueError naming the file (and
    key) for a config the ADM port cannot represent, weights that are malformed or do not fit,
    or a digest other than ``expected_sha256`` (naming the folder).
    """
    files = locate_diffusers_unet(Path(folder))
    config_bytes, config_sha256 = read_hashed(files.config, "diffusers config")
    weights, weights_sha256 = read_hashed(files.weights, "diffusers weights")
    sha256 = folder_digest([(files.config.name, config_sha256), (files.weights.name, weights_sha256)])
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ValueError(f"{folder}: sha256 mismatch: expected {expected_sha256}, the folder's digest "
                         f"({files.config.name} + {files.weights.name}) is {sha256}")
    kwargs = adm_arguments(read_config(config_bytes, files.config), files.config)
    tensors = _read_weights(weights, files.weights)
    # Built on the meta device (no random init of weights about to be replaced); ADMUNet has no
    # non-persistent buffers, so assigning the full state dict fills every tensor.
    try:
        with torch.device("meta"):
            net = build_network("adm_unet", kwargs)
    except ValueError as err:
        raise ValueError(f"{files.config}: describes a net the ADM port cannot build: {err}") from err
    net.load_state_dict(adm_state_dict(tensors, net, kwargs, files.weights), strict=True, assign=True)
    options = {"image_shape": [kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"]],
               "label_dim": kwargs["num_classes"] or 0, **OPENAI_TIME}
    return DiffusersUNet(net.eval().to(device), options, sha256, files.folder)


def _read_weights(data: bytearray, path: Path) -> dict[str, torch.Tensor]:
    """{name: tensor} from a ``.safetensors`` file or a ``.bin`` state dict (no unpickling of objects)."""
    if path.suffix == ".safetensors":
        return read_safetensors(data, path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a plain state dict: torch.load(weights_only=True) refused it: {_reason(err)}") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected a dict of parameter names to tensors, got a {type(state).__name__}")
    return state
