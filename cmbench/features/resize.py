"""Named resizing recipes for the Inception input (clean-fid's lesson: the resize changes FID).

- ``tf1_bilinear``: TF1's ``resize_bilinear`` to 299 inside the network (the TF FID/IS evaluators,
  ADM, torch-fidelity, clean-fid's ``legacy_tensorflow``); see :mod:`cmbench.nets.inception_tf`.
- ``pil_bicubic``: clean-fid's ``clean`` mode: each channel as a float32 PIL image (mode ``F``),
  resized to 299×299 with PIL's bicubic filter, clipped to [0, 255] and not requantised.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

RESIZES = ("tf1_bilinear", "pil_bicubic")
SIZE = 299


def resize_pil_bicubic(images: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """uint8 NCHW images → float32 NCHW ``size``×``size``, channel by channel as clean-fid's clean mode."""
    out = np.empty((images.shape[0], images.shape[1], size, size), dtype=np.float32)
    for i, image in enumerate(images.cpu().numpy()):
        for c, channel in enumerate(image):
            resized = Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), resample=Image.BICUBIC)
            out[i, c] = np.asarray(resized).clip(0, 255)
    return torch.from_numpy(out)
