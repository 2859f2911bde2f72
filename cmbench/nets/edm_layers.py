"""Building blocks of EDM's networks (Karras et al. 2022, NVlabs/edm ``training/networks.py``).

EDM re-implements DDPM++ / NCSN++ (Song et al. 2021) and ADM (Dhariwal & Nichol 2021) from a
handful of shared layers. cmbench loads EDM's (and CTM's CIFAR-10) weights strictly, so every
layer here keeps EDM's parameter and buffer names and shapes:

- :class:`Linear`: ``weight [out, in]``, ``bias [out]``.
- :class:`Conv2d`: ``weight [out, in, k, k]``, ``bias [out]``, and a ``resample_filter``
  buffer ``[1, 1, n, n]`` when it resamples. A kernel size of 0 means "resample only" (no
  parameters), as EDM's skip-path resamplers use.
- :class:`GroupNorm`: ``weight``, ``bias``; ``min(32, C // 4)`` groups.
- :class:`UNetBlock`: ``norm0, conv0, affine, [affine_s], norm1, conv1, [skip], [norm2, qkv,
  proj]``; ``affine_s`` is the per-block projection of CTM's target-time embedding.

Fresh layers are initialised as EDM initialises them (:func:`edm_init`), so an untrained net
has EDM's scale; a loaded checkpoint overrides all of it. Everything runs in the input's dtype
except the attention weights, which EDM computes in float32; cmbench gets reduced precision
from ``torch.autocast`` rather than from EDM's ``use_fp16`` casts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cmbench.nets.labels import class_indices

INIT_MODES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")


def edm_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """A freshly drawn weight of ``shape`` under EDM's named initialisation ``mode``.

    Uniform modes draw from ``U(-a, a)``, normal modes from ``N(0, a²)`` with ``a`` set by the
    fans (Glorot & Bengio 2010; He et al. 2015, as EDM scales them). The tensor lands on the
    current default device, so a net built under ``torch.device("meta")`` allocates nothing.
    """
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}; accepted: {', '.join(INIT_MODES)}")


class Linear(nn.Module):
    """Fully connected layer ``x Wᵀ + b`` with EDM's initialisation and parameter names."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(edm_init([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(edm_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Product then bias, as EDM evaluates it (F.linear's fused addmm rounds differently).
        out = x @ self.weight.to(x.dtype).t()
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def resample_kernel(taps: Sequence[float]) -> torch.Tensor:
    """The separable 2-D FIR filter ``f fᵀ / (Σf)²`` of shape ``[1, 1, n, n]``.

    ``[1, 1]`` is 2×2 box filtering (DDPM++), ``[1, 3, 3, 1]`` the binomial filter of NCSN++
    (Song et al. 2021, after Zhang 2019's anti-aliasing).
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    return (torch.outer(f, f) / f.sum().square())[None, None]


class Conv2d(nn.Module):
    """2-D convolution with optional ×2 up- or downsampling through a fixed FIR filter.

    Unfused (the default), upsampling is a stride-2 transposed depthwise filtering before the
    convolution and downsampling a stride-2 depthwise filtering before it. ``fused_resample``
    reorders the work as EDM does for the NCSN++ residual skip path: convolve first at full
    resolution, then filter-and-decimate (down), or upsample then convolve with adjusted
    padding (up). ``kernel=0`` resamples only and has no parameters.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        fused_resample: bool = False,
        init_mode: str = "kaiming_normal",
        init_weight: float = 1.0,
        init_bias: float = 0.0,
    ):
        if up and down:
            raise ValueError("Conv2d: up and down are mutually exclusive")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = bool(up)
        self.down = bool(down)
        self.fused_resample = bool(fused_resample)
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        weight_shape = [out_channels, in_channels, kernel, kernel]
        self.weight = nn.Parameter(edm_init(weight_shape, **fans) * init_weight) if kernel else None
        self.bias = nn.Parameter(edm_init([out_channels], **fans) * init_bias) if kernel and bias else None
        self.register_buffer("resample_filter", resample_kernel(resample_filter) if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        if weight is not None and self.fused_resample and self.up:
            x = self._fused_up(x, weight)
        elif weight is not None and self.fused_resample and self.down:
            x = self._fused_down(x, weight)
        else:
            if self.up:
                x = self._upsample(x, self._filter_pad())
            if self.down:
                x = self._downsample(x, self._filter_pad())
            if weight is not None:
                x = F.conv2d(x, weight, padding=self._weight_pad())
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x

    def _weight_pad(self) -> int:
        return 0 if self.weight is None else self.weight.shape[-1] // 2

    def _filter_pad(self) -> int:
        return (self.resample_filter.shape[-1] - 1) // 2

    def _depthwise_filter(self, channels: int, dtype: torch.dtype, gain: float = 1.0) -> torch.Tensor:
        return (self.resample_filter.to(dtype) * gain).tile([channels, 1, 1, 1])

    def _upsample(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        """×2 zero-insertion upsampling filtered by the FIR (gain 4 keeps the mean)."""
        kernel = self._depthwise_filter(x.shape[1], x.dtype, gain=4.0)
        return F.conv_transpose2d(x, kernel, groups=x.shape[1], stride=2, padding=padding)

    def _downsample(self, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        """FIR filtering then ×2 decimation."""
        kernel = self._depthwise_filter(x.shape[1], x.dtype)
        return F.conv2d(x, kernel, groups=x.shape[1], stride=2, padding=padding)

    def _fused_up(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x = self._upsample(x, max(self._filter_pad() - self._weight_pad(), 0))
        return F.conv2d(x, weight, padding=max(self._weight_pad() - self._filter_pad(), 0))

    def _fused_down(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, weight, padding=self._weight_pad() + self._filter_pad())
        return self._downsample(x)

    def extra_repr(self) -> str:
        kernel = 0 if self.weight is None else self.weight.shape[-1]
        resample = ", up" if self.up else ", down" if self.down else ""
        return f"{self.in_channels}, {self.out_channels}, kernel={kernel}{resample}"


class GroupNorm(nn.Module):
    """Group normalisation with ``min(num_groups, C // min_channels_per_group)`` groups (EDM)."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1 or num_channels % self.num_groups:
            raise ValueError(
                f"GroupNorm: {num_channels} channels cannot form {self.num_groups} groups of at "
                f"least {min_channels_per_group} channels; use a channel count that is a multiple "
                f"of {min_channels_per_group}·min(32, C // {min_channels_per_group})"
            )
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, groups={self.num_groups}, eps={self.eps:g}"


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax_k(qᵀk / √c)`` for ``q, k`` of shape ``[N, c, L]``, computed in float32.

    Returns ``[N, L_q, L_k]`` in ``q``'s dtype; the float32 softmax is what EDM's AttentionOp
    does so that reduced-precision runs do not saturate the logits.
    """
    scaled_k = (k / math.sqrt(k.shape[1])).to(torch.float32)
    logits = torch.einsum("ncq,nck->nqk", q.to(torch.float32), scaled_k)
    return logits.softmax(dim=2).to(q.dtype)


class UNetBlock(nn.Module):
    """EDM's unified residual block: DDPM++, NCSN++ and ADM differ only in its options.

    ``x → GroupNorm → SiLU → conv3×3 (± resample)``, then the embedding enters either as a
    per-channel shift before the second norm (``adaptive_scale=False``, DDPM++/NCSN++) or as a
    scale-and-shift after it (``adaptive_scale=True``, ADM's ``use_scale_shift_norm``), then
    ``SiLU → dropout → conv3×3``, plus the (projected, resampled) input, times ``skip_scale``.
    With attention, a single self-attention layer follows with its own residual.

    ``init``, ``init_zero`` and ``init_attn`` are :class:`Linear` / :class:`Conv2d` initialisation
    arguments for the ordinary layers, the output-side layers EDM starts near zero, and the
    attention's qkv projection (default: ``init``).

    ``s_embedding`` adds ``affine_s``, CTM's projection of the target-time embedding, whose
    output is added to ``affine``'s (Kim et al. 2024, CIFAR-10 code); ``forward`` then needs
    ``emb_s``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[float] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
        init: Mapping | None = None,
        init_zero: Mapping | None = None,
        init_attn: Mapping | None = None,
        s_embedding: bool = False,
    ):
        super().__init__()
        init = {} if init is None else dict(init)
        init_zero = {"init_weight": 0} if init_zero is None else dict(init_zero)
        init_attn = init if init_attn is None else dict(init_attn)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale
        affine_width = out_channels * (2 if adaptive_scale else 1)
        resample = dict(up=up, down=down, resample_filter=resample_filter)

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resample, **init)
        self.affine = Linear(emb_channels, affine_width, **init)
        self.affine_s = Linear(emb_channels, affine_width, **init) if s_embedding else None
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            projects = resample_proj or out_channels != in_channels
            self.skip = Conv2d(in_channels, out_channels, kernel=1 if projects else 0, **resample, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **init_attn)
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, emb_s: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = self._condition(h, self._embedding_params(emb, emb_s, h.dtype))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (x if self.skip is None else self.skip(x))) * self.skip_scale
        if self.num_heads:
            h = (self.proj(self._attend(self.norm2(h))) + h) * self.skip_scale
        return h

    def _embedding_params(self, emb: torch.Tensor, emb_s: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        params = self.affine(emb)
        if self.affine_s is not None:
            if emb_s is None:
                raise ValueError("UNetBlock has a CTM s projection (affine_s); emb_s is required")
            params = params + self.affine_s(emb_s)
        return params[:, :, None, None].to(dtype)

    def _condition(self, h: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            return F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        return F.silu(self.norm1(h + params))

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over pixels; qkv channels are laid out (head, head_dim, 3)."""
        batch, channels = h.shape[:2]
        qkv = self.qkv(h).reshape(batch * self.num_heads, channels // self.num_heads, 3, -1)
        q, k, v = qkv.unbind(2)
        attended = torch.einsum("nqk,nck->ncq", attention_weights(q, k), v)
        return attended.reshape(h.shape)


def edm_positional_embedding(
    t: torch.Tensor, num_channels: int, max_positions: float = 10000.0, endpoint: bool = False
) -> torch.Tensor:
    """EDM's sinusoidal embedding ``[cos(t·ω_i), sin(t·ω_i)]`` with ``ω_i = max_positions^(-i/d)``.

    ``d`` is ``num_channels // 2``, minus one with ``endpoint`` (DDPM++ spans the frequencies
    from 1 down to exactly ``1/max_positions``). EDM computes ``ω`` as a float32 power, which
    differs from the float64 ``exp`` of :func:`cmbench.nets.embeddings.positional_embedding` by
    up to 3e-7 relatively: enough to show at VP's noise labels (up to 999), hence this function.
    """
    half = num_channels // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / (half - (1 if endpoint else 0))
    freqs = (1 / max_positions) ** exponents
    args = torch.outer(t, freqs.to(t.dtype))
    return torch.cat([args.cos(), args.sin()], dim=1)


class EDMPositionalEmbedding(nn.Module):
    """Module form of :func:`edm_positional_embedding` (no parameters): DDPM++ uses
    ``endpoint=True``, EDM's ADM ``endpoint=False``."""

    def __init__(self, num_channels: int, endpoint: bool):
        super().__init__()
        self.num_channels, self.endpoint = num_channels, endpoint

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return edm_positional_embedding(t, self.num_channels, endpoint=self.endpoint)


def one_hot_labels(class_labels: torch.Tensor | None, label_dim: int, batch: int, net: str) -> torch.Tensor | None:
    """Integer class indices ``[B]`` as the one-hot float vectors EDM's nets take (or ``None``),
    checked by :func:`cmbench.nets.labels.class_indices`."""
    classes = class_indices(class_labels, batch, label_dim, net)
    return None if classes is None else F.one_hot(classes, label_dim).to(torch.float32)


def check_resolution(img_resolution: int, levels: int, net: str) -> None:
    """The encoder halves the resolution ``levels - 1`` times; every level must stay integral."""
    factor = 1 << max(levels - 1, 0)
    if not isinstance(img_resolution, int) or img_resolution < 1 or img_resolution % factor:
        raise ValueError(
            f"{net}: img_resolution must be a positive integer divisible by 2**(len(channel_mult) - 1) "
            f"= {factor}, got {img_resolution!r}"
        )
