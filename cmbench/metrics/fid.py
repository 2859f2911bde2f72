"""Fréchet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule").

FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁ Σ₂)^{1/2}, the Fréchet (2-Wasserstein) distance
between Gaussians fitted to two feature sets.

Conventions (facts.md §4): statistics in float64 with the unbiased normaliser N − 1, as
pytorch-fid, the ADM evaluator and EDM's ``fid.py`` (which streams float64 sums). Mean and
scatter come from one pass of float64 symmetric rank-k updates about a shift near the mean
(:func:`_moments`). The trace of the matrix square root is computed one of two ways:

- ``"sqrtm"``: ``scipy.linalg.sqrtm(Σ₁ Σ₂)``; if the result is not finite, retry with 1e-6·I
  added to both covariances; fail if the diagonal's imaginary part exceeds 1e-3; keep the real
  part. This is the pytorch-fid / ADM evaluator convention.
- ``"eigh"``: tr (Σ₁ Σ₂)^{1/2} = Σᵢ √λᵢ with λᵢ the eigenvalues of the symmetric PSD matrix
  Rᵀ Σ₂ R (similar to Σ₁ Σ₂), R Rᵀ = Σ₁ the Cholesky factor, or where Σ₁ is singular its
  symmetric square root from ``eigh``; negative eigenvalues (round-off) clamped to 0.
  Deterministic, real, and robust to singular covariances.

Non-finite statistics (features of a model that produced NaN or inf) are refused by name rather
than turned into a number or into LAPACK's "Eigenvalues did not converge".
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import torch

FID_SQRT_METHODS = ("eigh", "sqrtm")
SQRTM_RETRY_EPS = 1e-6
SQRTM_IMAG_TOL = 1e-3


def _as_matrix(features: np.ndarray | torch.Tensor) -> np.ndarray:
    """``features`` as a 2-D numpy array in float32 or float64 (no copy when it already is one)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D]; got shape {x.shape}")
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


BLOCK_ROWS = 4096
"""Rows per block of the scatter: 64 MiB of float64 at 2048 dimensions, one BLAS call each."""
MIRROR_TILE = 64
"""Side of the square tiles in which a triangle is mirrored (a transposed tile stays in cache)."""


def _mirror_lower(lower: np.ndarray) -> np.ndarray:
    """Fill the strict upper triangle of a C-ordered square matrix from its lower one, in place,
    a tile at a time (a whole-matrix transpose strides through memory and is ten times slower)."""
    d = len(lower)
    strict = np.triu_indices(MIRROR_TILE, 1)
    for i in range(0, d, MIRROR_TILE):
        diagonal = lower[i : i + MIRROR_TILE, i : i + MIRROR_TILE]
        above = strict if len(diagonal) == MIRROR_TILE else np.triu_indices(len(diagonal), 1)
        diagonal[above] = diagonal.T[above]
        for j in range(i + MIRROR_TILE, d, MIRROR_TILE):
            lower[i : i + MIRROR_TILE, j : j + MIRROR_TILE] = lower[j : j + MIRROR_TILE, i : i + MIRROR_TILE].T
    return lower


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scatter Σ (x − μ)(x − μ)ᵀ in float64, in one pass over blocks of rows.

    Each block is converted to float64 and shifted by c, the first block's mean, in one buffer;
    its deviations are summed (a matrix-vector product) and added to the scatter about c by one
    symmetric rank-k update (BLAS ``dsyrk``, one triangle only: half a general product's work).
    Then μ = c + mean(x − c) and the scatter about μ is the scatter about c less
    N·(μ − c)(μ − c)ᵀ (BLAS ``dsyr``), a correction of the order of the first block's sampling
    error, so there is no cancellation (the shifted-data algorithm); the triangle is mirrored last."""
    n, d = x.shape
    shift = x[:BLOCK_ROWS].mean(axis=0, dtype=np.float64)
    total = np.zeros(d)
    upper = np.zeros((d, d), order="F")
    buffer = np.empty((min(n, BLOCK_ROWS), d))
    ones = np.ones(len(buffer))
    for start in range(0, n, BLOCK_ROWS):
        rows = x[start : start + BLOCK_ROWS]
        deviations = np.subtract(rows, shift, out=buffer[: len(rows)])
        # Scipy's BLAS, as syrk's: numpy's bundles its own, whose idle threads would spin against it.
        total += scipy.linalg.blas.dgemv(1.0, deviations.T, ones[: len(rows)])
        # deviations.T is Fortran-ordered [D, n] without a copy; syrk(a) adds a·aᵀ to the upper triangle.
        upper = scipy.linalg.blas.dsyrk(1.0, deviations.T, beta=1.0, c=upper, overwrite_c=True)
    offset = total / n
    upper = scipy.linalg.blas.dsyr(-float(n), offset, a=upper, overwrite_a=True)
    # The upper triangle in Fortran order is the lower one of its C-ordered transpose.
    return shift + offset, _mirror_lower(upper.T)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, normaliser N − 1) of features ``[N, D]`` (float32 features
    are converted block by block, never copied whole)."""
    x = _as_matrix(features)
    if x.shape[0] < 2:
        raise ValueError(f"feature statistics need at least 2 rows; got {x.shape[0]}")
    mu, scatter = _moments(x)
    scatter /= x.shape[0] - 1  # in place: the scatter is this call's own
    return mu, scatter


class StatsAccumulator:
    """Streaming float64 mean and covariance, chunk by chunk, mergeable across workers.

    Holds the running mean and the centred scatter matrix Σ (x − μ)(x − μ)ᵀ and combines chunks
    with the pairwise update of Chan, Golub & LeVeque (1979), which avoids the cancellation of
    the raw-moment form Σ xxᵀ − N μμᵀ while needing no feature matrix in memory.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None

    def _combine(self, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        if count == 0:
            return
        if self._mean is None:
            self.count, self._mean, self._scatter = count, mean.copy(), scatter.copy()
            return
        if mean.shape != self._mean.shape:
            raise ValueError(
                f"feature dimension mismatch: accumulator has {self._mean.shape[0]}, "
                f"new features have {mean.shape[0]}"
            )
        total = self.count + count
        delta = mean - self._mean
        self._scatter = self._scatter + scatter + np.outer(delta, delta) * (self.count * count / total)
        self._mean = self._mean + delta * (count / total)
        self.count = total

    def update(self, features: np.ndarray | torch.Tensor) -> "StatsAccumulator":
        """Add a chunk of features ``[n, D]``; returns self."""
        x = _as_matrix(features)
        if x.shape[0] == 0:
            return self
        self._combine(x.shape[0], *_moments(x))
        return self

    def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
        """Fold another accumulator's features into this one; returns self."""
        if other._mean is not None:
            self._combine(other.count, other._mean, other._scatter)
        return self

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance (normaliser N − 1) of everything added so far."""
        if self.count < 2:
            raise ValueError(f"feature statistics need at least 2 rows; got {self.count}")
        return self._mean.copy(), self._scatter / (self.count - 1)


def _check_shapes(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> None:
    for name, mu, sigma in (("1", mu1, sigma1), ("2", mu2, sigma2)):
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(
                f"statistics {name} are malformed: mu{name} has shape {mu.shape}, sigma{name} "
                f"has shape {sigma.shape}; expected [D] and [D, D]"
            )
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"feature statistics have different shapes: mu1 {mu1.shape}, sigma1 {sigma1.shape} "
            f"vs mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )


def nonfinite_text(array: np.ndarray) -> str | None:
    """What is not finite in ``array`` ("holds 3 NaN values", "holds 1 NaN and 2 infinite values"), or None."""
    if np.isfinite(array).all():
        return None
    nan = int(np.isnan(array).sum())
    inf = int(np.isinf(array).sum())
    parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} infinite"] if inf else [])
    return f"holds {' and '.join(parts)} value{'s' if nan + inf > 1 else ''} (of {array.size})"


def _check_finite(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> None:
    sides = {"1": "in cmbench's metrics the generated samples' statistics, non-finite when the model produced "
                  "NaN or inf samples", "2": "in cmbench's metrics the reference statistics"}
    for name, array in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        problem = nonfinite_text(array)
        if problem is not None:
            raise ValueError(f"cannot compute a Fréchet distance: {name} ({sides[name[-1]]}) {problem}; "
                             "it is defined for finite means and covariances only")


def _square_root_factor(sigma: np.ndarray) -> tuple[np.ndarray, bool]:
    """A matrix R with R Rᵀ = Σ, and whether it is lower triangular: the Cholesky factor (a
    tenth of an eigen-decomposition's work), or where Σ is singular or not quite positive
    definite (fewer samples than dimensions, round-off) its symmetric square root from ``eigh``,
    negative eigenvalues clamped to 0."""
    try:
        return scipy.linalg.cholesky(sigma, lower=True, check_finite=False), True
    except np.linalg.LinAlgError:
        w, v = scipy.linalg.eigh((sigma + sigma.T) / 2, check_finite=False)
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T, False


def _trace_sqrt_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Σᵢ √λᵢ over the eigenvalues of the symmetric PSD matrix Rᵀ Σ₂ R, R Rᵀ = Σ₁, which is
    similar to Σ₁ Σ₂ (R⁻¹ Σ₁ Σ₂ R); negative eigenvalues (round-off) count as 0. Scipy's BLAS and
    LAPACK throughout: numpy bundles another BLAS, whose idle threads would spin against them."""
    factor, triangular = _square_root_factor(sigma1)
    if triangular:  # Rᵀ (Σ₂ R) by two triangular products, half a general product's work each
        right = scipy.linalg.blas.dtrmm(1.0, factor, sigma2, side=1, lower=1)
        m = scipy.linalg.blas.dtrmm(1.0, factor, right, side=0, lower=1, trans_a=1)
    else:
        m = scipy.linalg.blas.dgemm(1.0, factor, scipy.linalg.blas.dgemm(1.0, sigma2, factor), trans_a=1)
    # Symmetric up to round-off (as Σ₂ is, to the last bit or nearly): its lower triangle is read.
    lam = scipy.linalg.eigvalsh(m, lower=True, check_finite=False, driver="evd")
    return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def _trace_sqrt_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_RETRY_EPS
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > SQRTM_IMAG_TOL:
            raise ValueError(
                f"sqrtm(sigma1 @ sigma2) has a diagonal imaginary part of {imag:.3g} "
                f"(> {SQRTM_IMAG_TOL}); the covariances are too ill-conditioned for method "
                f"'sqrtm' — use method 'eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    method: str = "eigh",
) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂); ``method`` picks the trace square root.
    Raises ValueError when a statistic is not finite, naming it."""
    if method not in FID_SQRT_METHODS:
        raise ValueError(
            f"unknown FID square-root method {method!r}; accepted: {', '.join(FID_SQRT_METHODS)}"
        )
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    _check_shapes(mu1, sigma1, mu2, sigma2)
    _check_finite(mu1, sigma1, mu2, sigma2)
    trace_sqrt = (_trace_sqrt_eigh if method == "eigh" else _trace_sqrt_sqrtm)(sigma1, sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
