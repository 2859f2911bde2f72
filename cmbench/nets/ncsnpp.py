"""NCSN++ of the Consistency Models paper's CIFAR-10 checkpoints (openai/consistency_models_cifar10).

Those JAX/flax nets are score_sde's ``ncsnpp`` (Song et al. 2021) at one setting, shared by every
released file (EDM-style teacher, CD, CT, continuous-time CD/CT): nf 128, ch_mult (2, 2, 2),
4 residual blocks per level, attention at 16x16, BigGAN residual blocks with FIR [1, 3, 3, 1]
resampling, skip rescaling by 1/√2, a residual input pyramid (``progressive_input residual``,
``progressive none``), a Gaussian Fourier time embedding (scale 16) of the time input
0.25·ln σ, GroupNorm and swish, unconditional. The sizes are arguments (tests build small
ones); the layout choices are fixed to that setting.

The submodules of each kind sit in flat lists in the order the network applies them, which is
the order flax numbers them in the checkpoint (``ResnetBlockBigGANpp_0, _1, ...``); the
forward pass walks each list once, front to back. That keeps the checkpoint mapping
(:mod:`cmbench.checkpoints.flax_ncsnpp`) a plain enumeration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cmbench.nets.labels import batch_labels, class_indices
from cmbench.nets.ncsnpp_layers import (
    AttentionBlock,
    FIRDownsampleConv,
    GaussianFourierProjection,
    ResnetBlockBigGAN,
    SKIP_DIVISOR,
    ncsnpp_group_norm,
)


class NCSNpp(nn.Module):
    """F(x, t): ``x`` [B, C, R, R] already scaled by c_in, ``t`` [B] the time input (0.25·ln σ
    for the released checkpoints); the output has ``x``'s shape. Unconditional: class labels
    must be None."""

    s_embedding = False  # no CTM target-time branch

    def __init__(
        self,
        img_resolution: int = 32,
        in_channels: int = 3,
        nf: int = 128,
        ch_mult: Sequence[int] = (2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        fourier_scale: float = 16.0,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
    ):
        if img_resolution % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"NCSNpp: img_resolution {img_resolution} must be divisible by 2^{len(ch_mult) - 1} "
                             f"(one halving per level after the first of ch_mult {list(ch_mult)})")
        super().__init__()
        self.img_resolution, self.in_channels = img_resolution, in_channels
        self.ch_mult, self.num_res_blocks = tuple(ch_mult), num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        emb = 4 * nf
        taps = tuple(fir_kernel)

        self.fourier = GaussianFourierProjection(nf, fourier_scale)
        self.emb_linear0 = nn.Linear(2 * nf, emb)
        self.emb_linear1 = nn.Linear(emb, emb)
        self.conv_in = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.res_blocks = nn.ModuleList()
        self.attn_blocks = nn.ModuleList()
        self.pyramid_downsamplers = nn.ModuleList()

        def res_block(c_in: int, c_out: int, **resample) -> int:
            self.res_blocks.append(ResnetBlockBigGAN(c_in, c_out, emb, taps, **resample))
            return c_out

        def attention_at(resolution: int, channels: int) -> None:
            if resolution in self.attn_resolutions:
                self.attn_blocks.append(AttentionBlock(channels))

        channels, pyramid_channels, resolution = nf, in_channels, img_resolution
        skips = [channels]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(num_res_blocks):
                channels = res_block(channels, nf * mult)
                attention_at(resolution, channels)
                skips.append(channels)
            if level != len(self.ch_mult) - 1:
                res_block(channels, channels, down=True)
                self.pyramid_downsamplers.append(FIRDownsampleConv(pyramid_channels, channels, taps))
                pyramid_channels, resolution = channels, resolution // 2
                skips.append(channels)
        res_block(channels, channels)
        self.attn_blocks.append(AttentionBlock(channels))
        res_block(channels, channels)
        for level in reversed(range(len(self.ch_mult))):
            for _ in range(num_res_blocks + 1):
                channels = res_block(channels + skips.pop(), nf * self.ch_mult[level])
            attention_at(resolution, channels)
            if level != 0:
                res_block(channels, channels, up=True)
                resolution *= 2
        self.norm_out = ncsnpp_group_norm(channels)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        expected = (self.in_channels, self.img_resolution, self.img_resolution)
        if tuple(x.shape[1:]) != expected:  # the attention layers sit at fixed resolutions
            raise ValueError(f"NCSNpp: x must have shape [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        class_indices(class_labels, batch, 0, "NCSNpp")
        t = batch_labels(noise_labels, batch, "noise_labels", "NCSNpp").to(x.dtype)
        emb = self.emb_linear1(F.silu(self.emb_linear0(self.fourier(t))))
        blocks, attention, downsamplers = iter(self.res_blocks), iter(self.attn_blocks), iter(self.pyramid_downsamplers)

        def attend(h: torch.Tensor) -> torch.Tensor:
            return next(attention)(h) if h.shape[2] in self.attn_resolutions else h

        pyramid = x
        skips = [self.conv_in(x)]
        for level in range(len(self.ch_mult)):
            for _ in range(self.num_res_blocks):
                skips.append(attend(next(blocks)(skips[-1], emb)))
            if level != len(self.ch_mult) - 1:
                h = next(blocks)(skips[-1], emb)
                pyramid = (next(downsamplers)(pyramid) + h) / SKIP_DIVISOR
                skips.append(pyramid)
        h = next(blocks)(skips[-1], emb)
        h = next(attention)(h)
        h = next(blocks)(h, emb)
        for level in reversed(range(len(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), emb)
            h = attend(h)
            if level != 0:
                h = next(blocks)(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


NCSNPP_CIFAR10 = dict(img_resolution=32, in_channels=3, nf=128, ch_mult=(2, 2, 2), num_res_blocks=4,
                      attn_resolutions=(16,), fourier_scale=16.0, fir_kernel=(1, 3, 3, 1))
"""The configuration of every released openai/consistency_models_cifar10 checkpoint (configs/cifar10_*.py)."""
