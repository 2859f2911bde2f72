"""``clip-vitl14-336``: the CLIP image embedding CMMD compares (Jayasumana et al. 2024, google-research/cmmd).

One layer, ``clip``: OpenAI's CLIP ViT-L/14@336px image embedding (768-d), divided by its L2
norm, from uint8 NCHW images with 1 (repeated to RGB) or 3 channels of any size. The steps are
those of cmmd's ``io_util.py`` and ``embedding.py``:

1. each image, as an 8-bit PIL image, is cropped to its central square (side min(h, w), top-left
   corner ((h − side) // 2, (w − side) // 2)) and resized to 336×336 with PIL's bicubic filter
   (antialiased when shrinking; PIL's 8-bit arithmetic, so the result is uint8 again). An image
   already 336×336 is left as it is (PIL's resize returns a copy);
2. float32, divided by 255 (cmmd checks the result lies in [0, 1]);
3. cmmd's embedding model resizes again to 336 (``jax.image.resize``, bicubic): on a 336×336
   image that is the identity (the cubic kernel is 1 at 0 and 0 at ±1, ±2), so it is not done here;
4. ``(x − mean) / std`` with CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std
   (0.26862954, 0.26130258, 0.27577711), in float32;
5. the image tower (:mod:`cmbench.nets.clip_vision`), then ``x / ‖x‖₂``.

The weights are Hugging Face's ``openai/clip-vit-large-patch14-336`` file, found and verified by
:mod:`cmbench.weights` (never downloaded here) and read without executing code; its sha256 is the
extractor's ``weights_sha256``. cmmd itself runs scenic's Flax port on OpenAI's original
``ViT-L-14-336px.pt``; HF's file is a conversion of the same weights. Computation is float32;
on CUDA with TF32 off (:func:`cmbench.features.inception.full_float32`).

Not reproduced: cmmd reads image files itself (sorted names, JPEG decoding) and drops the last
``count % batch_size`` images of each directory; cmbench embeds every image it is given.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..checkpoints import sha256_file
from ..nets.clip_vision import VITL14_336, CLIPVisionConfig, load_clip_vision
from ..weights import CLIP_WEIGHTS, find_weights
from .base import NetworkExtractor, check_grey_or_rgb, check_images, grey_or_rgb
from .inception import full_float32

BATCH_SIZE = 64
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def crop_and_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW (C = 1 or 3) → uint8 ``[N, C, size, size]``: cmmd's central square crop and PIL
    bicubic resize of each 8-bit image (step 1 of the module docstring)."""
    out = np.empty((images.shape[0], images.shape[1], size, size), dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        h, w = image.shape[1:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        pil = pil.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC)
        resized = np.asarray(pil)
        out[i] = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return torch.from_numpy(out)


def normalise_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW RGB → float32 ``(x/255 − mean) / std`` (steps 2 and 4), on the images' device."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class CLIPExtractor(NetworkExtractor):
    name = "clip-vitl14-336"
    layers = ("clip",)

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        expected_sha256: str | None = CLIP_WEIGHTS.sha256,
        config: CLIPVisionConfig = VITL14_336,
        batch_size: int = BATCH_SIZE,
    ):
        """``weights``: HF's ``pytorch_model.bin`` or a folder holding it (default: searched, see
        :mod:`cmbench.weights`). ``expected_sha256``: what the file must hash to (``None``: not
        checked); a ``.safetensors`` conversion loads as well, given its own digest (or ``None``),
        since the published digest is the ``.bin`` file's. ``config``: the tower's shape (tests use
        small ones).
        """
        self.weights_path = find_weights(CLIP_WEIGHTS, weights, sha256=expected_sha256)
        self._sha256 = sha256_file(self.weights_path)
        self.config = config
        self.net = load_clip_vision(self.weights_path, config)
        self.batch_size = int(batch_size)

    def extract_on_device(self, images, layers):
        self.check_layers(layers)
        check_images(images)
        check_grey_or_rgb(images, self.name)
        parts = []
        with torch.no_grad(), full_float32(self._device):
            for chunk in images.split(self.batch_size) if len(images) else ():
                resized = crop_and_resize(chunk, self.config.image_size).to(self._device)
                chunk = grey_or_rgb(resized, self.name)  # grey repeated after the resize, as cmmd does
                embedding = self.net(normalise_pixels(chunk))
                parts.append((embedding / torch.linalg.vector_norm(embedding, dim=-1, keepdim=True)).float())
        found = torch.cat(parts) if parts else torch.empty(0, self.config.projection_dim)
        return {layer: found for layer in layers}
