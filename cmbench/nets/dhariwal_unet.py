"""DhariwalUNet: EDM's re-implementation of ADM (Dhariwal & Nichol 2021, "Diffusion Models
Beat GANs on Image Synthesis"), the network of ``edm-imagenet-64x64-cond-adm.pkl``.

The constructor takes NVlabs/edm's keyword names and defaults, so the ``_init_kwargs`` recorded
in an EDM pickle build this class directly, and the module tree reproduces EDM's names
(``map_noise``, ``map_augment``, ``map_layer0``, ``map_layer1``, ``map_label``, ``enc.64x64_conv``,
``enc.32x32_down``, ``dec.8x8_in0``, ``out_norm``, ``out_conv``, ...), so official state dicts
load strictly. Unlike openai's ADM code (whose checkpoints cmbench reads elsewhere), EDM's ADM
takes labels through a linear map of one-hot vectors and uses scale-and-shift conditioning
in every block (ADM's ``use_scale_shift_norm``) with 64 channels per attention head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cmbench.nets.edm_layers import (
    Conv2d,
    GroupNorm,
    Linear,
    UNetBlock,
    check_resolution,
    EDMPositionalEmbedding,
    one_hot_labels,
)
from cmbench.nets.labels import batch_labels


class DhariwalUNet(nn.Module):
    """F(x, c_noise[, class]) of EDM's ADM.

    Arguments are EDM's (``DhariwalUNet`` in NVlabs/edm), defaults included; sequence arguments
    may be lists or tuples. ``label_dropout`` is recorded but only matters for training, which
    cmbench does not do; ``dropout`` acts in training mode only. There is no CTM s branch: CTM's
    ImageNet-64 net is openai's ADM code, not this class.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ):
        check_resolution(img_resolution, len(channel_mult), "DhariwalUNet")
        super().__init__()
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block_kwargs = dict(
            emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero
        )

        self.map_noise = EDMPositionalEmbedding(model_channels, endpoint=False)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (
            Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal", init_weight=math.sqrt(label_dim))
            if label_dim
            else None
        )

        self.enc, skip_channels = _adm_encoder(
            img_resolution, in_channels, model_channels, channel_mult, num_blocks, attn_resolutions, init, block_kwargs
        )
        self.dec, channels = _adm_decoder(
            img_resolution, model_channels, channel_mult, num_blocks, attn_resolutions, skip_channels, block_kwargs
        )
        self.out_norm = GroupNorm(channels)
        self.out_conv = Conv2d(channels, out_channels, kernel=3, **init_zero)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        s_noise_labels: torch.Tensor | None = None,
        *,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The raw network output F for input ``x`` ``[B, in_channels, R, R]``.

        ``noise_labels`` ``[B]`` is the preconditioning's c_noise; ``class_labels`` are integer
        indices ``[B]``, required iff ``label_dim > 0``; ``s_noise_labels`` must be left out
        (no s branch). ``augment_labels`` ``[B, augment_dim]`` condition on EDM's training
        augmentations; left out (as at sampling time), the augmentation term is zero.
        """
        if s_noise_labels is not None:
            raise ValueError("DhariwalUNet has no CTM s embedding; s_noise_labels must be None")
        batch = x.shape[0]
        labels = one_hot_labels(class_labels, self.label_dim, batch, "DhariwalUNet")
        noise_labels = batch_labels(noise_labels, batch, "noise_labels", "DhariwalUNet")
        emb = self._embed(noise_labels.to(torch.float32), labels, augment_labels)
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))

    def _embed(self, noise_labels, class_onehot, augment_labels) -> torch.Tensor:
        """ADM's embedding: MLP of the noise (+ augmentation) features, plus the class projection."""
        features = self.map_noise(noise_labels)
        if augment_labels is not None:
            if self.map_augment is None:
                raise ValueError("DhariwalUNet has no augmentation input (augment_dim=0) but augment_labels were given")
            features = features + self.map_augment(augment_labels.to(features.dtype))
        emb = self.map_layer1(F.silu(self.map_layer0(features)))
        if self.map_label is not None:
            emb = emb + self.map_label(class_onehot.to(emb.dtype))
        return F.silu(emb)


def _adm_encoder(
    img_resolution, in_channels, model_channels, channel_mult, num_blocks, attn_resolutions, init, block_kwargs
) -> tuple[nn.ModuleDict, list[int]]:
    """EDM's ADM encoder (names ``{res}x{res}_{conv,down,blockN}``) and its skip widths."""
    enc = nn.ModuleDict()
    channels = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            enc[f"{res}x{res}_conv"] = Conv2d(channels, model_channels * mult, kernel=3, **init)
            channels = model_channels * mult
        else:
            enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block_kwargs)
        for idx in range(num_blocks):
            enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                channels, model_channels * mult, attention=res in attn_resolutions, **block_kwargs
            )
            channels = model_channels * mult
    return enc, [block.out_channels for block in enc.values()]


def _adm_decoder(
    img_resolution, model_channels, channel_mult, num_blocks, attn_resolutions, skip_channels, block_kwargs
) -> tuple[nn.ModuleDict, int]:
    """EDM's ADM decoder (names ``{res}x{res}_{in0,in1,up,blockN}``) and its output width."""
    skip_channels = list(skip_channels)
    channels = skip_channels[-1]
    dec = nn.ModuleDict()
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        if level == len(channel_mult) - 1:
            dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block_kwargs)
            dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block_kwargs)
        else:
            dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block_kwargs)
        for idx in range(num_blocks + 1):
            dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                channels + skip_channels.pop(), model_channels * mult, attention=res in attn_resolutions, **block_kwargs
            )
            channels = model_channels * mult
    return dec, channels
