"""diffusers ``UNet2DModel`` parameter names -> cmbench ADMUNet parameter names.

The mapping inverts diffusers' ``scripts/convert_consistency_to_diffusers.py``. It is driven by
the ADM net's own state dict: every ADM tensor names the diffusers tensor(s) it is made of, so
the expected diffusers keys are exactly those, each used once; what the file lacks is missing,
what it has besides is unexpected, and each expected shape follows from the ADM shape.

Module correspondence (``n`` / ``m`` count ADM's input / output blocks in order):

    time_embedding.linear_1 / linear_2   time_embed.0 / time_embed.2
    class_embedding                      label_emb
    conv_in                              input_blocks.0.0
    down_blocks.i.resnets.j              input_blocks.n.0     (.attentions.j -> input_blocks.n.1)
    down_blocks.i.downsamplers.0         input_blocks.n.0     (a ResBlock, or Downsample: conv -> op)
    mid_block.resnets.0 / attentions.0 / resnets.1   middle_block.0 / .1 / .2
    up_blocks.u.resnets.j                output_blocks.m.0    (.attentions.j -> output_blocks.m.1)
    up_blocks.u.upsamplers.0             output_blocks.m.1 or .2 (the level's last block)
    conv_norm_out / conv_out             out.0 / out.2

In a ResBlock: norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut are in_layers.0,
in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection. In an attention block:
group_norm is norm; to_q, to_k, to_v (Linear [C, C]) stacked along the output channels are
the 1×1 conv qkv [3C, C, 1, 1], in the order (three, heads, head_dim) that openai's flash-attention
nets use, which is why :class:`ADMUNet` is built with ``qkv_layout="three-heads-dim"``; to_out.0
is proj_out. The names of diffusers' deprecated attention block (query, key, value, proj_attn),
which diffusers itself still renames on load, are accepted for to_q, to_k, to_v, to_out.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cmbench.checkpoints.native import _first

RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
          "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
ATTENTION = {"norm": "group_norm", "qkv": ("to_q", "to_k", "to_v"), "proj_out": "to_out.0"}
DOWNSAMPLE = {"op": "conv"}
UPSAMPLE = {"conv": "conv"}
WHOLE = {"": ""}
LINEAR = ("to_q", "to_k", "to_v", "to_out.0")  # Linear in diffusers, 1×1 conv in ADM
DEPRECATED = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def module_table(kwargs: dict[str, Any]) -> dict[str, tuple[str, dict]]:
    """ADM module prefix -> (diffusers module prefix, names of its submodules) for the ADMUNet
    that ``kwargs`` build (walked in the order ADMUNet builds its blocks)."""
    levels = len(kwargs["channel_mult"])
    blocks = kwargs["num_res_blocks"]
    size = kwargs["image_size"]
    attends = [size // 2**level in kwargs["attention_resolutions"] for level in range(levels)]
    down, up = (RESNET, RESNET) if kwargs["resblock_updown"] else (DOWNSAMPLE, UPSAMPLE)
    table = {
        "time_embed.0": ("time_embedding.linear_1", WHOLE), "time_embed.2": ("time_embedding.linear_2", WHOLE),
        "label_emb": ("class_embedding", WHOLE), "input_blocks.0.0": ("conv_in", WHOLE),
        "middle_block.0": ("mid_block.resnets.0", RESNET), "middle_block.1": ("mid_block.attentions.0", ATTENTION),
        "middle_block.2": ("mid_block.resnets.1", RESNET),
        "out.0": ("conv_norm_out", WHOLE), "out.2": ("conv_out", WHOLE),
    }
    n = 1
    for level in range(levels):
        for j in range(blocks):
            table[f"input_blocks.{n}.0"] = (f"down_blocks.{level}.resnets.{j}", RESNET)
            if attends[level]:
                table[f"input_blocks.{n}.1"] = (f"down_blocks.{level}.attentions.{j}", ATTENTION)
            n += 1
        if level < levels - 1:
            table[f"input_blocks.{n}.0"] = (f"down_blocks.{level}.downsamplers.0", down)
            n += 1
    m = 0
    for u, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            table[f"output_blocks.{m}.0"] = (f"up_blocks.{u}.resnets.{j}", RESNET)
            if attends[level]:
                table[f"output_blocks.{m}.1"] = (f"up_blocks.{u}.attentions.{j}", ATTENTION)
            if level > 0 and j == blocks:
                table[f"output_blocks.{m}.{2 if attends[level] else 1}"] = (f"up_blocks.{u}.upsamplers.0", up)
            m += 1
    return table


def adm_state_dict(tensors: dict[str, torch.Tensor], net: nn.Module, kwargs: dict[str, Any],
                   path: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``net`` (an ADMUNet built from ``kwargs``) made of the diffusers
    ``tensors`` read from ``path``, as float32. Raises ValueError listing the missing and
    unexpected diffusers keys and the shape mismatches, and naming any non-float tensor."""
    table, own = module_table(kwargs), net.state_dict()
    state, used, missing, shapes = {}, set(), [], []
    for adm_key, target in own.items():
        sources = _sources(adm_key, table)
        found = [_present(name, tensors) for name in sources]
        missing += [name for name, key in zip(sources, found) if key is None]
        used.update(key for key in found if key is not None)
        if None in found:
            continue
        parts = [tensors[key] for key in found]
        wanted = _source_shape(target.shape, sources)
        shapes += [f"{key}: file {list(t.shape)} vs {list(wanted)}" for key, t in zip(found, parts) if t.shape != wanted]
        state[adm_key] = parts
    unexpected = [key for key in tensors if key not in used]
    if missing or unexpected or shapes:
        problems = [f"{what} ({len(items)}): {_first(items)}" for what, items in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
        raise ValueError(f"{path}: the weights do not fit the UNet2DModel its config.json describes; " + "; ".join(problems))
    not_float = [key for key in used if not tensors[key].is_floating_point()]
    if not_float:
        raise ValueError(f"{path}: expected floating-point weights; not floating-point: {_first(sorted(not_float))}")
    return {key: _join(parts).reshape(own[key].shape) for key, parts in state.items()}


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts stacked along dim 0 in float32 (a lone float32 part is returned as it is)."""
    return parts[0].float() if len(parts) == 1 else torch.cat([p.float() for p in parts])


def _sources(adm_key: str, table: dict[str, tuple[str, dict]]) -> list[str]:
    """The diffusers key(s) whose tensors make up ADM's ``adm_key``."""
    parts = adm_key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in table:
            target, names = table[prefix]
            module, param = ".".join(parts[cut:-1]), parts[-1]
            break
    else:
        raise RuntimeError(f"cmbench bug: the ADM key {adm_key!r} has no diffusers counterpart")
    mapped = names[module]
    leaves = mapped if isinstance(mapped, tuple) else (mapped,)
    return [".".join(p for p in (target, leaf, param) if p) for leaf in leaves]


def _present(name: str, tensors: dict[str, torch.Tensor]) -> str | None:
    """``name`` if the file has it, else its deprecated spelling if the file has that, else None."""
    if name in tensors:
        return name
    for new, old in DEPRECATED.items():
        if f".{new}." in name:
            alias = name.replace(f".{new}.", f".{old}.")
            return alias if alias in tensors else None
    return None


def _source_shape(shape: torch.Size, sources: list[str]) -> torch.Size:
    """The shape of each diffusers tensor stacked into an ADM tensor of ``shape``: the output
    channels shared among ``sources``, a 1×1 conv kernel a Linear weight."""
    dims = [shape[0] // len(sources), *shape[1:]]
    if any(f".{leaf}." in sources[0] for leaf in LINEAR) and len(dims) == 4:
        dims = dims[:2]
    return torch.Size(dims)
