"""Extractors that need no trained network: raw pixels, and the analytic mixture's posterior.

``pixels``: ``pool`` = the image's grey levels mapped to [-1, 1] (``v/127.5 − 1``), flattened.
FID on it is the Fréchet distance in pixel space.

``gmm-posterior``: ``pool`` as ``pixels``; ``logits`` = log p(k | x), the exact posterior over the
mixture's components at σ = 0. It is the Bayes-optimal classifier of the mixture's "classes",
so the Inception Score on it measures what IS is meant to: confident and diverse class
assignments (at most the number of components).
"""

from __future__ import annotations

import hashlib

import torch

from ..images import from_uint8
from ..models.gmm import GaussianMixture
from .base import FeatureExtractor, check_images


def _pixels(images: torch.Tensor) -> torch.Tensor:
    check_images(images)
    return from_uint8(images).reshape(images.shape[0], -1)


class PixelExtractor(FeatureExtractor):
    name = "pixels"
    layers = ("pool",)

    @property
    def weights_sha256(self) -> str:
        return "none"

    def extract(self, images, layers):
        self.check_layers(layers)
        return {"pool": _pixels(images)}


class MixturePosteriorExtractor(FeatureExtractor):
    name = "gmm-posterior"
    layers = ("pool", "logits")

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture

    @property
    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        for t in (self.mixture.means, self.mixture.stds, self.mixture.weights):
            digest.update(t.detach().cpu().to(torch.float64).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def extract(self, images, layers):
        self.check_layers(layers)
        pixels = _pixels(images)
        out = {}
        if "pool" in layers:
            out["pool"] = pixels
        if "logits" in layers:
            flat = pixels.to(torch.float64).to(self.mixture.means.device)
            zero = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
            log_joint = self.mixture.component_log_densities(flat, zero)
            out["logits"] = (log_joint - torch.logsumexp(log_joint, 1, keepdim=True)).cpu()
        return out
