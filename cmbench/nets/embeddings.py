"""Embeddings of scalar noise labels (the preconditioned time input c_noise).

Two conventions occur in the checkpoints cmbench evaluates (reference/facts.md §1):

- positional: the sinusoidal embedding of the Transformer, as ADM uses it for openai's CM and
  CTM nets: frequencies ``max_period ** (-i / half)``, output ordered ``[cos, sin]``.
- fourier: random Fourier features (Tancik et al. 2020) with fixed Gaussian frequencies of
  standard deviation ``scale``, as the NCSN++ / SongUNet nets use: ``[cos(2π f t), sin(2π f t)]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def positional_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, freq_dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·ω_i), sin(t·ω_i)]`` with ``ω_i = max_period^(-i/half)``.

    ``t`` has shape ``[B]``; the result has shape ``[B, dim]`` in ``t``'s dtype. An odd ``dim``
    gets a trailing zero column. ``freq_dtype`` is the precision the frequencies are computed in
    before the cast to ``t``'s dtype: ADM computes them in float32, and at openai's time inputs
    (|250·ln σ| up to 1550) the last-bit difference moves the arguments by up to 1e-4.
    """
    if t.ndim != 1:
        raise ValueError(f"positional_embedding expects noise labels of shape [B], got {tuple(t.shape)}")
    half = dim // 2
    exponents = torch.arange(half, dtype=freq_dtype, device=t.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents).to(t.dtype)
    args = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class PositionalEmbedding(nn.Module):
    """Module form of :func:`positional_embedding` (no parameters)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim = int(dim)
        self.max_period = float(max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return positional_embedding(t, self.dim, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}"


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2π f t), sin(2π f t)]``, ``f ~ N(0, scale²)`` fixed.

    The frequencies are a persistent buffer, so a checkpoint carries them; they are drawn from
    a private generator seeded with ``seed`` so that construction touches no global RNG.
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierEmbedding needs an even dim, got {dim}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1:
            raise ValueError(f"FourierEmbedding expects noise labels of shape [B], got {tuple(t.shape)}")
        args = t[:, None] * (2 * math.pi * self.freqs.to(t.dtype))[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


EMBEDDINGS = ("positional", "fourier")


def make_embedding(kind: str, dim: int) -> nn.Module:
    """The embedding module named ``kind`` (one of :data:`EMBEDDINGS`)."""
    if kind == "positional":
        return PositionalEmbedding(dim)
    if kind == "fourier":
        return FourierEmbedding(dim)
    raise ValueError(f"unknown embedding {kind!r}; accepted: {', '.join(EMBEDDINGS)}")


class TimeEmbedding(nn.Module):
    """``Linear → SiLU → Linear`` over an embedding of a scalar noise label."""

    def __init__(self, kind: str, in_dim: int, emb_dim: int):
        super().__init__()
        self.embed = make_embedding(kind, in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(t))
