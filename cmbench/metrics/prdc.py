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

from cmbench.metrics.precision_recall import _kth_sq_radii, _sq_distances, prepare_pair


def _density_coverage_counts(
    real: torch.Tensor, fake: torch.Tensor, sq_radii: torch.Tensor, batch_size: int
) -> tuple[int, torch.Tensor]:
    """(number of (fake, real) pairs with d < r(real), per-real flag "some fake is inside")."""
    pairs = 0
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for f0 in range(0, fake.shape[0], batch_size):
        rows = fake[f0 : f0 + batch_size]
        for r0 in range(0, real.shape[0], batch_size):
            inside = _sq_distances(rows, real[r0 : r0 + batch_size]) < sq_radii[r0 : r0 + batch_size][None, :]
            pairs += int(inside.sum())
            covered[r0 : r0 + inside.shape[1]] |= inside.any(dim=0)
    return pairs, covered


def density_coverage(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = 5,
    batch_size: int = 10000,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """(density, coverage) of ``fake`` against ``real`` features ``[N, D]``; CPU when device is None."""
    real_t, fake_t = prepare_pair(real, fake, k, batch_size, dtype, device)
    if fake_t.shape[0] < 1:
        raise ValueError("density/coverage need at least one fake point; got 0")
    sq_radii = _kth_sq_radii(real_t, k, batch_size)
    pairs, covered = _density_coverage_counts(real_t, fake_t, sq_radii, batch_size)
    density = pairs / (k * fake_t.shape[0])
    coverage = float(covered.double().mean())
    return density, coverage
