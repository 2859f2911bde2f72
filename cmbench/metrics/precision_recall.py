"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved precision and recall
metric for assessing generative models"; the k-NN manifold estimate f(φ, Φ) of its §2).

Each feature set is approximated by the union of balls centred on its points, with radius the
Euclidean distance from the point to its k-th nearest neighbour in the same set, the point
itself excluded (the (k+1)-th smallest distance when its zero self-distance is counted; a point
with a duplicate can therefore have radius 0). precision is the fraction of fake points inside
(≤) at least one real ball; recall is the fraction of real points inside at least one fake ball.

As the reference implementation (and the ADM evaluator, k = 3, batches of 10000), distances are
computed block by block, so memory is bounded by ``batch_size²`` whatever the set sizes. The
ADM evaluator uses float16 distances; here float32 (default) or float64. Squared distances are
compared with squared radii, which is the same test without a square root's rounding.
"""

from __future__ import annotations

import numpy as np
import torch

DTYPES = (torch.float32, torch.float64)


def _prepare(
    features: np.ndarray | torch.Tensor, name: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features))
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array [N, D]; got shape {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=dtype)


def _check_args(k: int, batch_size: int, dtype: torch.dtype) -> None:
    if k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]`` via ‖a‖² + ‖b‖² − 2 a·b, clamped at 0."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_(min=0.0)


def _kth_sq_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"a set needs more than k = {k} points for k-NN radii; got {n}")
    radii = torch.empty(n, dtype=x.dtype, device=x.device)
    for r0 in range(0, n, batch_size):
        rows = x[r0 : r0 + batch_size]
        best = torch.empty(rows.shape[0], 0, dtype=x.dtype, device=x.device)
        for c0 in range(0, n, batch_size):
            d = _sq_distances(rows, x[c0 : c0 + batch_size])
            # The self-distance is exactly 0, not 0 up to round-off.
            lo, hi = max(r0, c0), min(r0 + rows.shape[0], c0 + d.shape[1])
            if lo < hi:
                i = torch.arange(lo, hi, device=x.device)
                d[i - r0, i - c0] = 0.0
            merged = torch.cat([best, d], dim=1)
            best = torch.topk(merged, min(k + 1, merged.shape[1]), dim=1, largest=False).values
        radii[r0 : r0 + rows.shape[0]] = best[:, k]
    return radii


def _coverage(
    points: torch.Tensor, centres: torch.Tensor, sq_radii: torch.Tensor, batch_size: int
) -> float:
    """Fraction of ``points`` within (≤) the radius of at least one of ``centres``."""
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    for r0 in range(0, points.shape[0], batch_size):
        rows = points[r0 : r0 + batch_size]
        hit = torch.zeros(rows.shape[0], dtype=torch.bool, device=points.device)
        for c0 in range(0, centres.shape[0], batch_size):
            d = _sq_distances(rows, centres[c0 : c0 + batch_size])
            hit |= (d <= sq_radii[c0 : c0 + batch_size][None, :]).any(dim=1)
        inside[r0 : r0 + rows.shape[0]] = hit
    return float(inside.double().mean())


def kth_neighbour_radii(
    features: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 10000,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set, self excluded.

    ``device=None`` computes on the CPU.
    """
    _check_args(k, batch_size, dtype)
    x = _prepare(features, "input", dtype, torch.device(device or "cpu"))
    return _kth_sq_radii(x, k, batch_size).sqrt()


def prepare_pair(real, fake, k: int, batch_size: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets as ``dtype`` tensors on ``device`` (CPU when None), after checking the
    options and that their dimensions agree."""
    _check_args(k, batch_size, dtype)
    dev = torch.device(device or "cpu")
    real_t = _prepare(real, "real", dtype, dev)
    fake_t = _prepare(fake, "fake", dtype, dev)
    if real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension: real {tuple(real_t.shape)}, "
            f"fake {tuple(fake_t.shape)}"
        )
    return real_t, fake_t


def precision_recall(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 10000,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` features ``[N, D]``; CPU when device is None."""
    real_t, fake_t = prepare_pair(real, fake, k, batch_size, dtype, device)
    real_radii = _kth_sq_radii(real_t, k, batch_size)
    fake_radii = _kth_sq_radii(fake_t, k, batch_size)
    precision = _coverage(fake_t, real_t, real_radii, batch_size)
    recall = _coverage(real_t, fake_t, fake_radii, batch_size)
    return precision, recall
