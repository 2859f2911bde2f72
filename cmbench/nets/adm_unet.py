"""ADMUNet: the ADM U-Net (Dhariwal & Nichol 2021) of openai's consistency models and of CTM.

The network is rebuilt here so that the released state dicts load with ``strict=True`` (every
key, every shape) without the original code or flash-attn. Module names follow the originals
(``time_embed``, ``label_emb``, ``input_blocks.N.M``, ``middle_block``, ``output_blocks.N.M``,
``out``; CTM adds ``time_embed_s`` and a per-ResBlock ``emb_layers_s``). Facts it relies on,
checked against openai/consistency_models ``cm/unet.py`` and sony/ctm ``code/cm/unet.py``:

- Attention is self-attention over the H·W positions. ``qkv`` and ``proj_out`` are 1×1
  ``Conv2d`` layers (weights ``[3C, C, 1, 1]`` and ``[C, C, 1, 1]``). Every released CM and CTM
  net was trained with flash attention, which reads the ``3C`` qkv channels as
  ``(three, heads, head_dim)``; guided-diffusion's legacy attention reads them as
  ``(heads, three, head_dim)``. ``qkv_layout`` selects the order, the first being the default.
  The output channels are ordered ``(heads, head_dim)`` in both. The scale is 1/√head_dim (the
  legacy code's 1/⁴√d on q and on k is the same product).
- The middle block always attends; other levels attend where their resolution is listed.
- CTM's target time s has its own sinusoidal embedding and MLP; each ResBlock projects it with
  its own ``SiLU → Linear`` and adds that to the projection of the t (+ class) embedding before
  the scale/shift split. The class label enters only the t branch.
- GroupNorm (32 groups) is computed in float32 and returned in the input dtype, as ADM's
  ``GroupNorm32`` does, so autocast / half precision behaves like the original nets.
- Output convolutions (each ResBlock's last conv, ``proj_out``, ``out.2``) start at zero, as in
  ADM: a freshly built net outputs zeros until weights are loaded.

Presets for the released checkpoints are in :data:`ADM_PRESETS` (see :func:`adm_preset`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cmbench.nets.adm_blocks import (
    QKV_LAYOUTS,
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    embedding_mlp,
    zeroed,
)
from cmbench.nets.embeddings import positional_embedding
from cmbench.nets.labels import batch_labels, class_indices


_IMAGENET64 = dict(
    image_size=64,
    in_channels=3,
    model_channels=192,
    out_channels=3,
    num_res_blocks=3,
    attention_resolutions=(32, 16, 8),
    dropout=0.0,
    channel_mult=(1, 2, 3, 4),
    num_classes=1000,
    num_heads=4,
    num_head_channels=64,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    resblock_updown=True,
    s_embedding=False,
    qkv_layout="three-heads-dim",
)

ADM_PRESETS: dict[str, dict] = {
    # openai/consistency_models scripts/launch.sh, ImageNet-64 CD / CT sampling flags
    # (edm_imagenet64_ema.pt was trained with dropout 0.1; dropout is inactive in eval mode).
    "adm-imagenet64": dict(_IMAGENET64),
    # launch.sh, LSUN Bedroom-256 / Cat-256 sampling flags (channel_mult is the 256 default).
    "adm-lsun256": dict(
        _IMAGENET64,
        image_size=256,
        model_channels=256,
        num_res_blocks=2,
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_classes=None,
        use_scale_shift_norm=False,
    ),
    # sony/ctm code/cm/script_util.py model_and_diffusion_defaults('imagenet64'), training_mode ctm.
    "adm-imagenet64-ctm": dict(_IMAGENET64, s_embedding=True),
}


def adm_preset(name: str) -> dict:
    """A fresh copy of the constructor arguments of preset ``name`` (see :data:`ADM_PRESETS`)."""
    try:
        return dict(ADM_PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown ADM preset {name!r}; accepted: {', '.join(ADM_PRESETS)}") from None


class _Blocks:
    """Builds the ResBlocks and AttentionBlocks of one net from its shared settings."""

    def __init__(self, emb_dim: int, dropout: float, use_scale_shift_norm: bool, s_embedding: bool,
                 num_head_channels: int, qkv_layout: str):
        self.emb_dim = emb_dim
        self.dropout = dropout
        self.use_scale_shift_norm = use_scale_shift_norm
        self.s_embedding = s_embedding
        self.num_head_channels = num_head_channels
        self.qkv_layout = qkv_layout

    def res(self, channels: int, out_channels: int, resample: str = "none") -> ResBlock:
        return ResBlock(channels, self.emb_dim, out_channels, self.dropout, self.use_scale_shift_norm,
                        resample, self.s_embedding)

    def attention(self, channels: int, num_heads: int) -> AttentionBlock:
        """Attention with ``channels // num_head_channels`` heads, or ``num_heads`` when that is -1."""
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise ValueError(f"ADMUNet: {channels} attention channels are not divisible by "
                                 f"num_head_channels={self.num_head_channels}")
            num_heads = channels // self.num_head_channels
        elif num_heads < 1 or channels % num_heads:
            raise ValueError(f"ADMUNet: {channels} attention channels do not split into {num_heads} heads")
        return AttentionBlock(channels, num_heads, self.qkv_layout)


class ADMUNet(nn.Module):
    """F(x, c_noise[, class, c_noise_s]): ADM's U-Net with openai's flag names.

    ``attention_resolutions`` are image resolutions (e.g. ``(32, 16, 8)``), each one the input
    size divided by a power of two reached inside the net. ``num_head_channels`` fixes the head
    width (-1: use ``num_heads``, and ``num_heads_upsample`` on the up path, -1 meaning
    ``num_heads``). ``num_classes`` None makes the net unconditional; ``s_embedding`` adds CTM's
    target-time branch. ``qkv_layout`` is one of :data:`QKV_LAYOUTS`.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        num_classes: int | None = None,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        s_embedding: bool = False,
        qkv_layout: str = QKV_LAYOUTS[0],
    ):
        super().__init__()
        channel_mult = tuple(channel_mult)
        attention_rates = _attention_rates(image_size, attention_resolutions, len(channel_mult))
        _check_settings(in_channels, model_channels, out_channels, num_res_blocks, channel_mult,
                        dropout, num_classes, qkv_layout)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.num_classes = num_classes
        self.s_embedding = bool(s_embedding)
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads

        emb_dim = 4 * model_channels
        self.time_embed = embedding_mlp(model_channels, emb_dim)
        self.time_embed_s = embedding_mlp(model_channels, emb_dim) if s_embedding else None
        self.label_emb = nn.Embedding(num_classes, emb_dim) if num_classes is not None else None

        blocks = _Blocks(emb_dim, dropout, use_scale_shift_norm, self.s_embedding, num_head_channels, qkv_layout)
        widths = [int(m * model_channels) for m in channel_mult]
        ch = widths[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        rate = 1
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [blocks.res(ch, width)]
                ch = width
                if rate in attention_rates:
                    layers.append(blocks.attention(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level < len(widths) - 1:
                down = blocks.res(ch, ch, "down") if resblock_updown else Downsample(ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_channels.append(ch)
                rate *= 2

        self.middle_block = EmbedSequential(
            blocks.res(ch, ch), blocks.attention(ch, num_heads), blocks.res(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks + 1):
                layers = [blocks.res(ch + skip_channels.pop(), widths[level])]
                ch = widths[level]
                if rate in attention_rates:
                    layers.append(blocks.attention(ch, num_heads_upsample))
                if level > 0 and i == num_res_blocks:
                    layers.append(blocks.res(ch, ch, "up") if resblock_updown else Upsample(ch))
                    rate //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zeroed(nn.Conv2d(widths[0], out_channels, 3, padding=1))
        )

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        s_noise_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The network output for ``x`` [B, C, H, W] (float), in ``x``'s dtype.

        ``noise_labels`` ([B] or a scalar) is the already scaled time input (250·ln σ for the
        openai and CTM nets); ``class_labels`` integer indices [B], required iff ``num_classes``
        is set; ``s_noise_labels`` CTM's target-time input (250·ln s), required iff
        ``s_embedding``.
        """
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"ADMUNet expects x of shape [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        emb, emb_s = self._embeddings(x.shape[0], noise_labels, class_labels, s_noise_labels)
        h = x.to(self.out[2].weight.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, emb_s)
            skips.append(h)
        h = self.middle_block(h, emb, emb_s)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, emb_s)
        return self.out(h).to(x.dtype)

    def _embeddings(
        self,
        batch: int,
        noise_labels: torch.Tensor,
        class_labels: torch.Tensor | None,
        s_noise_labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(t embedding + class embedding, s embedding or None), checking which inputs are due."""
        emb = self._time_embedding(self.time_embed, batch_labels(noise_labels, batch, "noise_labels", "ADMUNet"))
        classes = class_indices(class_labels, batch, self.num_classes or 0, "ADMUNet")
        if classes is not None:
            emb = emb + self.label_emb(classes)
        if self.time_embed_s is None:
            if s_noise_labels is not None:
                raise ValueError(
                    "ADMUNet has no s embedding (s_embedding=False) but s_noise_labels were given; "
                    "only CTM nets take a target time"
                )
            return emb, None
        if s_noise_labels is None:
            raise ValueError("ADMUNet has an s embedding (s_embedding=True, CTM); s_noise_labels [B] are required")
        emb_s = self._time_embedding(self.time_embed_s, batch_labels(s_noise_labels, batch, "s_noise_labels", "ADMUNet"))
        return emb, emb_s

    def _time_embedding(self, mlp: nn.Sequential, labels: torch.Tensor) -> torch.Tensor:
        """MLP of the [cos, sin] embedding of ``labels``, the sinusoid taken in float32 as in ADM."""
        sinusoid = positional_embedding(labels.float(), self.model_channels, freq_dtype=torch.float32)
        return mlp(sinusoid.to(mlp[0].weight.dtype))


def _attention_rates(image_size: int, resolutions: Sequence[int], levels: int) -> frozenset[int]:
    """The downsampling rates (image_size // resolution) at which the net attends."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"ADMUNet: image_size must be a positive int, got {image_size!r}")
    if levels < 1 or image_size % 2 ** (levels - 1):
        raise ValueError(
            f"ADMUNet: image_size {image_size} must be divisible by 2**(len(channel_mult) - 1) = {2 ** max(levels - 1, 0)}"
        )
    reachable = {image_size // 2**k: 2**k for k in range(levels)}
    rates = set()
    for resolution in resolutions:
        if resolution not in reachable:
            raise ValueError(
                f"ADMUNet: attention resolution {resolution!r} is not reached by a {image_size}×{image_size} "
                f"net with {levels} levels; accepted: {', '.join(map(str, reachable))}"
            )
        rates.add(reachable[resolution])
    return frozenset(rates)


def _check_settings(in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                    channel_mult: tuple, dropout: float, num_classes: int | None, qkv_layout: str) -> None:
    if min(in_channels, model_channels, out_channels, num_res_blocks) < 1:
        raise ValueError(
            "ADMUNet: in_channels, model_channels, out_channels and num_res_blocks must be ≥ 1; got "
            f"{in_channels}, {model_channels}, {out_channels}, {num_res_blocks}"
        )
    widths = [m * model_channels for m in channel_mult]
    if any(w < 32 or w != int(w) or int(w) % 32 for w in widths):
        raise ValueError(
            f"ADMUNet: every level width channel_mult[i]·model_channels must be a positive multiple of 32 "
            f"(GroupNorm with 32 groups); got {widths}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"ADMUNet: dropout must lie in [0, 1), got {dropout}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"ADMUNet: num_classes must be a positive int or None, got {num_classes!r}")
    if qkv_layout not in QKV_LAYOUTS:
        raise ValueError(f"ADMUNet: unknown qkv_layout {qkv_layout!r}; accepted: {', '.join(QKV_LAYOUTS)}")


__all__ = ["ADMUNet", "ADM_PRESETS", "QKV_LAYOUTS", "adm_preset"]
