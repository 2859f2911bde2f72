"""Density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
generative models"; the reference implementation is the ``prdc`` package).

Only the real set gets k-NN balls: r_k(X_i) is the Euclidean distance from real point X_i to its
k-th nearest real neighbour, itself excluded (the same radius as precision/recall, k = 5 by
default). With N real points X and M fake points Y,

- density  = 1/(k·M) · Σ_j Σ_i 1[d(Y_j, X_i) < r_k(X_i)] (how many real balls hold each fake
  point, on average, over k; ≈ 1 when the two distributions agree, and unbounded above);
- coverage = 1/N · Σ_i 1[min_j d(Y_j, X_i) < r_k(X_i)] (the fraction of real balls holding at
  least one fake point).

Both use a strict "<", as ``prdc`` does (a point exactly on a ball's boundary is outside; unlike
precision/recall's "≤"). Distances are computed in blocks of ``batch_size`` rows, so memory is
bounded by ``batch_size²`` whatever the set sizes; squared distances are compared with squared
radii.
"""

from __future__ import annotations

import numpy as np
import torch

from cmbench.metrics.neighbours import BallTests, ball_counts, nearest_sq_distances
from cmbench.metrics.precision_recall import prepare_pair


def density_coverage(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 5,
    batch_size: int = 10000,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    real_sq_radii: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(density, coverage) of ``fake`` against ``real`` features ``[N, D]``; CPU when device is None.

    ``real_sq_radii``: the real set's squared k-NN radii when already known (a run's reference)."""
    real_t, fake_t = prepare_pair(real, fake, k, batch_size, dtype, device)
    if fake_t.shape[0] < 1:
        raise ValueError("density/coverage need at least one fake point; got 0")
    if real_sq_radii is None:
        real_sq_radii = nearest_sq_distances(real_t, k, batch_size)[:, k]
    counts = ball_counts(real_t, fake_t, BallTests(density=real_sq_radii), batch_size)
    return counts.density_pairs / (k * fake_t.shape[0]), counts.coverage
