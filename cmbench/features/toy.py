"""``toy-classifier``: the toy world's Inception — a small CNN trained on the 8×8 digits.

``pool`` is its penultimate layer (``feature_dim`` wide; FID, KID, precision/recall) and
``logits`` its 10 class logits (Inception Score). The weights come from a cmbench native
checkpoint (loaded with ``weights_only=True``, so no code runs); the file's sha256 is the
extractor's ``weights_sha256``, so reference statistics made with other weights are refused.
"""

from __future__ import annotations

import os

import torch

from ..checkpoints.native import load_native
from ..images import from_uint8
from .base import NetworkExtractor, check_images

BATCH_SIZE = 4096


class ToyClassifierExtractor(NetworkExtractor):
    name = "toy-classifier"
    layers = ("pool", "logits")

    def __init__(self, checkpoint: str | os.PathLike):
        ckpt = load_native(checkpoint)
        if not hasattr(ckpt.net, "features"):
            raise ValueError(
                f"{ckpt.path}: holds a {ckpt.arch!r} network (family {ckpt.family!r}); the "
                "toy-classifier extractor needs a classifier with a features(x) -> (pool, logits) "
                "method, such as cmbench.zoo.toy.classifier writes"
            )
        self.net = ckpt.net.eval()
        self.checkpoint = ckpt.path
        self._sha256 = ckpt.sha256

    def extract_on_device(self, images, layers):
        self.check_layers(layers)
        check_images(images)
        pools, logits = [], []
        with torch.no_grad():
            for chunk in images.split(BATCH_SIZE):
                pool, logit = self.net.features(from_uint8(chunk.to(self._device)))
                pools.append(pool.float())
                logits.append(logit.float())
        found = {"pool": pools, "logits": logits}
        return {layer: torch.cat(found[layer]) for layer in layers}
