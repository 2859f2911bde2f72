"""cmbench's metrics against torch-fidelity's and clean-fid's own functions on the same features.

Both libraries are imported without torchvision (:mod:`cmbench.reference_impls`); no network, no
Inception weights: the features are random, shaped like Inception's (pool3 2048-d, 1008 logits)
but fewer, so the tests stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmbench.metrics import fid as cm_fid
from cmbench.metrics.inception_score import inception_score
from cmbench.metrics.kid import kernel_inception_distance
from cmbench.metrics.prdc import density_coverage
from cmbench.metrics.precision_recall import precision_recall
from cmbench.reference_impls import import_reference

RELATIVE = 1e-6


@pytest.fixture(scope="module")
def tf_metrics():
    return {name: import_reference(f"torch_fidelity.metric_{name}") for name in ("fid", "isc", "kid")}


@pytest.fixture(scope="module")
def cleanfid():
    return import_reference("cleanfid.fid")


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    dim = 256  # wide enough for a realistic covariance, small enough for a fast sqrtm
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    real = (rng.normal(size=(3000, dim)) @ mix).astype(np.float32)
    fake = (rng.normal(0.05, 1.1, size=(2500, dim)) @ mix).astype(np.float32)
    return real, fake


def test_fid_matches_torch_fidelity_and_clean_fid(features, tf_metrics, cleanfid):
    real, fake = features
    mu1, sigma1 = cm_fid.feature_statistics(fake)
    mu2, sigma2 = cm_fid.feature_statistics(real)
    ours = {m: cm_fid.frechet_distance(mu1, sigma1, mu2, sigma2, m) for m in cm_fid.FID_SQRT_METHODS}

    tf_stats = [tf_metrics["fid"].fid_features_to_statistics(torch.from_numpy(x).double()) for x in (fake, real)]
    theirs_tf = tf_metrics["fid"].fid_statistics_to_metric(*tf_stats, verbose=False)["frechet_inception_distance"]
    theirs_cf = float(cleanfid.frechet_distance(mu1, sigma1, mu2, sigma2))
    # The statistics themselves agree (float64, covariance normalised by N − 1).
    np.testing.assert_allclose(mu1, tf_stats[0]["mu"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(sigma1, tf_stats[0]["sigma"], rtol=0, atol=1e-12)
    for value in ours.values():
        assert value == pytest.approx(theirs_tf, rel=RELATIVE)
        assert value == pytest.approx(theirs_cf, rel=RELATIVE)


def test_inception_score_matches_torch_fidelity_under_its_shuffle(features, tf_metrics):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(5000, 1008))
    theirs = tf_metrics["isc"].isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    mean, std = inception_score(logits, splits=10, shuffle_seed=2020)
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=RELATIVE)
    assert std == pytest.approx(theirs["inception_score_std"], rel=RELATIVE)
    unshuffled = tf_metrics["isc"].isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    assert inception_score(logits, splits=10)[0] == pytest.approx(unshuffled["inception_score_mean"], rel=RELATIVE)


def test_kid_matches_torch_fidelity(features, tf_metrics):
    real, fake = features
    kwargs = {"kid_subsets": 20, "kid_subset_size": 500, "kid_kernel": "poly", "kid_kernel_poly_degree": 3,
              "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1, "rng_seed": 2020, "verbose": False}
    # In float64 on both sides (torch-fidelity computes in its features' dtype), so what is
    # compared is the subsets and the estimator, not float32 round-off.
    theirs = tf_metrics["kid"].kid_features_to_metric(torch.from_numpy(fake).double(), torch.from_numpy(real).double(), **kwargs)
    mean, std = kernel_inception_distance(real, fake, subsets=20, subset_size=500)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=RELATIVE)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=RELATIVE)


def test_kid_matches_clean_fid_on_the_same_subsets(features, cleanfid):
    """clean-fid draws its subsets from the global numpy RNG (real rows first); seeded the same
    way, cmbench's unbiased MMD² over those subsets gives its value."""
    real, fake = features
    np.random.seed(7)
    theirs = cleanfid.kernel_distance(fake.astype(np.float64), real.astype(np.float64), num_subsets=5, max_subset_size=400)
    np.random.seed(7)
    from cmbench.metrics.kid import polynomial_kernel, unbiased_mmd2

    estimates = []
    for _ in range(5):
        x = real[np.random.choice(len(real), 400, replace=False)].astype(np.float64)
        y = fake[np.random.choice(len(fake), 400, replace=False)].astype(np.float64)
        estimates.append(unbiased_mmd2(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)))
    assert float(np.mean(estimates)) == pytest.approx(theirs, rel=RELATIVE)


def test_precision_recall_density_coverage_match_prdc():
    """prdc (Naeem et al.'s package) computes all four from full distance matrices with "<"
    everywhere; on continuous features no distance equals a radius, so "≤" (precision/recall, as
    the ADM evaluator) gives the same counts."""
    import prdc  # the reference extra's; it needs no torchvision
    rng = np.random.default_rng(5)
    real = rng.normal(size=(1200, 64)).astype(np.float32)
    fake = (rng.normal(size=(1000, 64)) * 1.1 + 0.05).astype(np.float32)
    theirs = prdc.compute_prdc(real, fake, 5)
    assert precision_recall(real, fake, k=5) == pytest.approx((theirs["precision"], theirs["recall"]), abs=1e-12)
    assert density_coverage(real, fake, k=5) == pytest.approx((theirs["density"], theirs["coverage"]), abs=1e-12)


def test_the_stand_in_leaves_no_torchvision_behind():
    import sys

    module = import_reference("torch_fidelity.metric_fid")
    assert callable(module.fid_statistics_to_metric)
    assert not any(name.split(".")[0] in ("torchvision", "torch_fidelity") for name in sys.modules)


def test_inception_score_with_adm_split_size_matches_its_evaluator_loop():
    """ADM's evaluator: softmax, then consecutive parts of split_size rows (the last shorter),
    mean of exp(mean KL) — written out here the way evaluations/evaluator.py does it."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(12_345, 1008))
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), 5000):
        part = preds[i : i + 5000]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    assert inception_score(logits, split_size=5000)[0] == pytest.approx(float(np.mean(scores)), rel=1e-12)
