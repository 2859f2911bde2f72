"""A residual MLP for the toy zoo's 8×8 images: fast enough to train every family on a CPU.

F(x, c_noise[, class, c_noise_s]): the flattened image is projected to ``hidden`` features and
passed through ``depth`` residual blocks (LayerNorm → scale/shift from the embedding → SiLU →
Linear → SiLU → Linear). The time embedding (and CTM's separate s embedding, and a class
embedding) are summed into the conditioning vector. Same call as :class:`SmallUNet`.
"""

from __future__ import annotations

import torch
from torch import nn

from cmbench.nets.embeddings import EMBEDDINGS, TimeEmbedding


class ResidualBlock(nn.Module):
    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(emb_dim, 2 * hidden)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(emb).chunk(2, dim=1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class ToyMLP(nn.Module):
    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        hidden: int = 512,
        depth: int = 4,
        emb_dim: int = 128,
        label_dim: int = 0,
        s_embedding: bool = False,
        dropout: float = 0.0,
        embedding: str = "fourier",
    ):
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {embedding!r}; accepted: {', '.join(EMBEDDINGS)}")
        self.img_shape = (img_channels, img_resolution, img_resolution)
        self.label_dim = int(label_dim)
        self.s_embedding = bool(s_embedding)
        dim = img_channels * img_resolution**2
        self.inp = nn.Linear(dim, hidden)
        self.time_embed = TimeEmbedding(embedding, emb_dim, emb_dim)
        self.time_embed_s = TimeEmbedding(embedding, emb_dim, emb_dim) if s_embedding else None
        self.label_embed = nn.Embedding(label_dim, emb_dim) if label_dim else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, noise_labels, class_labels=None, s_noise_labels=None):
        if tuple(x.shape[1:]) != self.img_shape:
            raise ValueError(f"ToyMLP expects images of shape {self.img_shape}, got {tuple(x.shape[1:])}")
        if (class_labels is None) != (self.label_embed is None):
            raise ValueError(f"ToyMLP has label_dim {self.label_dim}: class labels are {'required' if self.label_dim else 'not accepted'}")
        if (s_noise_labels is None) == self.s_embedding:
            raise ValueError(f"ToyMLP s_embedding={self.s_embedding}: s_noise_labels are {'required' if self.s_embedding else 'not accepted'}")
        dtype = self.inp.weight.dtype
        batch = x.shape[0]
        emb = self.time_embed(noise_labels.to(dtype).reshape(-1).expand(batch))
        if self.time_embed_s is not None:
            emb = emb + self.time_embed_s(s_noise_labels.to(dtype).reshape(-1).expand(batch))
        if self.label_embed is not None:
            emb = emb + self.label_embed(class_labels)
        h = self.inp(x.to(dtype).reshape(batch, -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(x.shape).to(x.dtype)
