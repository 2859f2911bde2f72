"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs").

IS = exp E_x KL(p(y|x) ‖ p(y)), computed per split with p(y) the split's mean prediction, and
reported as the mean and standard deviation (ddof 0) over splits.

Convention: the N rows are cut into ``splits`` contiguous parts with boundaries ``i·N // splits``
and no shuffling, as the original TF code (openai/improved-gan), the ADM evaluator and EDM do.
torch-fidelity permutes the rows first (RandomState(2020)), so its numbers differ slightly
(facts.md §4). Logits are the Inception's bias-free 1008-way fc (layer ``logits``); softmax is
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


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and std (ddof 0) over contiguous splits of exp(mean KL(p(y|x) ‖ p(y)))."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be a 2-D array [N, classes]; got shape {x.shape}")
    n = x.shape[0]
    if not isinstance(splits, (int, np.integer)) or splits < 1 or splits > n:
        raise ValueError(
            f"splits must be an integer between 1 and the number of samples ({n}); got {splits!r}"
        )
    log_p = _log_softmax(x)
    scores = [
        _split_score(log_p[i * n // splits : (i + 1) * n // splits]) for i in range(splits)
    ]
    return float(np.mean(scores)), float(np.std(scores))
