import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from cmbench.metrics.inception_score import inception_score

HARD = 1000.0  # exp(-1000) underflows to 0: softmax is exactly one-hot in float64


def _one_hot_logits(classes, k, scale=HARD):
    return scale * np.eye(k)[np.asarray(classes)]


def test_uniform_logits_give_one():
    mean, std = inception_score(np.zeros((50, 7)), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10])
def test_balanced_confident_predictions_give_k(k):
    logits = _one_hot_logits(np.arange(10 * k) % k, k, scale=30.0)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-6)


def test_splits_are_contiguous_not_shuffled():
    # Contiguous halves each hold one class (IS 1); a shuffle that mixes them gives up to 2.
    logits = _one_hot_logits([0, 0, 0, 0, 1, 1, 1, 1], 2)
    assert inception_score(logits, splits=2) == (pytest.approx(1.0), pytest.approx(0.0))
    interleaved = logits[[0, 4, 1, 5, 2, 6, 3, 7]]
    assert inception_score(interleaved, splits=2)[0] == pytest.approx(2.0)


def test_split_boundaries_are_i_times_n_over_splits():
    # N=5, splits=2: boundaries 0, 2, 5 -> [A, A] | [B, B, B], both IS 1.
    # (np.array_split would cut at 3 -> [A, A, B] | [B, B], IS > 1.)
    logits = _one_hot_logits([0, 0, 1, 1, 1], 2)
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.0)
    assert std == pytest.approx(0.0)


def test_std_uses_ddof_zero():
    # Split scores 1 ([A, A]) and 2 ([A, B]): mean 1.5, std (ddof 0) 0.5, not 0.707.
    logits = _one_hot_logits([0, 0, 0, 1], 2)
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(1.5, rel=1e-12)
    assert std == pytest.approx(0.5, rel=1e-12)


def test_matches_independent_implementation_on_random_logits():
    logits = np.random.default_rng(0).standard_normal((103, 20)) * 3
    scores = []
    for i in range(4):
        p = scipy.special.softmax(logits[i * 103 // 4 : (i + 1) * 103 // 4], axis=1)
        py = p.mean(axis=0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(row, py) for row in p])))
    mean, std = inception_score(torch.from_numpy(logits).float(), splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-6)
    assert std == pytest.approx(np.std(scores), rel=1e-4)
    assert mean > 1.5


@pytest.mark.parametrize("splits", [0, -1, 11])
def test_bad_splits_raise(splits):
    with pytest.raises(ValueError, match="splits must be"):
        inception_score(np.zeros((10, 3)), splits=splits)


def test_logits_must_be_2d():
    with pytest.raises(ValueError, match="2-D"):
        inception_score(np.zeros(10), splits=1)
