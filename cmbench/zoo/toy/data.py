"""The toy dataset: scikit-learn's bundled handwritten digits (UCI ML, 1,797 images of 8×8).

Why these: a real image dataset with class labels that installs with a declared dependency
(scikit-learn ships it inside the wheel, no download), small enough that every family trains on
two CPU cores, and structured enough that sample quality visibly depends on the sampler.

The originals have 17 grey levels (0..16); they become uint8 by ``round(v · 255 / 16)``, which
puts them on the same 0..255 scale as generated images. The split is a fixed permutation
(seed 0): 1,500 training images and 297 held-out test images.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

NUM_TRAIN = 1500
SPLITS = ("train", "test", "all")
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], digits.target[order].astype(np.int64)


def load_toy(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N, 1, 8, 8]`` and int64 labels ``[N]`` of a split (train, test or all)."""
    if split not in SPLITS:
        raise ValueError(f"unknown toy split {split!r}; accepted: {', '.join(SPLITS)}")
    images, labels = _digits()
    part = {"train": slice(0, NUM_TRAIN), "test": slice(NUM_TRAIN, None), "all": slice(None)}[split]
    return torch.from_numpy(images[part].copy()), torch.from_numpy(labels[part].copy())
