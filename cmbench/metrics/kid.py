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

Given the same features, seed and options the subsets are the same as torch-fidelity's.

Arithmetic (``products``, metric option ``kid_products``): the inner products xᵀy are computed in
float32 by default, as torch-fidelity and clean-fid compute everything in their features' float32;
the kernel values and their sums are float64 (on Inception-like features the result is within
about 1e-7 relative of all-float64 arithmetic, which ``products="float64"`` gives). Each subset
stacks its generated and real rows into one matrix Z and takes Z Zᵀ by one symmetric rank-k
update (BLAS ``syrk``, the upper triangle: both within-set kernels and the cross kernel for two
thirds of the work of three products); the kernel values are formed and summed over exactly that
triangle, a cache-sized strip of rows at a time, in buffers every subset reuses. On a GPU it is
one product Z Zᵀ and whole-block sums.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg.blas
import torch

TORCH_FIDELITY_SEED = 2020


PRODUCTS = {"float32": torch.float32, "float64": torch.float64}
ROWS_PER_STRIP = 64  # kernel values are formed and summed a strip of rows at a time, in the L2 cache


def _as_rows(features: np.ndarray | torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    x = features.detach().cpu() if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features))
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D array [N, D]; got shape {tuple(x.shape)}")
    return x.to(dtype)


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


def _check_options(subsets: int, subset_size: int, degree: int, gamma: float | None, products: str) -> None:
    for name, value, least in (("subsets", subsets, 1), ("subset_size", subset_size, 2), ("degree", degree, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"KID {name} must be an integer ≥ {least}; got {value!r}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"KID gamma must be positive or None (1/d); got {gamma!r}")
    if products not in PRODUCTS:
        raise ValueError(f"KID products must be one of {', '.join(PRODUCTS)}; got {products!r}")


class _CpuSubsets:
    """The CPU's working memory for one KID computation, allocated once and reused by every
    subset (fresh 16 MB arrays per subset cost their page faults each time): the stacked rows Z,
    the Gram matrix's upper triangle, and two float64 strips for the kernel values."""

    def __init__(self, m: int, d: int, dtype: np.dtype) -> None:
        self.stack = np.empty((2 * m, d), dtype=dtype)
        # Fortran order: syrk fills the lower triangle of this, read transposed as the upper one in
        # C order; the strict lower part of that stays zero and is never read.
        self._lower = np.zeros((2 * m, 2 * m), dtype=dtype, order="F")
        self._kernel = np.empty((ROWS_PER_STRIP, 2 * m))
        self._square = np.empty((ROWS_PER_STRIP, 2 * m))

    def gram_upper(self, gamma: float) -> np.ndarray:
        """γ·Z Zᵀ's upper triangle (C order) by one symmetric rank-k update (BLAS ``syrk``): Zᵀ is
        Fortran-ordered [D, 2m] without a copy, and trans=1 takes its transpose times itself."""
        syrk = scipy.linalg.blas.ssyrk if self.stack.dtype == np.float32 else scipy.linalg.blas.dsyrk
        return syrk(gamma, self.stack.T, trans=1, lower=1, c=self._lower, overwrite_c=True).T

    def kernel_sum(self, gram: np.ndarray, degree: int, coef0: float) -> float:
        """Σ (g + coef0)^degree over a block of the Gram matrix, float64, a strip of rows at a time."""
        total = 0.0
        for start in range(0, len(gram), ROWS_PER_STRIP):
            rows = gram[start : start + ROWS_PER_STRIP]
            kernel = self._kernel[: len(rows), : rows.shape[1]]
            np.add(rows, coef0, out=kernel)
            if degree == 3:  # numpy's power has no fast path for cubes
                square = self._square[: len(rows), : rows.shape[1]]
                np.multiply(np.square(kernel, out=square), kernel, out=kernel)
            else:
                np.power(kernel, degree, out=kernel)
            total += float(kernel.sum())
        return total

    def triangle_sum(self, gram: np.ndarray, degree: int, coef0: float) -> float:
        """Σ (g + coef0)^degree over the upper triangle (diagonal included) of a square block:
        each strip from its first diagonal column on, less the strip's zeros below the diagonal,
        each of which the kernel made coef0^degree."""
        total = 0.0
        for start in range(0, len(gram), ROWS_PER_STRIP):
            strip = gram[start : start + ROWS_PER_STRIP, start:]
            rows = len(strip)
            total += self.kernel_sum(strip, degree, coef0) - rows * (rows - 1) / 2 * float(coef0) ** degree
        return total


def _mmd2_cpu(work: _CpuSubsets, gamma: float, m: int, degree: int, coef0: float) -> float:
    """The unbiased MMD² of the stack's first ``m`` rows (generated) against its last ``m`` (real)."""
    gram = work.gram_upper(gamma)
    within = (
        work.triangle_sum(gram[:m, :m], degree, coef0) + work.triangle_sum(gram[m:, m:], degree, coef0)
        - float(((np.diagonal(gram).astype(np.float64) + coef0) ** degree).sum())
    )
    cross = work.kernel_sum(gram[:m, m:], degree, coef0)
    return 2 * within / (m * (m - 1)) - 2.0 * cross / (m * m)


def _mmd2_torch(z: torch.Tensor, gamma: float, m: int, degree: int, coef0: float) -> float:
    """The same from stacked rows on a torch device: one product, kernel values in float64."""
    kernel = (z @ z.T).to(torch.float64).mul_(gamma).add_(coef0).pow_(degree)
    within = kernel[:m, :m].sum() + kernel[m:, m:].sum() - kernel.diagonal().sum()
    return float(within / (m * (m - 1)) - 2.0 * kernel[:m, m:].sum() / (m * m))


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
    products: str = "float32",
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over random subsets, as torch-fidelity.

    ``real`` and ``fake`` are feature rows ``[N, D]``; both need at least ``subset_size`` rows.
    The inner products are ``products`` (float32 or float64), kernel values and sums float64, on
    ``device`` (CPU when None), one subset at a time.
    """
    _check_options(subsets, subset_size, degree, gamma, products)
    dtype = PRODUCTS[products]
    x_real, x_fake = _as_rows(real, "real", dtype), _as_rows(fake, "fake", dtype)
    if x_real.shape[1] != x_fake.shape[1]:
        raise ValueError(
            f"real and fake features differ in dimension: real {tuple(x_real.shape)}, fake {tuple(x_fake.shape)}"
        )
    n_real, n_fake = x_real.shape[0], x_fake.shape[0]
    if subset_size > min(n_real, n_fake):
        raise ValueError(
            f"KID subset_size (metric option kid_subset_size) is {subset_size} but there are "
            f"{n_real} real and {n_fake} fake feature rows; accepted: 2 ≤ subset_size ≤ "
            f"{min(n_real, n_fake)} (lower it or use more samples / reference features)"
        )
    dev = torch.device(device or "cpu")
    gamma = 1.0 / x_real.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    if dev.type == "cpu":  # numpy and BLAS only: no torch threads waiting between the calls
        x_real, x_fake = x_real.numpy(), x_fake.numpy()
        work = _CpuSubsets(subset_size, x_real.shape[1], x_real.dtype)
    else:
        x_real, x_fake = x_real.to(dev), x_fake.to(dev)
    for i in range(subsets):
        generated = rng.choice(n_fake, subset_size, replace=False)
        reals = rng.choice(n_real, subset_size, replace=False)
        if dev.type == "cpu":
            np.take(x_fake, generated, axis=0, out=work.stack[:subset_size])
            np.take(x_real, reals, axis=0, out=work.stack[subset_size:])
            mmds[i] = _mmd2_cpu(work, gamma, subset_size, degree, coef0)
        else:
            z = torch.cat([x_fake[torch.from_numpy(generated).to(dev)], x_real[torch.from_numpy(reals).to(dev)]])
            mmds[i] = _mmd2_torch(z, gamma, subset_size, degree, coef0)
    return float(np.mean(mmds)), float(np.std(mmds))
