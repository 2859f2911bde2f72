"""``inception-tf``: TF's 2015-12-05 Inception-v3 (the FID / IS / sFID network) through cmbench's port.

One pass gives ``pool`` (pool3, 2048-d: FID, KID, precision/recall), ``logits`` (the bias-free
1008-way logits: Inception Score) and ``spatial`` (ADM's sFID feature: ``mixed_6/conv``,
first 7 channels, 17·17·7 = 2023 values in TF's NHWC order). The network, the resize and the
evidence for the sFID layer are in :mod:`cmbench.nets.inception_tf`.

The weights are torch-fidelity's file, found and verified by :mod:`cmbench.weights` (never
downloaded here) and loaded with ``weights_only=True``; its sha256 is the extractor's
``weights_sha256``. Images are uint8 NCHW with 1 (repeated to RGB) or 3 channels, any size.
Computation is float32; on CUDA, TF32 is switched off for the duration of each call (cuDNN
convolutions and matmuls) and the previous settings are restored afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..nets.inception_tf import NUM_LOGITS, POOL_DIM, SPATIAL_DIM, InceptionV3TF
from ..checkpoints import sha256_file
from ..weights import INCEPTION_WEIGHTS, find_inception_weights
from .base import NetworkExtractor, check_images, grey_or_rgb
from .resize import RESIZES, resize_pil_bicubic

BATCH_SIZE = 64
LAYER_DIMS = {"pool": POOL_DIM, "logits": NUM_LOGITS, "spatial": SPATIAL_DIM}


NAMES = {"tf1_bilinear": "inception-tf", "pil_bicubic": "inception-tf+clean-resize"}
"""The extractor's name under each resize recipe: reference statistics record it, so statistics
made with one recipe are refused under the other."""


class InceptionExtractor(NetworkExtractor):
    layers = ("pool", "logits", "spatial")

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        resize: str = "tf1_bilinear",
        expected_sha256: str | None = INCEPTION_WEIGHTS.sha256,
        batch_size: int = BATCH_SIZE,
    ):
        """``weights``: the file or a folder holding it (default: searched, see :mod:`cmbench.weights`).

        ``resize``: the recipe that brings images to 299×299 (:mod:`cmbench.features.resize`).
        ``expected_sha256`` is what the file must hash to: the official file's digest, or another
        for a file written by a test (``None``: not checked).
        """
        if resize not in RESIZES:
            raise ValueError(f"unknown resize {resize!r}; accepted: {', '.join(RESIZES)}")
        self.resize, self.name = resize, NAMES[resize]
        self.weights_path = find_inception_weights(weights, sha256=expected_sha256)
        self._sha256 = sha256_file(self.weights_path)
        self.net = InceptionV3TF()
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.requires_grad_(False).eval()
        self.batch_size = int(batch_size)

    def extract_on_device(self, images, layers):
        self.check_layers(layers)
        check_images(images)
        images = grey_or_rgb(images, "inception-tf")
        found: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
        with torch.no_grad(), full_float32(self._device):
            for chunk in images.split(self.batch_size) if len(images) else ():
                if self.resize == "pil_bicubic":
                    chunk = resize_pil_bicubic(chunk)
                out = self.net(chunk.to(self._device))
                for layer in layers:
                    found[layer].append(out[layer].float())
        return {layer: torch.cat(parts) if parts else torch.empty(0, LAYER_DIMS[layer]) for layer, parts in found.items()}


@contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """Within the block, CUDA matmuls and cuDNN convolutions run in full float32 (no TF32).

    TF32 rounds inputs to 10-bit mantissas and moves features by ~1e-3, more than the
    differences between faithful ports. Uses torch's ``fp32_precision`` settings where they
    exist (torch ≥ 2.9), else the ``allow_tf32`` flags; restores the previous values.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        settings = [(torch.backends.cuda.matmul, "fp32_precision", "ieee"), (cudnn_conv, "fp32_precision", "ieee")]
    else:
        settings = [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]
    saved = [getattr(owner, attr) for owner, attr, _ in settings]
    try:
        for owner, attr, value in settings:
            setattr(owner, attr, value)
        yield
    finally:
        for (owner, attr, _), value in zip(settings, saved):
            setattr(owner, attr, value)
