"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"), as torch-fidelity.

KID is the squared maximum mean discrepancy between real and generated features under the
polynomial kernel k(x, y) = (γ·xᵀy + c₀)^degree, with γ = 1/d by default (d the feature
dimension), c₀ = 1 and degree 3. It is estimated on ``subsets`` random subsets of
``subset_size`` rows of each set, and reported as the mean and standard deviation (ddof 0) of the
per-subset estimates.

This follows torch-fidelity's ``metric_kid.py`` (itself adapted from the MMD-GAN code), with its
defaults ``kid_subsets=100``, ``kid_subset_size=1000``, ``kid_degree=3``, ``kid_gamma=None``,
``kid_coef0=1`` and ``rng_seed=2020``:

- one ``np.random.RandomState(seed)``; for every subset it first draws the generated rows
  (torch-fidelity's ``input1``), then the real rows (``input2``), each with
  ``rng.choice(n, subset_size, replace=False)``;
- the "unbiased" MMD² estimate: the kernel sums within each set with the diagonal removed,
  divided by m(m − 1), minus twice the mean of the cross kernel (its diagonal kept):
  (ΣK_XX − tr K_XX)/(m(m−1)) + (ΣK_YY − tr K_YY)/(m(m−1)) − 2·ΣK_XY/m².

Given the same features, seed and options the subsets are the same as torch-fidelity's. The
arithmetic here is float64, whereas torch-fidelity computes in its features' dtype (float32), so
values agree to float32 round-off rather than bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

TORCH_FIDELITY_SEED = 2020


def _as_rows(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array [N, D]; got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """Kernel matrix ``(gamma·x yᵀ + coef0)^degree``; ``gamma=None`` means 1/d (torch-fidelity)."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def unbiased_mmd2(k_xx, k_xy, k_yy) -> float:
    """torch-fidelity's ``mmd2(..., mmd_est="unbiased")`` for m × m kernel matrices, m ≥ 2
    (numpy arrays or torch tensors)."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def _check_options(subsets: int, subset_size: int, degree: int, gamma: float | None) -> None:
    for name, value, least in (("subsets", subsets, 1), ("subset_size", subset_size, 2), ("degree", degree, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"KID {name} must be an integer ≥ {least}; got {value!r}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"KID gamma must be positive or None (1/d); got {gamma!r}")


def kernel_inception_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    gamma: float | None = None,
    seed: int = TORCH_FIDELITY_SEED,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over random subsets, as torch-fidelity.

    ``real`` and ``fake`` are feature rows ``[N, D]``; both need at least ``subset_size`` rows.
    The kernels are computed in float64 on ``device`` (CPU when None), one subset at a time.
    """
    _check_options(subsets, subset_size, degree, gamma)
    x_real, x_fake = _as_rows(real, "real"), _as_rows(fake, "fake")
    if x_real.shape[1] != x_fake.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension: real {x_real.shape}, fake {x_fake.shape}"
        )
    n_real, n_fake = x_real.shape[0], x_fake.shape[0]
    if subset_size > min(n_real, n_fake):
        raise ValueError(
            f"KID subset_size (metric option kid_subset_size) is {subset_size} but there are "
            f"{n_real} real and {n_fake} fake feature rows; accepted: 2 ≤ subset_size ≤ "
            f"{min(n_real, n_fake)} (lower it or use more samples / reference features)"
        )
    dev = torch.device(device or "cpu")
    real_t, fake_t = torch.from_numpy(x_real).to(dev), torch.from_numpy(x_fake).to(dev)
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        f1 = fake_t[torch.from_numpy(rng.choice(n_fake, subset_size, replace=False)).to(dev)]
        f2 = real_t[torch.from_numpy(rng.choice(n_real, subset_size, replace=False)).to(dev)]
        mmds[i] = unbiased_mmd2(
            polynomial_kernel(f1, f1, degree, gamma, coef0),
            polynomial_kernel(f1, f2, degree, gamma, coef0),
            polynomial_kernel(f2, f2, degree, gamma, coef0),
        )
    return float(np.mean(mmds)), float(np.std(mmds))
