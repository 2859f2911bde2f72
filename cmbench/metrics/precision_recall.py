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
compared with squared radii, which is the same test without a square root's rounding. The blocks
are shared (:mod:`cmbench.metrics.neighbours`): two N × N products instead of the reference
implementation's four, the same radii and ball tests.
"""

from __future__ import annotations

import numpy as np
import torch

from cmbench.metrics.neighbours import BallTests, ball_counts, nearest_sq_distances

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
    return nearest_sq_distances(x, k, batch_size)[:, k].sqrt()


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
    real_sq_radii: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` features ``[N, D]``; CPU when device is None.

    ``real_sq_radii``: the real set's squared k-NN radii when already known (a run's reference)."""
    real_t, fake_t = prepare_pair(real, fake, k, batch_size, dtype, device)
    if real_sq_radii is None:
        real_sq_radii = nearest_sq_distances(real_t, k, batch_size)[:, k]
    fake_sq_radii = nearest_sq_distances(fake_t, k, batch_size)[:, k]
    counts = ball_counts(real_t, fake_t, BallTests(precision=(real_sq_radii, fake_sq_radii)), batch_size)
    return counts.precision, counts.recall
