"""The building blocks of ADM's UNet (openai/guided-diffusion, as openai/consistency_models and
sony/ctm use it): residual blocks with a time embedding (and CTM's s embedding), attention
through ``scaled_dot_product_attention``, up/down sampling, and a float32 GroupNorm.

Module and parameter names are the official ones, so the released state dicts load strictly
into :class:`cmbench.nets.adm_unet.ADMUNet`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

QKV_LAYOUTS = ("three-heads-dim", "heads-three-dim")
RESAMPLES = ("none", "up", "down")


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, evaluated in float32 and returned in the input's dtype."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def qkv_attention(qkv: torch.Tensor, num_heads: int, layout: str = QKV_LAYOUTS[0]) -> torch.Tensor:
    """Multi-head self-attention over the positions of a packed ``qkv`` map.

    ``qkv`` has shape ``[B, 3C, H, W]`` with its channels ordered as ``layout`` says; the result
    is ``[B, C, H, W]`` with channels ordered ``(heads, head_dim)``. softmax(q·kᵀ/√d)·v through
    :func:`torch.nn.functional.scaled_dot_product_attention`.
    """
    batch, packed, height, width = qkv.shape
    if packed % (3 * num_heads):
        raise ValueError(f"qkv_attention: {packed} qkv channels do not split into 3 × {num_heads} heads")
    head_dim = packed // (3 * num_heads)
    tokens = qkv.reshape(batch, packed, height * width)
    if layout == "three-heads-dim":
        q, k, v = tokens.reshape(batch, 3, num_heads, head_dim, -1).unbind(1)
    elif layout == "heads-three-dim":
        q, k, v = tokens.reshape(batch, num_heads, 3, head_dim, -1).unbind(2)
    else:
        raise ValueError(f"qkv_attention: unknown qkv layout {layout!r}; accepted: {', '.join(QKV_LAYOUTS)}")
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return out.transpose(-1, -2).reshape(batch, num_heads * head_dim, height, width)


def zeroed(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def _resample(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Nearest ×2 upsampling, 2×2 average pooling, or nothing (ADM's parameter-free resamplers)."""
    if direction == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if direction == "down":
        return F.avg_pool2d(x, kernel_size=2, stride=2)
    return x


def embedding_mlp(in_dim: int, emb_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))


class ResBlock(nn.Module):
    """ADM residual block: norm → SiLU → [resample] → conv, conditioned on the embedding, then
    norm → SiLU → dropout → conv, plus a skip (1×1 conv where the channel count changes).

    The conditioning is ``emb_layers(emb)`` (+ ``emb_layers_s(emb_s)`` for CTM); with
    ``use_scale_shift_norm`` it is split into (scale, shift) applied as ``norm(h)·(1+scale)+shift``,
    otherwise added to ``h`` before the norm. ``resample`` ("up"/"down") makes this an
    up/downsampling block, resampling both the residual branch and the skip.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        resample: str = "none",
        s_embedding: bool = False,
    ):
        super().__init__()
        if resample not in RESAMPLES:
            raise ValueError(f"ResBlock: unknown resample {resample!r}; accepted: {', '.join(RESAMPLES)}")
        self.resample = resample
        self.use_scale_shift_norm = use_scale_shift_norm
        cond_channels = 2 * out_channels if use_scale_shift_norm else out_channels
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, cond_channels))
        if s_embedding:
            self.emb_layers_s = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, cond_channels))
        else:
            self.emb_layers_s = None
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, emb_s: torch.Tensor | None = None) -> torch.Tensor:
        norm_in, act_in, conv_in = self.in_layers
        h = conv_in(_resample(act_in(norm_in(x)), self.resample))
        x = _resample(x, self.resample)
        h = self._condition(h, self._conditioning(emb, emb_s).to(h.dtype)[:, :, None, None])
        _, act_out, dropout, conv_out = self.out_layers
        return self.skip_connection(x) + conv_out(dropout(act_out(h)))

    def _conditioning(self, emb: torch.Tensor, emb_s: torch.Tensor | None) -> torch.Tensor:
        cond = self.emb_layers(emb)
        if self.emb_layers_s is not None:
            if emb_s is None:
                raise ValueError("ResBlock has an s projection (CTM) but no s embedding was given")
            cond = cond + self.emb_layers_s(emb_s)
        return cond

    def _condition(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The normalised ``h`` under the conditioning (FiLM scale/shift or an additive bias)."""
        norm_out = self.out_layers[0]
        if self.use_scale_shift_norm:
            scale, shift = cond.chunk(2, dim=1)
            return norm_out(h) * (1 + scale) + shift
        return norm_out(h + cond)


class AttentionBlock(nn.Module):
    """Residual self-attention: ``x + proj_out(attention(qkv(norm(x))))``."""

    def __init__(self, channels: int, num_heads: int, qkv_layout: str):
        super().__init__()
        self.num_heads = num_heads
        self.qkv_layout = qkv_layout
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = zeroed(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.qkv_layout)
        return x + self.proj_out(h)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, qkv_layout={self.qkv_layout!r}"


class Downsample(nn.Module):
    """Stride-2 3×3 conv (ADM's downsampler when ``resblock_updown`` is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv (ADM's upsampler when ``resblock_updown`` is off)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_resample(x, "up"))


class EmbedSequential(nn.Sequential):
    """Layers run in order; the ResBlocks among them also get the embeddings."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, emb_s: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, emb_s) if isinstance(layer, ResBlock) else layer(x)
        return x
