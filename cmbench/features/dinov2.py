"""``dinov2-vitl14``: DINOv2 ViT-L/14 features as EDM2's FD_DINOv2 computes them.

EDM2's ``DINOv2Detector`` (``calculate_metrics.py``, modelled on dgm-eval) resizes uint8 images
to 224×224, scales them to [0, 1], subtracts ImageNet's mean (0.485, 0.456, 0.406), divides by
its std (0.229, 0.224, 0.225) and takes the hub model's output, the normed CLS token (1024-d).
Two resize recipes, each its own extractor name so statistics made under one are refused under
the other:

- ``torch`` (``dinov2-vitl14``, EDM2's default): ``F.interpolate`` of the uint8 values as
  float32, bicubic with antialiasing, neither clamped nor requantised;
- ``pil`` (``dinov2-vitl14+pil-resize``, dgm-eval's own resize and EDM2's slow exact mode):
  each RGB uint8 image resized by PIL's bicubic filter, giving uint8 again.

Layers: ``dinov2`` (the CLS feature, EDM2's) and ``dinov2_patch_mean`` (the mean of the normed
patch tokens, a cmbench variant). EDM2 takes 3-channel images only; here 1-channel images are
repeated to RGB first (what converting a grey image to RGB does), other channel counts refused.

The network is :mod:`cmbench.nets.dinov2`; the weights file is the hub's
``dinov2_vitl14_pretrain.pth``, found and checked by :func:`cmbench.weights.find_weights`
(never downloaded here) and opened with ``torch.load(weights_only=True)`` (no code runs).
Computation is float32; on CUDA, TF32 is off for the duration of each call.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoints import sha256_file
from ..checkpoints.native import load_plain_state
from ..nets.dinov2 import VITL14, DINOv2Config, build_dinov2
from ..weights import DINOV2_WEIGHTS, find_weights
from .base import NetworkExtractor, check_grey_or_rgb, check_images, grey_or_rgb
from .inception import full_float32

BATCH_SIZE = 64
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZES = ("torch", "pil")
NAMES = {"torch": "dinov2-vitl14", "pil": "dinov2-vitl14+pil-resize"}
"""The extractor's name under each resize recipe (reference statistics record it)."""


def resize(images: torch.Tensor, recipe: str, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 NCHW RGB images → float32 NCHW ``size``×``size`` on the 0–255 scale, by ``recipe``.

    ``torch`` keeps bicubic's small overshoots beyond [0, 255] (EDM2 clamps nothing); ``pil``
    gives PIL's rounded and clipped uint8 values.
    """
    if recipe == "torch":
        return F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True)
    if recipe == "pil":
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        pil = [Image.fromarray(np.ascontiguousarray(image)) for image in hwc]  # RGB, uint8
        out = np.stack([np.asarray(image.resize((size, size), Image.Resampling.BICUBIC)) for image in pil])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device).float()
    raise ValueError(f"unknown resize {recipe!r}; accepted: {', '.join(RESIZES)}")


def preprocess(images: torch.Tensor, recipe: str) -> torch.Tensor:
    """uint8 NCHW images → the float32 network input: resized, /255, ImageNet-normalised."""
    x = resize(grey_or_rgb(images, "dinov2"), recipe) / 255
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


class DINOv2Extractor(NetworkExtractor):
    layers = ("dinov2", "dinov2_patch_mean")

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        resize: str = "torch",
        expected_sha256: str | None = DINOV2_WEIGHTS.sha256,
        config: DINOv2Config = VITL14,
        batch_size: int = BATCH_SIZE,
    ):
        """``weights``: the file or a folder holding it (default: searched, see :mod:`cmbench.weights`).

        ``resize``: ``torch`` or ``pil`` (see the module's docstring). ``expected_sha256`` is what
        the file must hash to (``None``: not checked). ``config``: the network's layout (the
        official ViT-L/14; tests give small ones).
        """
        if resize not in RESIZES:
            raise ValueError(f"unknown resize {resize!r}; accepted: {', '.join(RESIZES)}")
        self.resize, self.name, self.config = resize, NAMES[resize], config
        self.weights_path = find_weights(DINOV2_WEIGHTS, weights, sha256=expected_sha256)
        self._sha256 = sha256_file(self.weights_path)
        state = load_plain_state(self.weights_path, self.weights_path)
        self.net = build_dinov2(state, config, source=str(self.weights_path))
        self.batch_size = int(batch_size)

    def extract_on_device(self, images, layers):
        self.check_layers(layers)
        check_images(images)
        check_grey_or_rgb(images, self.name)
        found: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
        with torch.no_grad(), full_float32(self._device):
            for chunk in images.split(self.batch_size) if len(images) else ():
                out = self.net(preprocess(chunk.to(self._device), self.resize))
                outputs = {"dinov2": out.cls, "dinov2_patch_mean": out.patch_mean}
                for layer in layers:
                    found[layer].append(outputs[layer].float())
        dim = self.config.embed_dim
        return {layer: torch.cat(parts) if parts else torch.empty(0, dim) for layer, parts in found.items()}
