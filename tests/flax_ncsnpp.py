"""A flax.linen NCSN++ of the Consistency Models paper's CIFAR-10 configuration, for tests only.

It is the independent reference for cmbench's torch port (``cmbench.nets.ncsnpp``) and for the
flax checkpoint mapping: written from the facts of openai/consistency_models_cifar10 (score_sde's
``ncsnpp`` with ``resblock_type biggan``, ``fir`` with kernel [1, 3, 3, 1], ``skip_rescale``,
``progressive none``, ``progressive_input residual``, ``embedding_type fourier``, ``attention_type
ddpm``, GroupNorm and swish), it builds the same parameter tree, module names and numbering
included, as the official model: ``GaussianFourierProjection_0/W``, ``Dense_{0,1}``, ``Conv_0``
(input), ``ResnetBlockBigGANpp_i``, ``AttnBlockpp_i``, ``Downsample_i/Conv2d_0/{weight,bias}``
(the residual input pyramid), ``GroupNorm_0`` and ``Conv_1`` (output). Flax numbers the modules
of one class in the order they are first called, so the call order below is the layout of the
checkpoint. The FIR resampling is written with depthwise ``conv_general_dilated`` rather than
the official reshape-to-one-channel ``upfirdn_2d``, so agreement is a real check.

Inputs are NHWC, as in JAX. cmbench never imports this module (nor jax or flax).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
SKIP_DIVISOR = np.sqrt(2.0)


def _groups(channels: int) -> int:
    return min(channels // 4, 32)


def _fir_filter(gain: float) -> np.ndarray:
    """The separable 4x4 FIR kernel, normalised to sum ``gain``, flipped for a true convolution."""
    taps = np.asarray(FIR_TAPS, dtype=np.float32)
    kernel = np.outer(taps, taps)
    kernel = kernel / kernel.sum() * gain
    return kernel[::-1, ::-1].astype(np.float32)


def _depthwise(x, kernel: np.ndarray, stride: int, padding, lhs_dilation=(1, 1)):
    channels = x.shape[-1]
    weights = jnp.tile(jnp.asarray(kernel)[:, :, None, None], (1, 1, 1, channels))
    return jax.lax.conv_general_dilated(
        x, weights, window_strides=(stride, stride), padding=padding, lhs_dilation=lhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def fir_downsample(x):
    """Halve H and W: pad 1, FIR filter, keep every second pixel."""
    return _depthwise(x, _fir_filter(1.0), 2, ((1, 1), (1, 1)))


def fir_upsample(x):
    """Double H and W: zeros between pixels, pad (2, 2), FIR filter with gain 4."""
    return _depthwise(x, _fir_filter(4.0), 1, ((2, 2), (2, 2)), lhs_dilation=(2, 2))


def conv3x3(x, features: int):
    return nn.Conv(features, (3, 3), padding="SAME")(x)


def conv1x1(x, features: int):
    return nn.Conv(features, (1, 1), padding="SAME")(x)


class GaussianFourierProjection(nn.Module):
    """[sin, cos] of 2π·t·W, W a (stored) parameter of N(0, scale²) entries."""

    embedding_size: int
    scale: float

    @nn.compact
    def __call__(self, t):
        frequencies = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        angles = t[:, None] * frequencies[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NIN(nn.Module):
    """Per-pixel linear map over channels with parameters ``W`` (in, out) and ``b``."""

    features: int

    @nn.compact
    def __call__(self, x):
        weight = self.param("W", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("b", nn.initializers.zeros, (self.features,))
        return jnp.tensordot(x, weight, axes=1) + bias


class Conv2d(nn.Module):
    """StyleGAN2's fused FIR-then-stride-2 3x3 convolution (the pyramid's downsampler)."""

    features: int

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = _depthwise(x, _fir_filter(1.0), 1, ((2, 2), (2, 2)))
        x = jax.lax.conv_general_dilated(x, weight, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return x + bias


class Downsample(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return Conv2d(self.features)(x)


class ResnetBlockBigGANpp(nn.Module):
    out_ch: int | None = None
    up: bool = False
    down: bool = False

    @nn.compact
    def __call__(self, x, temb):
        channels = x.shape[-1]
        out_ch = self.out_ch or channels
        h = nn.swish(nn.GroupNorm(num_groups=_groups(channels))(x))
        if self.up:
            h, x = fir_upsample(h), fir_upsample(x)
        elif self.down:
            h, x = fir_downsample(h), fir_downsample(x)
        h = conv3x3(h, out_ch)
        h = h + nn.Dense(out_ch)(nn.swish(temb))[:, None, None, :]
        h = nn.swish(nn.GroupNorm(num_groups=_groups(out_ch))(h))
        h = conv3x3(h, out_ch)
        if channels != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch)
        return (x + h) / SKIP_DIVISOR


class AttnBlockpp(nn.Module):
    @nn.compact
    def __call__(self, x):
        batch, height, width, channels = x.shape
        h = nn.GroupNorm(num_groups=_groups(channels))(x)
        q, k, v = NIN(channels)(h), NIN(channels)(h), NIN(channels)(h)
        q = q.reshape(batch, height * width, channels)
        k = k.reshape(batch, height * width, channels)
        v = v.reshape(batch, height * width, channels)
        weights = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) * (int(channels) ** (-0.5)), axis=-1)
        h = jnp.einsum("bij,bjc->bic", weights, v).reshape(batch, height, width, channels)
        h = NIN(channels)(h)
        return (x + h) / SKIP_DIVISOR


class NCSNppCIFAR10(nn.Module):
    """F(x, 0.25·ln σ): x NHWC already scaled by c_in, t of shape [B]."""

    nf: int = 128
    ch_mult: Sequence[int] = (2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, x, t):
        nf, levels = self.nf, len(self.ch_mult)
        temb = GaussianFourierProjection(nf, self.fourier_scale)(t)
        temb = nn.Dense(4 * nf)(temb)
        temb = nn.Dense(4 * nf)(nn.swish(temb))

        pyramid = x
        skips = [conv3x3(x, nf)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = ResnetBlockBigGANpp(out_ch=nf * mult)(skips[-1], temb)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlockpp()(h)
                skips.append(h)
            if level != levels - 1:
                h = ResnetBlockBigGANpp(down=True)(skips[-1], temb)
                pyramid = Downsample(h.shape[-1])(pyramid)
                pyramid = (pyramid + h) / np.sqrt(2.0, dtype=np.float32)
                skips.append(pyramid)

        h = ResnetBlockBigGANpp()(skips[-1], temb)
        h = AttnBlockpp()(h)
        h = ResnetBlockBigGANpp()(h, temb)

        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                h = ResnetBlockBigGANpp(out_ch=nf * self.ch_mult[level])(jnp.concatenate([h, skips.pop()], -1), temb)
            if h.shape[1] in self.attn_resolutions:
                h = AttnBlockpp()(h)
            if level != 0:
                h = ResnetBlockBigGANpp(up=True)(h, temb)
        assert not skips
        h = nn.swish(nn.GroupNorm(num_groups=_groups(h.shape[-1]))(h))
        return conv3x3(h, x.shape[-1])


def randomized(params, seed: int = 0, scale: float = 0.2):
    """``params`` (arrays or ``jax.eval_shape`` shapes) with every leaf drawn at random in float32,
    so no array the official init zeroes is left out of a comparison: kernels N(0, 1/fan_in),
    biases and other vectors N(0, scale²), GroupNorm scales 1 + N(0, 0.01), the Fourier
    frequencies N(0, 16²) as in training."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = [getattr(p, "key", str(p)) for p in path]
        values = rng.standard_normal(leaf.shape).astype(np.float32)
        if names[-1] == "W" and names[-2].startswith("GaussianFourierProjection"):
            return values * 16.0
        if names[-2].startswith("GroupNorm") and names[-1] == "scale":
            return 1.0 + 0.1 * values
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
        return (values * (scale if leaf.ndim == 1 else 1.0 / math.sqrt(fan_in))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, params)
