"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): the MMD between CLIP embeddings, as google-research/cmmd.

cmmd's ``distance.py`` computes, for embeddings X (m rows) and Y (n rows) and the Gaussian RBF
kernel k(a, b) = exp(−‖a − b‖² / (2σ²)) with σ = 10,

    CMMD = scale · ( mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) − 2 · mean_ij k(x_i, y_j) ),

scale = 1000. Every mean runs over *all* pairs, the diagonal (k = 1) included: the biased,
minimum-variance estimator MMD²_b of Gretton et al. 2012, Eq. 5 (not the unbiased U-statistic
KID uses). ‖a − b‖² is formed as ‖a‖² + ‖b‖² − 2·a·b, as there. The sets may differ in size. The
value is symmetric in X and Y; cmmd passes the reference set first.

Here the arithmetic is float64. cmmd's JAX code runs in JAX's default float32, and its kernel
means (≈ 0.99 each) lose digits in the subtraction, so the two agree only to float32 round-off:
differences of 2e-5 to 1e-4 (in CMMD's ×1000 units) on sets of 2,000–10,000 normalised 768-d
embeddings, measured against float32 transcriptions (JAX and numpy; benchmarks/feature_networks.py). The kernel sums are taken block by block,
so 30k × 30k sets need a few tens of MB rather than the 3.6 GB of one full matrix; the within-set
sums use the kernel's symmetry (each off-diagonal block counted twice).
"""

from __future__ import annotations

import numpy as np
import torch

SIGMA = 10.0
SCALE = 1000.0
BLOCK = 2048


def cmmd(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    sigma: float = SIGMA,
    scale: float = SCALE,
    device: torch.device | str | None = None,
    block: int = BLOCK,
) -> float:
    """CMMD between embedding rows ``real`` ``[m, d]`` and ``fake`` ``[n, d]`` (cmmd's ``mmd``).

    Computed in float64 on ``device`` (CPU when None), ``block`` rows at a time. Raises ValueError
    for arrays that are not 2-D, are empty, differ in width or hold NaN / infinity, and for a
    non-positive ``sigma`` or ``block``.
    """
    if not sigma > 0 or not np.isfinite(sigma):
        raise ValueError(f"CMMD sigma must be a positive number; got {sigma!r}")
    if not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 1:
        raise ValueError(f"CMMD block must be a positive integer; got {block!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    x, y = _rows(real, "real", device), _rows(fake, "fake", device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"CMMD: real and fake embeddings differ in width: {x.shape[1]} vs {y.shape[1]}")
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx = kernel_sum(x, x, gamma, block) / (len(x) * len(x))
    k_yy = kernel_sum(y, y, gamma, block) / (len(y) * len(y))
    k_xy = kernel_sum(x, y, gamma, block) / (len(x) * len(y))
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, block: int = BLOCK) -> float:
    """Σ_ij exp(−γ·(‖a_i‖² + ‖b_j‖² − 2·a_i·b_j)) over all rows of ``a`` and ``b``, block by block.

    When ``a is b`` only the blocks on and above the diagonal are computed (the others are their
    transposes).
    """
    symmetric = a is b
    a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, len(a), block):
        for j in range(i if symmetric else 0, len(b), block):
            d2 = a_sq[i:i + block, None] + b_sq[None, j:j + block] - 2.0 * (a[i:i + block] @ b[j:j + block].T)
            part = torch.exp(-gamma * d2).sum()
            total += part if not symmetric or i == j else 2.0 * part
    return float(total)


def _rows(values: np.ndarray | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        rows = values.detach().to(device=device, dtype=torch.float64)
    else:
        array = np.asarray(values)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"CMMD {name} embeddings must be numbers; got dtype {array.dtype}")
        rows = torch.from_numpy(array.astype(np.float64)).to(device)
    if rows.ndim != 2:
        raise ValueError(f"CMMD {name} embeddings must be a 2-D array [N, D]; got shape {tuple(rows.shape)}")
    if len(rows) == 0 or rows.shape[1] == 0:
        raise ValueError(f"CMMD {name} embeddings are empty (shape {tuple(rows.shape)})")
    if not torch.isfinite(rows).all():
        bad = int((~torch.isfinite(rows)).any(1).sum())
        raise ValueError(f"CMMD {name} embeddings hold NaN or infinity in {bad} of {len(rows)} rows")
    return rows
