"""A diffusers ``UNet2DModel`` ``config.json`` as the arguments of cmbench's ADMUNet.

The diffusers copies of openai's consistency models (``openai/diffusers-cd_imagenet64_l2`` and
the rest) are ADM U-Nets written in diffusers' vocabulary; diffusers' conversion script
(``scripts/convert_consistency_to_diffusers.py``) maps one onto the other. Here the config is read
back: ``block_out_channels`` gives ``model_channels`` (its first entry) and ``channel_mult``,
``layers_per_block`` ``num_res_blocks``, the ``Attn*`` down blocks (mirrored by the up blocks)
``attention_resolutions``, ``attention_head_dim`` the head width (``num_head_channels``),
``resnet_time_scale_shift: scale_shift`` ``use_scale_shift_norm``, ResNet up/down samplers
(``Resnet*sampleBlock2D``, ``downsample_type`` / ``upsample_type: resnet``) ``resblock_updown``
and ``num_class_embeds`` ``num_classes``. Every other setting must have the one value the ADM
net has; a config the port cannot represent is refused naming the key and its value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLASS_NAME = "UNet2DModel"

# UNet2DModel's constructor defaults (diffusers models/unets/unet_2d.py): what diffusers uses
# for a key the config leaves out.
DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}
# Settings the ADM net has exactly one value for.
FIXED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 0, "flip_sin_to_cos": True,
    "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32,
    "norm_eps": 1e-5, "add_attention": True, "class_embed_type": None,
}
# Block type -> (attends, its resampler; None: the config's downsample_type / upsample_type).
# The Attn*sampleBlock2D names are those of diffusers' original conversion script.
DOWN_BLOCKS = {"DownBlock2D": (False, "conv"), "ResnetDownsampleBlock2D": (False, "resnet"),
               "AttnDownBlock2D": (True, None), "AttnDownsampleBlock2D": (True, "resnet")}
UP_BLOCKS = {"UpBlock2D": (False, "conv"), "ResnetUpsampleBlock2D": (False, "resnet"),
             "AttnUpBlock2D": (True, None), "AttnUpsampleBlock2D": (True, "resnet")}
RESAMPLERS = ("conv", "resnet")
TIME_SCALE_SHIFTS = {"default": False, "scale_shift": True}


def read_config(data: bytes | bytearray, path: Path) -> dict[str, Any]:
    """The JSON object in ``data`` (the bytes of ``path``), with ``_class_name`` checked."""
    try:
        config = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a UTF-8 JSON file ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(config).__name__}")
    found = config.get("_class_name", "<missing>")
    if found != CLASS_NAME:
        raise ValueError(f"{path}: _class_name is {found!r}; cmbench reads diffusers {CLASS_NAME} folders only")
    return config


def adm_arguments(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """ADMUNet's constructor arguments for the ``UNet2DModel`` that ``config`` describes."""
    unknown = sorted(k for k in config if not k.startswith("_") and k not in DEFAULTS)
    if unknown:
        raise ValueError(f"{path}: unknown UNet2DModel setting(s) {', '.join(map(repr, unknown))}; cmbench reads "
                         f"{', '.join(DEFAULTS)} (and keys starting with '_')")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    for key, value in FIXED.items():
        if not _same(cfg[key], value):
            raise _refuse(path, key, cfg[key], f"the ADM net has {json.dumps(value)}")
    widths = _widths(cfg, path)
    image_size = _image_size(cfg, path, len(widths))
    attends, resblock_updown = _blocks(cfg, path, len(widths))
    head_dim = _head_dim(cfg, path, [w for w, a in zip(widths, attends) if a] + [widths[-1]])
    channels = {key: _positive_int(cfg, key, path) for key in ("in_channels", "out_channels", "layers_per_block")}
    if channels["out_channels"] != channels["in_channels"]:
        raise _refuse(path, "out_channels", cfg["out_channels"], f"the net must output an image like its input "
                                                                    f"(in_channels {cfg['in_channels']})")
    if cfg["time_embedding_dim"] not in (None, 4 * widths[0]):
        raise _refuse(path, "time_embedding_dim", cfg["time_embedding_dim"], f"ADM's is 4·block_out_channels[0] = {4 * widths[0]}")
    if cfg["attn_norm_num_groups"] not in (None, 32):
        raise _refuse(path, "attn_norm_num_groups", cfg["attn_norm_num_groups"], "ADM's attention norm has 32 groups")
    if cfg["resnet_time_scale_shift"] not in TIME_SCALE_SHIFTS:
        raise _refuse(path, "resnet_time_scale_shift", cfg["resnet_time_scale_shift"], f"accepted: {', '.join(TIME_SCALE_SHIFTS)}")
    classes = cfg["num_class_embeds"]
    if classes is not None and not (type(classes) is int and classes >= 1):
        raise _refuse(path, "num_class_embeds", classes, "expected a positive int or null")
    dropout = cfg["dropout"]
    if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise _refuse(path, "dropout", dropout, "expected a number in [0, 1)")
    return dict(
        image_size=image_size, in_channels=channels["in_channels"], model_channels=widths[0],
        out_channels=channels["out_channels"], num_res_blocks=channels["layers_per_block"],
        attention_resolutions=tuple(image_size // 2**level for level, a in enumerate(attends) if a),
        dropout=float(dropout), channel_mult=tuple(w // widths[0] for w in widths),
        num_classes=classes, num_heads=1, num_head_channels=-1 if head_dim is None else head_dim,
        num_heads_upsample=-1, use_scale_shift_norm=TIME_SCALE_SHIFTS[cfg["resnet_time_scale_shift"]],
        resblock_updown=resblock_updown, s_embedding=False, qkv_layout="three-heads-dim",
    )


def _widths(cfg: dict, path: Path) -> list[int]:
    widths = cfg["block_out_channels"]
    if not isinstance(widths, list) or not widths or not all(type(w) is int and w >= 32 and w % 32 == 0 for w in widths):
        raise _refuse(path, "block_out_channels", widths, "expected a non-empty list of positive multiples of 32 "
                                                          "(ADM's GroupNorm has 32 groups)")
    if any(w % widths[0] for w in widths):
        raise _refuse(path, "block_out_channels", widths, "each width must be a multiple of the first "
                                                          "(ADM's channel_mult times model_channels)")
    return widths


def _image_size(cfg: dict, path: Path, levels: int) -> int:
    size = cfg["sample_size"]
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if type(size) is not int or size < 1 or size % 2 ** (levels - 1):
        raise _refuse(path, "sample_size", cfg["sample_size"], f"expected a square size (an int) divisible by "
                                                               f"2**(levels - 1) = {2 ** (levels - 1)}")
    return size


def _blocks(cfg: dict, path: Path, levels: int) -> tuple[list[bool], bool]:
    """(whether each level attends, whether the resamplers are ResNet blocks)."""
    downs, ups = cfg["down_block_types"], cfg["up_block_types"]
    for key, blocks, known in (("down_block_types", downs, DOWN_BLOCKS), ("up_block_types", ups, UP_BLOCKS)):
        if not isinstance(blocks, list) or len(blocks) != levels:
            raise _refuse(path, key, blocks, f"expected a list of {levels} block types (one per block_out_channels entry)")
        for i, block in enumerate(blocks):
            if block not in known:
                raise _refuse(path, f"{key}[{i}]", block, f"accepted: {', '.join(known)}")
    attends = [DOWN_BLOCKS[b][0] for b in downs]
    for i, block in enumerate(ups):
        if UP_BLOCKS[block][0] != attends[levels - 1 - i]:
            raise _refuse(path, f"up_block_types[{i}]", block, f"the ADM net attends on the way up where it does on the "
                                                               f"way down: down_block_types[{levels - 1 - i}] is "
                                                               f"{downs[levels - 1 - i]!r}")
    kinds = {}
    for i, block in enumerate(downs[:-1]):
        kinds[f"down_block_types[{i}]"] = DOWN_BLOCKS[block][1] or _resampler(cfg, "downsample_type", path)
    for i, block in enumerate(ups[:-1]):
        kinds[f"up_block_types[{i}]"] = UP_BLOCKS[block][1] or _resampler(cfg, "upsample_type", path)
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{where} {kind}" for where, kind in kinds.items())
        raise ValueError(f"{path}: the ADM net resamples everywhere with ResNet blocks or everywhere with convolutions; "
                         f"this config mixes them: {listed}")
    if "conv" in kinds.values() and cfg["downsample_padding"] != 1:
        raise _refuse(path, "downsample_padding", cfg["downsample_padding"], "ADM's strided convolution pads by 1")
    return attends, "resnet" in kinds.values()


def _resampler(cfg: dict, key: str, path: Path) -> str:
    value = cfg[key] or "conv"  # diffusers' Attn blocks fall back to "conv"
    if value not in RESAMPLERS:
        raise _refuse(path, key, cfg[key], f"accepted: {', '.join(RESAMPLERS)}")
    return value


def _head_dim(cfg: dict, path: Path, attended_widths: list[int]) -> int | None:
    """The head width, or None for one head per attention block (diffusers' null)."""
    head_dim = cfg["attention_head_dim"]
    if head_dim is None:
        return None
    if type(head_dim) is not int or head_dim < 1:
        raise _refuse(path, "attention_head_dim", head_dim, "expected a positive int or null")
    uneven = sorted({w for w in attended_widths if w % head_dim})
    if uneven:
        raise _refuse(path, "attention_head_dim", head_dim, f"the attended widths {uneven} do not split into heads "
                                                            f"of that size")
    return head_dim


def _positive_int(cfg: dict, key: str, path: Path) -> int:
    if type(cfg[key]) is not int or cfg[key] < 1:
        raise _refuse(path, key, cfg[key], "expected a positive int")
    return cfg[key]


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, (bool, str, type(None))):
        return type(value) is type(expected) and value == expected
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected


def _refuse(path: Path, key: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"{path}: {key} is {json.dumps(value)}, which cmbench's ADM port cannot represent; {accepted}")
