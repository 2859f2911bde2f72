"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs").

IS = exp E_x KL(p(y|x) ‖ p(y)), computed per split with p(y) the split's mean prediction, and
reported as the mean and standard deviation (ddof 0) over splits.

Conventions (facts.md §4), all named options: by default the N rows are cut into ``splits``
contiguous parts with boundaries ``i·N // splits`` and no shuffling, as the original TF code
(openai/improved-gan) does; the ADM evaluator cuts fixed parts of 5000 rows (``split_size``);
torch-fidelity permutes the rows first with RandomState(2020) (``shuffle_seed``). Logits are the Inception's bias-free 1008-way fc (layer ``logits``); softmax is
taken in float64 (torch's log-softmax, on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch


def _split_score(logits: torch.Tensor) -> float:
    """exp of the split's mean KL(p(y|x) ‖ p(y)): Σ_c p log p − p · log p(y) per row (the second
    sum a matrix product), in float64, a split at a time so that no temporary outgrows the split;
    a p that underflows to 0 contributes 0 to both sums."""
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)
    p = log_p.exp()
    p_y = p.mean(dim=0)
    cross = p @ torch.where(p_y > 0, p_y, 1.0).log()  # p(y) = 0 only where every p is 0
    neg_entropy = p.mul_(log_p.clamp_(min=torch.finfo(torch.float64).min)).sum(dim=1)  # 0·log 0 = 0
    return float((neg_entropy - cross).mean().exp())


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
    x = logits.detach().cpu() if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
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
        x = x[torch.from_numpy(np.random.RandomState(shuffle_seed).permutation(n))]
    scores = [_split_score(x[a:b]) for a, b in bounds]
    return float(np.mean(scores)), float(np.std(scores))
