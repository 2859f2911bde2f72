"""Tiling a batch of uint8 images into one PNG sample grid.

The grid is what a person looks at to see whether a sampler works at all, so it is built
from the quantised uint8 images that the metrics saw (``cmbench.images.to_uint8``), never from
floats. Layout: tiles of ``H*scale x W*scale`` pixels separated by, and framed with, a
1-pixel dark line, so a grid of ``nrows x ncols`` tiles measures

    width  = ncols * (W * scale + 1) + 1
    height = nrows * (H * scale + 1) + 1

Empty slots in the last row are filled with the separator colour.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

SEPARATOR_LEVEL = 32
"""Grey level of the separator lines and empty slots: dark, but distinct from pure black."""


def image_grid_png(images: torch.Tensor | np.ndarray, ncols: int | None = None, scale: int = 1) -> bytes:
    """Tile uint8 NCHW images (C = 1 or 3) into one PNG and return its bytes.

    ``ncols`` defaults to ``ceil(sqrt(N))``; ``scale`` is an integer nearest-neighbour upscale
    of every tile (toy 8x8 images need e.g. ``scale=4`` to be visible).
    """
    array = _uint8_nchw(images)
    count, channels, height, width = array.shape
    ncols = math.ceil(math.sqrt(count)) if ncols is None else _positive_int(ncols, "ncols")
    scale = _positive_int(scale, "scale")
    nrows = math.ceil(count / ncols)

    if scale > 1:
        array = array.repeat(scale, axis=2).repeat(scale, axis=3)
    tile_h, tile_w = height * scale, width * scale
    canvas = np.full(
        (nrows * (tile_h + 1) + 1, ncols * (tile_w + 1) + 1, channels), SEPARATOR_LEVEL, dtype=np.uint8
    )
    for index, image in enumerate(array):
        row, col = divmod(index, ncols)
        top, left = 1 + row * (tile_h + 1), 1 + col * (tile_w + 1)
        canvas[top : top + tile_h, left : left + tile_w] = image.transpose(1, 2, 0)

    picture = Image.fromarray(canvas[:, :, 0] if channels == 1 else canvas)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _uint8_nchw(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Check that ``images`` are uint8 NCHW with 1 or 3 channels and return them as numpy."""
    if isinstance(images, torch.Tensor):
        dtype_name = str(images.dtype).removeprefix("torch.")
        if images.dtype != torch.uint8:
            raise TypeError(_dtype_message(dtype_name))
        array = images.detach().cpu().numpy()
    else:
        array = np.asarray(images)
        if array.dtype != np.uint8:
            raise TypeError(_dtype_message(str(array.dtype)))
    if array.ndim != 4:
        raise ValueError(f"image_grid_png expects NCHW images (4 dimensions), got shape {tuple(array.shape)}")
    if array.shape[1] not in (1, 3):
        raise ValueError(
            f"image_grid_png expects 1 (grey) or 3 (RGB) channels in dimension 1 (NCHW), "
            f"got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0:
        raise ValueError("image_grid_png got no images (N = 0)")
    return array


def _dtype_message(dtype_name: str) -> str:
    return (
        f"image_grid_png expects uint8 images, got {dtype_name}; "
        "quantise model output first with cmbench.images.to_uint8"
    )


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
