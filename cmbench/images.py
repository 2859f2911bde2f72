"""Turning model output in [-1, 1] into uint8 images: the one quantisation function.

Two conventions exist in the reference code and they differ by half a grey level, which FID
registers (shared/reference/facts.md §2):

- ``round`` (EDM's generate.py): ``(x * 127.5 + 128).clip(0, 255).to(uint8)``, i.e.
  ``floor(127.5 * (x + 1) + 0.5)``: round half up.
- ``truncate`` (openai/consistency_models): ``((x + 1) * 127.5).clamp(0, 255).to(uint8)``, i.e.
  ``floor(127.5 * (x + 1))``.
"""

from __future__ import annotations

import torch

from .choices import QUANTISATIONS


def to_uint8(images: torch.Tensor, quantisation: str = "round") -> torch.Tensor:
    """Quantise images in [-1, 1] (any float dtype, NCHW) to uint8 with the named convention.
    uint8 images (a stored sample set) are quantised already and come back as they are."""
    if quantisation not in QUANTISATIONS:
        raise ValueError(f"unknown quantisation {quantisation!r}; accepted: {', '.join(QUANTISATIONS)}")
    if images.dtype == torch.uint8:
        return images
    if quantisation == "round":
        scaled = images.to(torch.float64) * 127.5 + 128.0
    else:
        scaled = (images.to(torch.float64) + 1.0) * 127.5
    # Clamping before the cast makes the float->uint8 conversion a plain floor for every input.
    return scaled.clamp(0, 255).floor().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images back to float32 in [-1, 1] (the grey-level centres ``v / 127.5 - 1``)."""
    return images.to(torch.float32) / 127.5 - 1.0
