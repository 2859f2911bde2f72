"""DINOv2's Vision Transformer (Oquab et al. 2023), as torch.hub's ``dinov2_vitl14`` runs it.

EDM2's FD_DINOv2 (Karras et al. 2024, ``calculate_metrics.py``, ``DINOv2Detector``) takes the
output of ``torch.hub.load('facebookresearch/dinov2:main', 'dinov2_vitl14')``: the final
LayerNorm's CLS token (the hub model's head is the identity), 1024 numbers per 224×224 image.
This module is cmbench's own port of that network, loading the official state dict
(``dinov2_vitl14_pretrain.pth``) under its own key names:

- ``patch_embed.proj``: a ``patch_size``-strided convolution, one token per patch;
- ``cls_token`` is prepended and ``pos_embed`` added. ``pos_embed`` holds a 37×37 grid (the
  hub's ``img_size`` 518 over patch 14); a 224×224 input has a 16×16 grid, so the grid is
  resized bicubically as DINOv2 does it (:func:`interpolate_pos_embed`);
- ``blocks.{i}``: pre-norm blocks, ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``,
  with one fused ``qkv`` projection, LayerScale vectors ``gamma`` (the hub builds every
  backbone with ``init_values=1.0``, so they are always there) and an MLP with exact GELU;
- ``norm``: the final LayerNorm; every LayerNorm has eps 1e-6;
- ``mask_token`` is in the file (training masks patches with it) but unused at inference.

The forward returns the normed CLS token (EDM2's feature; dgm-eval's DINOv2 encoder takes the
same hub output) and, as a cmbench variant, the mean of the normed patch tokens. Attention
goes through ``scaled_dot_product_attention``, as the official ``Attention`` does without
xFormers.
Only the plain backbones are covered: no register tokens (``*_reg4`` files), no SwiGLU (ViT-g).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DINOv2Config:
    """The numbers that fix a DINOv2 ViT's layout and its outputs.

    ``img_size`` is the resolution the positional embedding was trained at (its grid is
    ``img_size // patch_size`` on a side); inputs of other sizes get an interpolated grid.
    ``interpolate_offset`` and ``interpolate_antialias`` are the hub's settings for that
    interpolation (0.1 and False for the backbones without registers).
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    img_size: int = 518
    mlp_ratio: float = 4.0
    in_chans: int = 3
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"DINOv2Config: embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"DINOv2Config: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        """Patches per side of the stored positional embedding."""
        return self.img_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


VITL14 = DINOv2Config(embed_dim=1024, depth=24, num_heads=16, patch_size=14, img_size=518, mlp_ratio=4.0)
"""torch.hub ``dinov2_vitl14``: ``vit_large`` (1024 wide, 24 blocks, 16 heads, MLP ×4) with the
hub's img_size 518, patch 14, init_values 1.0, ffn ``mlp``, block_chunks 0, no registers,
interpolate_antialias False, interpolate_offset 0.1."""


def official_layout(config: DINOv2Config) -> dict[str, tuple[int, ...]]:
    """Every key of the official state dict for ``config`` with its shape, in the file's order."""
    d, h, c, p = config.embed_dim, config.mlp_hidden, config.in_chans, config.patch_size
    layout = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, config.grid**2 + 1, d),
        "mask_token": (1, d),
        "patch_embed.proj.weight": (d, c, p, p),
        "patch_embed.proj.bias": (d,),
    }
    block = {
        "norm1.weight": (d,), "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
        "ls1.gamma": (d,),
        "norm2.weight": (d,), "norm2.bias": (d,),
        "mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,),
        "mlp.fc2.weight": (d, h), "mlp.fc2.bias": (d,),
        "ls2.gamma": (d,),
    }  # fmt: skip
    for i in range(config.depth):
        layout.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    layout.update({"norm.weight": (d,), "norm.bias": (d,)})
    return layout


def check_state_dict(state: dict, config: DINOv2Config, source: str) -> None:
    """Refuse (ValueError naming ``source``) a state dict whose keys or shapes differ from the layout."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a dict of parameter names to tensors (DINOv2's state dict), "
                         f"got a {type(state).__name__}")
    layout = official_layout(config)
    problems = [f"missing key {k!r} (expected shape {list(s)})" for k, s in layout.items() if k not in state]
    for key in state:
        if key not in layout:
            registers = key == "register_tokens"
            problems.append(f"unexpected key {key!r}" + (" (a backbone with registers: not supported)" if registers else ""))
        elif tuple(state[key].shape) != layout[key]:
            problems.append(f"key {key!r} has shape {list(state[key].shape)}, expected {list(layout[key])}")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ValueError(f"{source} is not a DINOv2 state dict for {describe(config)}: {shown}")


def describe(config: DINOv2Config) -> str:
    return (f"ViT embed_dim {config.embed_dim}, depth {config.depth}, patch {config.patch_size}, "
            f"pos_embed grid {config.grid}×{config.grid}")


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid_h: int, grid_w: int, *, offset: float, antialias: bool
) -> torch.Tensor:
    """``pos_embed`` ``[1, 1 + M², D]`` for a ``grid_h``×``grid_w`` patch grid, as DINOv2 resizes it.

    The CLS entry is kept; the M×M patch grid is resized bicubically in float32. With a nonzero
    ``offset`` DINOv2 passes a scale factor ``(grid + offset) / M`` rather than the output size
    (a kludge from DINO's issue #8 that the hub keeps for its plain backbones): the output size
    is still ``grid`` but torch samples with that scale, which moves the values. ``offset`` 0
    passes the size. The grid is unchanged when it is already M×M.
    """
    m = math.isqrt(pos_embed.shape[1] - 1)
    if m * m != pos_embed.shape[1] - 1:
        raise ValueError(f"pos_embed has {pos_embed.shape[1] - 1} patch entries, not a square grid")
    if (grid_h, grid_w) == (m, m):
        return pos_embed
    dim = pos_embed.shape[-1]
    cls_entry, patches = pos_embed.float()[:, :1], pos_embed.float()[:, 1:]
    patches = patches.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        how = {"scale_factor": ((grid_h + offset) / m, (grid_w + offset) / m)}
    else:
        how = {"size": (grid_h, grid_w)}
    patches = F.interpolate(patches, mode="bicubic", antialias=antialias, **how)
    if patches.shape[-2:] != (grid_h, grid_w):
        raise ValueError(f"pos_embed interpolation from {m}×{m} gave {tuple(patches.shape[-2:])}, "
                         f"not {(grid_h, grid_w)}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([cls_entry, patches], dim=1).to(pos_embed.dtype)


class PatchEmbed(nn.Module):
    def __init__(self, config: DINOv2Config):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_chans, config.embed_dim, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, tokens, D], row-major over the grid


class Attention(nn.Module):
    def __init__(self, config: DINOv2Config):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √head_dim) v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, config: DINOv2Config):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, nn.GELU's default


class Block(nn.Module):
    def __init__(self, config: DINOv2Config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(config.embed_dim)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)
        self.ls2 = LayerScale(config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2Features(NamedTuple):
    cls: torch.Tensor  # [N, D]: the normed CLS token, the hub model's output (EDM2's feature)
    patch_mean: torch.Tensor  # [N, D]: the mean over the normed patch tokens


class DINOv2ViT(nn.Module):
    """The DINOv2 backbone; takes float NCHW images already normalised with ImageNet's mean and std."""

    def __init__(self, config: DINOv2Config = VITL14):
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid**2 + 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> DINOv2Features:
        p = self.config.patch_size
        if x.ndim != 4 or x.shape[1] != self.config.in_chans or x.shape[2] % p or x.shape[3] % p:
            raise ValueError(f"DINOv2ViT takes [N, {self.config.in_chans}, H, W] images with H and W multiples of "
                             f"{p}, got shape {tuple(x.shape)}")
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        pos = interpolate_pos_embed(self.pos_embed, x.shape[2] // p, x.shape[3] // p,
                                    offset=self.config.interpolate_offset, antialias=self.config.interpolate_antialias)
        tokens = tokens + pos
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return DINOv2Features(cls=tokens[:, 0], patch_mean=tokens[:, 1:].mean(dim=1))


def build_dinov2(state: dict, config: DINOv2Config = VITL14, *, source: str = "state dict") -> DINOv2ViT:
    """A :class:`DINOv2ViT` holding ``state`` (the official key names), checked strictly first.

    The network is built on the meta device and the file's tensors (as float32) are assigned to
    it, so no random initialisation of 0.3 B weights happens only to be overwritten.
    """
    check_state_dict(state, config, source)
    with torch.device("meta"):
        net = DINOv2ViT(config)
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return net.requires_grad_(False).eval()
