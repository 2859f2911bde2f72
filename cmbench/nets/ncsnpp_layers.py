"""Layers of score_sde's NCSN++ (Song et al. 2021) as the Consistency Models paper's CIFAR-10 nets use them.

openai/consistency_models_cifar10 (JAX/flax, NHWC) trains score_sde's ``ncsnpp`` with BigGAN
residual blocks, FIR resampling with the kernel [1, 3, 3, 1] (StyleGAN2's ``upfirdn_2d``),
skip connections rescaled by 1/√2, DDPM-style self-attention over 1x1 "NIN" projections and a
Gaussian Fourier embedding of the time input. These are those layers in NCHW; the numbers that
change outputs follow the official code: GroupNorm with min(C/4, 32) groups and ε = 1e-6
(flax's default), swish = SiLU, the FIR kernel normalised to sum 1 (×4 when upsampling), the
Fourier features ordered [sin, cos] of 2π·t·W. Parameter names are torch's; the flax names they
come from are :mod:`cmbench.checkpoints.flax_ncsnpp`'s business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

GROUPNORM_EPS = 1e-6  # flax.linen.GroupNorm's default, which the official nets use
SKIP_DIVISOR = math.sqrt(2.0)  # skip_rescale: sums of two branches are divided by √2


def ncsnpp_group_norm(channels: int) -> nn.GroupNorm:
    """score_sde's ``GroupNorm(num_groups=min(C // 4, 32))``."""
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=GROUPNORM_EPS)


def fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The separable 2-D FIR kernel outer(taps, taps), normalised to sum ``gain``, float32."""
    taps_1d = torch.tensor(list(taps), dtype=torch.float32)
    kernel = torch.outer(taps_1d, taps_1d)
    return kernel / kernel.sum() * gain


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], stride: int = 1) -> torch.Tensor:
    """Pad H and W by ``pad`` (before, after), convolve every channel with ``kernel`` (a true
    convolution, as ``upfirdn_2d``: the kernel is flipped for torch's cross-correlation) and keep
    every ``stride``-th pixel."""
    channels = x.shape[1]
    weight = kernel.flip(0, 1).to(dtype=x.dtype, device=x.device)[None, None].expand(channels, 1, *kernel.shape)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, weight, stride=stride, groups=channels)


def fir_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's ``downsample_2d`` by 2 with a 4-tap kernel: pad (1, 1), filter, stride 2."""
    return fir_filter(x, kernel, (1, 1), stride=2)


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's ``upsample_2d`` by 2 with a 4-tap kernel: a zero after every pixel in H and W,
    pad (2, 1), filter with the kernel times 4 (the gain that keeps a constant image constant)."""
    batch, channels, height, width = x.shape
    spread = x.new_zeros(batch, channels, height, 2, width, 2)
    spread[:, :, :, 0, :, 0] = x
    return fir_filter(spread.reshape(batch, channels, 2 * height, 2 * width), kernel * 4, (2, 1))


class FIRDownsampleConv(nn.Module):
    """StyleGAN2's fused ``conv_downsample_2d`` with bias: pad (2, 2), FIR filter, then a 3x3
    convolution with stride 2 and no padding. NCSN++ uses it for the residual input pyramid."""

    def __init__(self, in_channels: int, out_channels: int, taps: Sequence[float]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("kernel", fir_kernel(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(fir_filter(x, self.kernel, (2, 2)), self.weight, self.bias, stride=2)


class NIN(nn.Module):
    """score_sde's "network in network" layer: a linear map over channels at every pixel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,oc->bohw", x, self.weight) + self.bias[:, None, None]


class GaussianFourierProjection(nn.Module):
    """[sin(2π·t·W), cos(2π·t·W)] for a time input t of shape [B]; W (``embedding_size``
    frequencies drawn from N(0, scale²) in training) is part of the checkpoint, a buffer here."""

    def __init__(self, embedding_size: int, scale: float = 16.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("W", torch.randn(embedding_size, generator=generator) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResnetBlockBigGAN(nn.Module):
    """score_sde's ``ResnetBlockBigGANpp`` (with ``skip_rescale``): GroupNorm, swish, optional FIR
    up/down sampling of both branches, 3x3 conv, plus a projection of swish(time embedding),
    GroupNorm, swish, 3x3 conv; a 1x1 conv on the skip branch when the channels or the size
    change; the sum times 1/√2. Dropout sits before the second conv in training only."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, taps: Sequence[float],
                 up: bool = False, down: bool = False):
        super().__init__()
        self.up, self.down = up, down
        self.norm0 = ncsnpp_group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels)
        self.norm1 = ncsnpp_group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        needs_skip = in_channels != out_channels or up or down
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if needs_skip else None
        self.register_buffer("kernel", fir_kernel(taps), persistent=False)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm0(x))
        if self.up:
            h, x = fir_upsample(h, self.kernel), fir_upsample(x, self.kernel)
        elif self.down:
            h, x = fir_downsample(h, self.kernel), fir_downsample(x, self.kernel)
        h = self.conv0(h) + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv1(F.silu(self.norm1(h)))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / SKIP_DIVISOR


class AttentionBlock(nn.Module):
    """score_sde's ``AttnBlockpp`` (``attention_type ddpm``, ``skip_rescale``): one head over all
    H·W positions, queries, keys, values and output by NIN layers, weights softmax(q·k/√C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = ncsnpp_group_norm(channels)
        self.q = NIN(channels, channels)
        self.k = NIN(channels, channels)
        self.v = NIN(channels, channels)
        self.proj_out = NIN(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        q, k, v = (layer(h).reshape(batch, channels, height * width) for layer in (self.q, self.k, self.v))
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * (channels ** -0.5), dim=-1)
        h = torch.einsum("bij,bcj->bci", weights, v).reshape(batch, channels, height, width)
        return (x + self.proj_out(h)) / SKIP_DIVISOR
