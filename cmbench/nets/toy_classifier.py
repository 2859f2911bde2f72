"""A small CNN classifier for the toy world's 8×8 digits: the toy stand-in for Inception.

conv3×3 → SiLU → conv3×3 (stride 2) → SiLU → flatten → Linear → SiLU gives the ``pool``
feature (``feature_dim`` wide, the penultimate layer, as Inception's pool3 is for FID); a last
Linear gives the class ``logits`` (for the Inception Score). Input is float in [-1, 1], as
:func:`cmbench.images.from_uint8` returns.
"""

from __future__ import annotations

import torch
from torch import nn


class ToyClassifier(nn.Module):
    def __init__(
        self,
        img_resolution: int = 8,
        img_channels: int = 1,
        width: int = 32,
        feature_dim: int = 64,
        num_classes: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        if img_resolution % 2:
            raise ValueError(f"ToyClassifier needs an even img_resolution (it downsamples by 2), got {img_resolution}")
        self.img_shape = (img_channels, img_resolution, img_resolution)
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        half = img_resolution // 2
        self.body = nn.Sequential(
            nn.Conv2d(img_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * half * half, feature_dim),
            nn.SiLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``pool`` ``[N, feature_dim]``, ``logits`` ``[N, num_classes]``) of images ``x`` in [-1, 1]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.img_shape:
            raise ValueError(f"ToyClassifier expects images of shape [N, {', '.join(map(str, self.img_shape))}], got {tuple(x.shape)}")
        pool = self.body(x)
        return pool, self.head(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, num_classes]`` of images ``x`` in [-1, 1]."""
        return self.features(x)[1]
