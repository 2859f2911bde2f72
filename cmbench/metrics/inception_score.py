"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs").

IS = exp E_x KL(p(y|x) ‖ p(y)), computed per split with p(y) the split's mean prediction, and
reported as the mean and standard deviation (ddof 0) over splits.

Conventions (facts.md §4), all named options: by default the N rows are cut into ``splits``
contiguous parts with boundaries ``i·N // splits`` and no shuffling, as the original TF code
(openai/improved-gan) does; the ADM evaluator cuts fixed parts of 5000 rows (``split_size``);
torch-fidelity permutes the rows first with RandomState(2020) (``shuffle_seed``). Logits are the Inception's bias-free 1008-way fc (layer ``logits``); softmax is
taken in float64.
"""

from __future__ import annotations

import numpy as np
import torch


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _split_score(log_p: np.ndarray) -> float:
    p = np.exp(log_p)
    p_y = p.mean(axis=0)
    # p·(log p − log p(y)) is taken as 0 where p underflows to 0 (so wherever p(y) is 0).
    log_p_y = np.log(np.where(p_y > 0, p_y, 1.0))
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_p_y), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


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
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    x = np.asarray(logits, dtype=np.float64)
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
    log_p = _log_softmax(x)
    scores = [_split_score(log_p[a:b]) for a, b in bounds]
    return float(np.mean(scores)), float(np.std(scores))
