"""SongUNet: EDM's DDPM++ / NCSN++ network (Song et al. 2021, as re-implemented in EDM).

The constructor takes NVlabs/edm's keyword names and defaults, so the ``_init_kwargs`` recorded
in an EDM pickle build this class directly, and the module tree reproduces EDM's parameter and
buffer names (``map_noise.freqs``, ``map_layer0``, ``enc.32x32_conv``, ``enc.16x16_block0.qkv``,
``dec.32x32_aux_conv``, ...), so official state dicts load strictly.

DDPM++ and NCSN++ are two settings of the same net (EDM ``train.py --arch``):

- DDPM++: ``embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
  resample_filter=(1, 1)``.
- NCSN++: ``embedding_type='fourier', channel_mult_noise=2, encoder_type='residual',
  resample_filter=(1, 3, 3, 1)``.

CTM's CIFAR-10 student (Kim et al. 2024, Kim-Dongjun/ctm-cifar10 ``cm/networks.py``) is DDPM++
with a second embedding of the target time s: ``s_embedding=True`` (CTM's own spelling,
``training_mode='ctm'``, is accepted too) adds ``map_layer0_s``, ``map_layer1_s`` and a per-block
``affine_s``. The s labels (CTM feeds ln(s)/4, like c_noise for t) pass through the same
parameter-free noise embedding and the same class projection ``map_label`` as t, then through
the s mapping layers; each block adds ``affine_s(emb_s)`` to ``affine(emb)``. CTM's
``linear_probing`` variant (extra ``*_train`` modules) is not supported.
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
from cmbench.nets.embeddings import FourierEmbedding
from cmbench.nets.labels import batch_labels

EMBEDDING_TYPES = ("positional", "fourier")
ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


class SongUNet(nn.Module):
    """F(x, c_noise[, class, c_noise_s]) of EDM's DDPM++ / NCSN++ (and CTM's CIFAR-10 student).

    Arguments are EDM's (``SongUNet`` in NVlabs/edm), defaults included, plus CTM's
    ``s_embedding`` / ``training_mode`` / ``linear_probing``; sequence arguments may be lists
    or tuples. ``label_dropout`` is recorded but only matters for training, which cmbench does
    not do; ``dropout`` acts in training mode only.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[float] = (1, 1),
        s_embedding: bool = False,
        training_mode: str = "",
        linear_probing: bool = False,
    ):
        _check_choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        _check_choice("encoder_type", encoder_type, ENCODER_TYPES)
        _check_choice("decoder_type", decoder_type, DECODER_TYPES)
        if linear_probing:
            raise ValueError(
                "SongUNet: linear_probing=True (a CTM training experiment with extra *_train modules) "
                "is not supported; CTM's released CIFAR-10 nets use linear_probing=False"
            )
        check_resolution(img_resolution, len(channel_mult), "SongUNet")
        super().__init__()
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        self.s_embedding = bool(s_embedding) or training_mode.lower() == "ctm"
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        block_kwargs = dict(
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
            init=init,
            init_zero=dict(init_mode="xavier_uniform", init_weight=1e-5),
            init_attn=dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2)),
            s_embedding=self.s_embedding,
        )

        if embedding_type == "positional":
            self.map_noise = EDMPositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels, scale=16)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        if self.s_embedding:
            self.map_layer0_s = Linear(noise_channels, emb_channels, **init)
            self.map_layer1_s = Linear(emb_channels, emb_channels, **init)
        else:
            self.map_layer0_s = self.map_layer1_s = None

        self.enc, skip_channels = _song_encoder(
            img_resolution, in_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
            encoder_type, resample_filter, init, block_kwargs,
        )
        self.dec = _song_decoder(
            img_resolution, out_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
            decoder_type, resample_filter, skip_channels, block_kwargs,
        )

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

        ``noise_labels`` ``[B]`` is the preconditioning's c_noise (ln(σ)/4 under EDMPrecond).
        ``class_labels`` are integer indices ``[B]``, required iff ``label_dim > 0``.
        ``s_noise_labels`` ``[B]`` (CTM: ln(s)/4) is required iff the net has the s branch.
        ``augment_labels`` ``[B, augment_dim]`` condition on EDM's training augmentations; left
        out (as at sampling time), the augmentation term is zero.
        """
        batch = x.shape[0]
        labels = one_hot_labels(class_labels, self.label_dim, batch, "SongUNet")
        emb = self._embed_t(batch_labels(noise_labels, batch, "noise_labels", "SongUNet"), labels, augment_labels)
        emb_s = self._embed_s(s_noise_labels, labels, batch)
        skips = self._encode(x, emb, emb_s)
        return self._decode(skips, emb, emb_s)

    def _noise_features(self, labels: torch.Tensor, class_onehot: torch.Tensor | None) -> torch.Tensor:
        """Float32 noise embedding in EDM's SongUNet order ``[sin, cos]``, plus the class term
        (one-hot scaled by √label_dim, as EDM feeds it)."""
        cos, sin = self.map_noise(labels.to(torch.float32)).chunk(2, dim=1)
        features = torch.cat([sin, cos], dim=1)
        if self.map_label is not None:
            features = features + self.map_label(class_onehot * math.sqrt(self.label_dim))
        return features

    def _embed_t(self, noise_labels, class_onehot, augment_labels) -> torch.Tensor:
        """EDM's embedding of the noise level: ``SiLU ∘ map_layer1 ∘ SiLU ∘ map_layer0``."""
        features = self._noise_features(noise_labels, class_onehot)
        if augment_labels is not None:
            if self.map_augment is None:
                raise ValueError("SongUNet has no augmentation input (augment_dim=0) but augment_labels were given")
            features = features + self.map_augment(augment_labels.to(features.dtype))
        return F.silu(self.map_layer1(F.silu(self.map_layer0(features))))

    def _embed_s(self, s_noise_labels, class_onehot, batch: int) -> torch.Tensor | None:
        """CTM's embedding of the target time s; no augmentation term (CTM has none)."""
        if not self.s_embedding:
            if s_noise_labels is not None:
                raise ValueError("SongUNet has no s embedding (s_embedding=False) but s_noise_labels were given")
            return None
        if s_noise_labels is None:
            raise ValueError("SongUNet has a CTM s embedding (s_embedding=True); s_noise_labels are required")
        s_noise_labels = batch_labels(s_noise_labels, batch, "s_noise_labels", "SongUNet")
        features = self._noise_features(s_noise_labels, class_onehot)
        return F.silu(self.map_layer1_s(F.silu(self.map_layer0_s(features))))

    def _encode(self, x, emb, emb_s) -> list[torch.Tensor]:
        """Run the encoder; returns the skip activations (the last one is the bottleneck input)."""
        skips = []
        aux = x
        for name, block in self.enc.items():
            if name.endswith("_aux_down"):
                aux = block(aux)
            elif name.endswith("_aux_skip"):
                x = skips[-1] = x + block(aux)
            elif name.endswith("_aux_residual"):
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb, emb_s) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        return skips

    def _decode(self, skips, emb, emb_s) -> torch.Tensor:
        """Run the decoder; the output is the sum of the auxiliary heads (one per level for 'skip')."""
        x = skips[-1]
        out = None
        head = None
        for name, block in self.dec.items():
            if name.endswith("_aux_up"):
                out = block(out)
            elif name.endswith("_aux_norm"):
                head = block(x)
            elif name.endswith("_aux_conv"):
                head = block(F.silu(head))
                out = head if out is None else head + out
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb, emb_s)
        return out


def _song_encoder(
    img_resolution, in_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
    encoder_type, resample_filter, init, block_kwargs,
) -> tuple[nn.ModuleDict, list[int]]:
    """EDM's SongUNet encoder (names ``{res}x{res}_{conv,down,aux_*,blockN}``) and its skip widths."""
    enc = nn.ModuleDict()
    channels = in_channels
    aux_channels = in_channels
    for level, mult in enumerate(channel_mult):
        res = img_resolution >> level
        if level == 0:
            enc[f"{res}x{res}_conv"] = Conv2d(channels, model_channels, kernel=3, **init)
            channels = model_channels
        else:
            enc[f"{res}x{res}_down"] = UNetBlock(channels, channels, down=True, **block_kwargs)
            if encoder_type == "skip":
                enc[f"{res}x{res}_aux_down"] = Conv2d(
                    aux_channels, aux_channels, kernel=0, down=True, resample_filter=resample_filter
                )
                enc[f"{res}x{res}_aux_skip"] = Conv2d(aux_channels, channels, kernel=1, **init)
            if encoder_type == "residual":
                enc[f"{res}x{res}_aux_residual"] = Conv2d(
                    aux_channels, channels, kernel=3, down=True, resample_filter=resample_filter,
                    fused_resample=True, **init,
                )
                aux_channels = channels
        for idx in range(num_blocks):
            attention = res in attn_resolutions
            enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                channels, model_channels * mult, attention=attention, **block_kwargs
            )
            channels = model_channels * mult
    skip_channels = [block.out_channels for name, block in enc.items() if "_aux_" not in name]
    return enc, skip_channels


def _song_decoder(
    img_resolution, out_channels, model_channels, channel_mult, num_blocks, attn_resolutions,
    decoder_type, resample_filter, skip_channels, block_kwargs,
) -> nn.ModuleDict:
    """EDM's SongUNet decoder (names ``{res}x{res}_{in0,in1,up,blockN,aux_*}``)."""
    init_zero = block_kwargs["init_zero"]
    skip_channels = list(skip_channels)
    channels = skip_channels[-1]
    dec = nn.ModuleDict()
    top = len(channel_mult) - 1
    for level, mult in reversed(list(enumerate(channel_mult))):
        res = img_resolution >> level
        if level == top:
            dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block_kwargs)
            dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block_kwargs)
        else:
            dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block_kwargs)
        for idx in range(num_blocks + 1):
            attention = idx == num_blocks and res in attn_resolutions
            dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                channels + skip_channels.pop(), model_channels * mult, attention=attention, **block_kwargs
            )
            channels = model_channels * mult
        if decoder_type == "skip" or level == 0:
            if decoder_type == "skip" and level < top:
                dec[f"{res}x{res}_aux_up"] = Conv2d(
                    out_channels, out_channels, kernel=0, up=True, resample_filter=resample_filter
                )
            dec[f"{res}x{res}_aux_norm"] = GroupNorm(channels, eps=1e-6)
            dec[f"{res}x{res}_aux_conv"] = Conv2d(channels, out_channels, kernel=3, **init_zero)
    return dec


def _check_choice(name: str, value: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ValueError(f"SongUNet: unknown {name} {value!r}; accepted: {', '.join(accepted)}")

