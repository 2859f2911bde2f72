"""Full-reference image metrics for zero-shot editing rows (inpainting, colorization,
super-resolution): PSNR and SSIM of each output image against its ground truth.

Both take uint8 NCHW images (torch tensors or numpy arrays, C = 1 or 3) on the [0, 1] scale,
i.e. value/255 with data range 1, and return one float64 number per image; averaging (and what to
do with an infinite PSNR) is the caller's choice.

SSIM is Wang et al. 2004 ("Image quality assessment: from error visibility to structural
similarity", IEEE TIP 13(4)) as in their reference code: an 11-tap Gaussian window with σ = 1.5
(normalised to sum 1), population (weighted) variances and covariance, C1 = (0.01·L)²,
C2 = (0.03·L)² with L = 1, the SSIM map kept only where the window lies inside the image
('valid', no padding), averaged over positions and then over channels. That is what
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`` computes: its Gaussian is truncated at 3.5σ, which
gives 11 taps for σ = 1.5; it filters with reflected borders but then crops the window radius from
every side of the map, which leaves exactly the valid positions. Per channel it is computed
separately and the channel means are averaged, as here. For images smaller than the window the
window shrinks to the largest odd size ≤ min(H, W), same σ (:func:`ssim_window`); scikit-image
has no keyword for that (its truncation is fixed), it refuses images smaller than 11 pixels.
"""

from __future__ import annotations

import numpy as np
import torch

PSNR_CONVENTION = {
    "data_range": 1.0,
    "scale": "uint8 / 255",
    "reduction": "mean over C·H·W per image, then per-image dB",
}

SSIM_CONVENTION = {
    "window": 11,
    "sigma": 1.5,
    "k1": 0.01,
    "k2": 0.03,
    "covariance": "population",
    "border": "valid",
    "data_range": 1.0,
    "reduction": "mean over valid positions, then over channels",
}

_CHUNK_VALUES = 1 << 22  # values per image chunk, bounding the float64 working memory


def _as_images(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array of uint8 NCHW images; got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8 images (0..255); got dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D [N, C, H, W]; got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels in dim 1 (NCHW); got shape {tuple(x.shape)}")
    return x


def _pair(output, truth) -> tuple[torch.Tensor, torch.Tensor]:
    output, truth = _as_images(output, "output"), _as_images(truth, "truth")
    if output.shape != truth.shape:
        shapes = f"{tuple(output.shape)} and {tuple(truth.shape)}"
        raise ValueError(f"output and truth must have the same shape [N, C, H, W]; got {shapes}")
    return output, truth.to(output.device)


def _chunk(images: torch.Tensor) -> int:
    return max(1, _CHUNK_VALUES // images[0].numel()) if len(images) else 1


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64) / 255.0


def psnr(output, truth) -> np.ndarray:
    """Per-image PSNR in dB, 10·log10(1 / MSE) with the MSE over all C·H·W values on [0, 1].

    An image equal to its truth has MSE 0 and gives +inf; the caller decides how to report it."""
    output, truth = _pair(output, truth)
    chunk = _chunk(output)
    mse = [(_unit(x) - _unit(y)).square().mean(dim=(1, 2, 3)) for x, y in zip(output.split(chunk), truth.split(chunk))]
    mse = torch.cat(mse).cpu().numpy() if mse else np.zeros(0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim_window(height: int, width: int, window: int = 11) -> int:
    """The window SSIM uses for height × width images: ``window``, or the largest odd size
    ≤ min(height, width) when a side is smaller."""
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 1 or window % 2 == 0:
        raise ValueError(f"SSIM window must be a positive odd integer; got {window!r}")
    side = min(int(height), int(width))
    if side < 1:
        raise ValueError(f"SSIM needs images of at least 1×1 pixels; got {height}×{width}")
    return int(min(window, side if side % 2 else side - 1))


def _valid_filter(taps: torch.Tensor, length: int) -> torch.Tensor:
    """[length, length − size + 1] banded matrix M with M[i + j, i] = taps[j], so ``x @ M`` is the
    'valid' correlation of x's last axis with the taps: the separable filter as a matmul, which runs
    on BLAS, several times faster than float64 conv2d on CPU."""
    m = torch.zeros(length, length - taps.numel() + 1, dtype=taps.dtype)
    for j, tap in enumerate(taps):
        m.diagonal(-j).fill_(tap)
    return m


def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _ssim_planes(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, c1: float, c2: float):
    """Mean SSIM of each [P, H, W] plane pair; ``rows``/``cols`` are the :func:`_valid_filter`
    matrices for H and W."""
    stats = torch.stack([x, y, x * x, y * y, x * y])
    mx, my, mxx, myy, mxy = rows.T @ (stats @ cols)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    ssim_map = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(1, 2))


def ssim(output, truth, *, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004) on [0, 1] images: Gaussian ``window`` × ``window``
    (std ``sigma``), population statistics, 'valid' positions, mean over positions then
    channels. Images smaller than the window use :func:`ssim_window`'s size."""
    output, truth = _pair(output, truth)
    if not sigma > 0:
        raise ValueError(f"SSIM sigma must be positive; got {sigma!r}")
    if not (k1 > 0 and k2 > 0):
        raise ValueError(f"SSIM k1 and k2 must be positive; got k1={k1!r}, k2={k2!r}")
    n, c, h, w = output.shape
    taps = _gaussian_taps(ssim_window(h, w, window), float(sigma))
    rows, cols = (_valid_filter(taps, length).to(output.device) for length in (h, w))
    c1, c2 = k1**2, k2**2  # (k·L)², L = 1
    chunk = _chunk(output)
    means = [
        _ssim_planes(_unit(x).reshape(-1, h, w), _unit(y).reshape(-1, h, w), rows, cols, c1, c2)
        for x, y in zip(output.split(chunk), truth.split(chunk))
    ]
    if not means:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(means).view(n, c).mean(dim=1).cpu().numpy()
