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
thirds of the work of three products).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg.blas
import torch

TORCH_FIDELITY_SEED = 2020


PRODUCTS = {"float32": torch.float32, "float64": torch.float64}
ROWS_PER_CHUNK = 256  # kernel values are formed and summed a cache-sized strip of rows at a time


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


def _gram_upper(z: torch.Tensor | np.ndarray, gamma: float, out: np.ndarray | None = None) -> torch.Tensor | np.ndarray:
    """γ·Z Zᵀ with its strict lower triangle zero (C-contiguous), in Z's dtype: from BLAS ``syrk``
    for a numpy array (the CPU), from a matrix product on Z's device for a tensor.

    ``out`` (CPU): a Fortran-ordered zero matrix of the right size and dtype, or one this function
    returned before: ``syrk`` writes only its lower triangle, so the rest stays zero and the next
    subset reuses it without allocating or clearing."""
    if isinstance(z, torch.Tensor):
        return torch.triu(z @ z.T).mul_(gamma)
    syrk = scipy.linalg.blas.ssyrk if z.dtype == np.float32 else scipy.linalg.blas.dsyrk
    lower = np.zeros((len(z), len(z)), dtype=z.dtype, order="F") if out is None else out.T
    # z.T is Fortran-ordered [D, 2m] without a copy; trans=1 gives its transpose times itself, Z Zᵀ,
    # whose lower triangle (Fortran order) read transposed is the upper one in C order.
    return syrk(gamma, z.T, trans=1, lower=1, c=lower, overwrite_c=True).T


def _kernel_sums(upper: torch.Tensor | np.ndarray, m: int, degree: int, coef0: float) -> tuple[float, float, float, float]:
    """Sums of (g + coef0)^degree over the blocks of the Gram matrix's upper triangle: generated ×
    generated, real × real, generated × real, and the diagonal; float64.

    On the CPU in numpy, a strip of ``ROWS_PER_CHUNK`` rows at a time into one float64 buffer
    (single-threaded, so no thread waits on a busy machine); elsewhere in torch, whole blocks."""
    if isinstance(upper, torch.Tensor):
        kernel = upper.to(torch.float64).add_(coef0).pow_(degree)
        sums = (kernel[:m, :m].sum(), kernel[m:, m:].sum(), kernel[:m, m:].sum(), kernel.diagonal().sum())
        return tuple(float(v) for v in sums)
    buffer = np.empty((ROWS_PER_CHUNK, upper.shape[1]), dtype=np.float64)

    def strip_sums(rows: np.ndarray, split: int) -> tuple[float, float]:
        kernel = buffer[: len(rows), : rows.shape[1]]
        np.add(rows, coef0, out=kernel)
        if degree == 3:  # numpy's power has no fast path for cubes
            np.multiply(np.square(kernel), kernel, out=kernel)
        else:
            np.power(kernel, degree, out=kernel)
        return float(kernel[:, :split].sum()), float(kernel[:, split:].sum())

    xx = yy = xy = 0.0
    for start in range(0, m, ROWS_PER_CHUNK):
        left, right = strip_sums(upper[start : min(start + ROWS_PER_CHUNK, m)], m)
        xx, xy = xx + left, xy + right
    for start in range(m, 2 * m, ROWS_PER_CHUNK):
        yy += strip_sums(upper[start : min(start + ROWS_PER_CHUNK, 2 * m), m:], m)[0]
    diagonal = float(((np.diagonal(upper).astype(np.float64) + coef0) ** degree).sum())
    return xx, yy, xy, diagonal


def _mmd2_of_stack(upper: torch.Tensor | np.ndarray, m: int, degree: int, coef0: float) -> float:
    """The unbiased MMD² of the first ``m`` rows (generated) against the last ``m`` (real) from
    their Gram matrix's upper triangle. The zeros below the diagonal each become coef0^degree
    under the kernel, a known amount taken off the within-set sums."""
    xx, yy, xy, diagonal = _kernel_sums(upper, m, degree, coef0)
    below = m * (m - 1) / 2 * float(coef0) ** degree
    off_diagonal = 2 * (xx + yy - diagonal - 2 * below)
    return off_diagonal / (m * (m - 1)) - 2.0 * xy / (m * m)


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
    if dev.type == "cpu":  # numpy and BLAS only: no torch threads waiting between the calls
        x_real, x_fake = x_real.numpy(), x_fake.numpy()
        stack = lambda generated, reals: np.concatenate([x_fake[generated], x_real[reals]])  # noqa: E731
    else:
        x_real, x_fake = x_real.to(dev), x_fake.to(dev)
        stack = lambda generated, reals: torch.cat([x_fake[torch.from_numpy(generated).to(dev)],  # noqa: E731
                                                    x_real[torch.from_numpy(reals).to(dev)]])
    gamma = 1.0 / x_real.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    gram = None
    for i in range(subsets):
        generated = rng.choice(n_fake, subset_size, replace=False)
        reals = rng.choice(n_real, subset_size, replace=False)
        gram = _gram_upper(stack(generated, reals), gamma, out=gram if dev.type == "cpu" else None)
        mmds[i] = _mmd2_of_stack(gram, subset_size, degree, coef0)
    return float(np.mean(mmds)), float(np.std(mmds))
