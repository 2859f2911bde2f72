"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs").

IS = exp E_x KL(p(y|x) ‖ p(y)), computed per split with p(y) the split's mean prediction, and
reported as the mean and standard deviation (ddof 0) over splits.

Conventions (facts.md §4), all named options: by default the N rows are cut into ``splits``
contiguous parts with boundaries ``i·N // splits`` and no shuffling, as the original TF code
(openai/improved-gan) does; the ADM evaluator cuts fixed parts of 5000 rows (``split_size``);
torch-fidelity permutes the rows first with RandomState(2020) (``shuffle_seed``). Logits are the Inception's bias-free 1008-way fc (layer ``logits``); softmax is
taken in float64 (numpy, on the CPU: x − max − log Σ exp(x − max), as torch's log-softmax).
"""

from __future__ import annotations

import numpy as np
import torch


def _split_score(logits: np.ndarray) -> float:
    """exp of the split's mean KL(p(y|x) ‖ p(y)): Σ_c p log p − p · log p(y) per row (the second
    sum a matrix-vector product), in float64 numpy (small splits pay no torch call overheads, and
    numpy's BLAS is the one the bootstrap's other metrics keep warm), a split at a time so that no
    temporary outgrows the split; a p that underflows to 0 contributes 0 to both sums."""
    shifted = np.array(logits, dtype=np.float64)
    shifted -= shifted.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    log_p = np.subtract(shifted, np.log(total), out=shifted)  # the log-softmax
    p_y = p.mean(axis=0)
    cross = p @ np.log(np.where(p_y > 0, p_y, 1.0))  # p(y) = 0 only where every p is 0
    log_p = np.maximum(log_p, np.finfo(np.float64).min, out=log_p)  # 0·log 0 = 0
    neg_entropy = np.einsum("ij,ij->i", p, log_p)
    return float(np.exp((neg_entropy - cross).mean()))


def inception_score(
    logits: np.ndarray | torch.Tensor,
    splits: int = 10,
    *,
    split_size: int | None = None,
    shuffle_seed: int | None = None,
) -> tuple[float, float]:
    """Mean and std (ddof 0) over splits of exp(mean KL(p(y|x) ‖ p(y))).

    Splits are ``splits`` contiguous parts (boundaries ``i·N // splits``), or, with
    ``split_size``, consecutive parts of that many rows with a shorter last one (ADM's evaluator:
    5000). ``shuffle_seed`` first permutes the rows with ``RandomState(shuffle_seed)``, as
    torch-fidelity does (2020).
    """
    x = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    if x.ndim != 2:
        raise ValueError(f"logits must be a 2-D array [N, classes]; got shape {x.shape}")
    n = x.shape[0]
    if split_size is None:
        if not isinstance(splits, (int, np.integer)) or splits < 1 or splits > n:
            raise ValueError(
                f"splits must be an integer between 1 and the number of samples ({n}); got {splits!r}"
            )
        bounds = [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]
    else:
        if not isinstance(split_size, (int, np.integer)) or split_size < 1:
            raise ValueError(f"split_size must be a positive integer; got {split_size!r}")
        bounds = [(i, min(i + split_size, n)) for i in range(0, n, split_size)]
    if shuffle_seed is not None:
        x = x[np.random.RandomState(shuffle_seed).permutation(n)]
    scores = [_split_score(x[a:b]) for a, b in bounds]
    return float(np.mean(scores)), float(np.std(scores))
