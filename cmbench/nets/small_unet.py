"""SmallUNet: the network of cmbench's own toy models (8×8 to 16×16 images, trained on CPU).

A plain residual U-Net in the spirit of ADM / DDPM, cut down to well under a million
parameters: conv in; per resolution level ``num_blocks`` residual blocks with the noise
embedding added per channel; stride-2 conv between levels; one middle block; a mirrored up
path that concatenates the down path's block outputs and upsamples by nearest neighbour +
conv; GroupNorm → SiLU → conv out. No attention.

The embedding is ``MLP(embed(c_noise))`` plus, optionally, ``nn.Embedding(label)`` for class
conditioning and ``MLP_s(embed(c_noise_s))`` for the target time s of a CTM (no label term in
the s branch, as in CTM's nets, reference/facts.md §1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cmbench.nets.embeddings import EMBEDDINGS, TimeEmbedding
from cmbench.nets.labels import batch_labels, class_indices


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count ≤ min(max_groups, channels // 4) that divides ``channels`` (≥ 1)."""
    for groups in range(max(1, min(max_groups, channels // 4)), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3x3, + Linear(emb) per channel, GroupNorm → SiLU → dropout → conv3x3,
    plus a (1×1-projected where channels change) skip."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class SmallUNet(nn.Module):
    """F(x, c_noise[, class, c_noise_s]) for toy images; output has ``x``'s shape and dtype.

    ``noise_labels`` is the preconditioned time input (the caller's preconditioning decides its
    scaling). ``class_labels`` are int64 indices, required iff ``label_dim > 0``.
    ``s_noise_labels`` is the CTM target-time input, required iff ``s_embedding``.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        model_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2),
        num_blocks: int = 1,
        label_dim: int = 0,
        s_embedding: bool = False,
        dropout: float = 0.0,
        embedding: str = "positional",
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        levels = len(channel_mult)
        if levels < 1 or any(m < 1 for m in channel_mult):
            raise ValueError(f"SmallUNet: channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
        min_res = 2**levels
        if (
            not isinstance(img_resolution, int)
            or img_resolution < min_res
            or img_resolution & (img_resolution - 1)
        ):
            raise ValueError(
                f"SmallUNet: img_resolution must be a power of two ≥ 2**len(channel_mult) = {min_res} "
                f"(channel_mult={channel_mult}), got {img_resolution!r}"
            )
        if img_channels < 1 or model_channels < 1 or num_blocks < 1 or label_dim < 0:
            raise ValueError(
                "SmallUNet: img_channels, model_channels and num_blocks must be ≥ 1 and label_dim ≥ 0; got "
                f"img_channels={img_channels}, model_channels={model_channels}, "
                f"num_blocks={num_blocks}, label_dim={label_dim}"
            )
        if embedding not in EMBEDDINGS:
            raise ValueError(f"SmallUNet: unknown embedding {embedding!r}; accepted: {', '.join(EMBEDDINGS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SmallUNet: dropout must lie in [0, 1), got {dropout}")

        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.s_embedding = bool(s_embedding)
        emb_dim = 4 * model_channels

        self.time_embed = TimeEmbedding(embedding, model_channels, emb_dim)
        self.time_embed_s = TimeEmbedding(embedding, model_channels, emb_dim) if s_embedding else None
        self.label_embed = nn.Embedding(label_dim, emb_dim) if label_dim > 0 else None

        channels = model_channels * channel_mult[0]
        self.conv_in = nn.Conv2d(img_channels, channels, 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels = []
        for level, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(channels, model_channels * mult, emb_dim, dropout))
                channels = model_channels * mult
                skip_channels.append(channels)
            self.down_blocks.append(blocks)
            if level < levels - 1:
                self.downsamples.append(Downsample(channels))

        self.middle = ResBlock(channels, channels, emb_dim, dropout)

        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(levels)):
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                out_channels = model_channels * channel_mult[level]
                blocks.append(ResBlock(channels + skip_channels.pop(), out_channels, emb_dim, dropout))
                channels = out_channels
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamples.append(Upsample(channels))

        self.norm_out = norm(channels)
        self.conv_out = nn.Conv2d(channels, img_channels, 3, padding=1)

    def _embedding(
        self,
        batch: int,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None,
        s_noise_labels: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        emb = self.time_embed(batch_labels(noise_labels, batch, "noise_labels", "SmallUNet").to(dtype))
        classes = class_indices(class_labels, batch, self.label_dim, "SmallUNet")
        if classes is not None:
            emb = emb + self.label_embed(classes)
        if self.time_embed_s is not None:
            if s_noise_labels is None:
                raise ValueError("SmallUNet has an s embedding (s_embedding=True); s_noise_labels are required")
            emb = emb + self.time_embed_s(batch_labels(s_noise_labels, batch, "s_noise_labels", "SmallUNet").to(dtype))
        elif s_noise_labels is not None:
            raise ValueError("SmallUNet has no s embedding (s_embedding=False) but s_noise_labels were given")
        return F.silu(emb)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        s_noise_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"SmallUNet expects x of shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        in_dtype = x.dtype
        dtype = self.conv_in.weight.dtype
        emb = self._embedding(x.shape[0], noise_labels, class_labels, s_noise_labels, dtype)

        h = self.conv_in(x.to(dtype))
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.middle(h, emb)
        for level, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if level < len(self.upsamples):
                h = self.upsamples[level](h)
        return self.conv_out(F.silu(self.norm_out(h))).to(in_dtype)
