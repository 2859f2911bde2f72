"""Density and coverage (Naeem et al. 2020) against brute force, ties and the identical-distribution
expectations."""

from math import prod

import numpy as np
import pytest
import torch

from cmbench.metrics import METRICS, MetricOptions, compute_metrics
from cmbench.metrics import neighbours
from cmbench.metrics.kid import kernel_inception_distance
from cmbench.metrics.prdc import density_coverage
from cmbench.metrics.reference import ReferenceStats

META = {
    "extractor": "toy",
    "extractor_sha256": "c" * 64,
    "num_images": 300,
    "resolution": [8, 8],
    "source": "test",
}


def _brute_force(real, fake, k, strict=True):
    """Independent reference: full squared-distance matrices in float64, the prdc formulas."""
    d_rr = ((real[:, None, :] - real[None, :, :]) ** 2).sum(-1)
    radii = np.sort(d_rr, axis=1)[:, k]  # column 0 is the self-distance
    d_fr = ((fake[:, None, :] - real[None, :, :]) ** 2).sum(-1)
    inside = d_fr < radii[None, :] if strict else d_fr <= radii[None, :]
    return inside.sum() / (k * len(fake)), inside.any(axis=0).mean()


def _expected_coverage(n_real, n_fake, k):
    """E[coverage] for identical continuous distributions: the ball of X_i misses every fake point
    iff its k nearest among the other n_real − 1 + n_fake points are all real (exchangeable)."""
    return 1 - prod((n_real - 1 - i) / (n_real - 1 + n_fake - i) for i in range(k))


def test_lattice_ties_on_the_radius_are_outside():
    # 5×5 integer grid, k = 4: interior radius 1, edge √2, corner 2. The fake point (2, 2) is a
    # grid point: at distance 0 from real (2, 2) (inside) and exactly on the boundary of its four
    # neighbours' balls (distance 1 = radius), and of the edge midpoints' (distance 2 > √2).
    grid = np.array([[i, j] for i in range(5) for j in range(5)], dtype=np.float64)
    fake = np.array([[2.0, 2.0]])
    for dtype in (torch.float32, torch.float64):
        density, coverage = density_coverage(grid, fake, k=4, batch_size=7, dtype=dtype)
        assert density == pytest.approx(1 / 4) and coverage == pytest.approx(1 / 25)
    assert _brute_force(grid, fake, 4, strict=False)[0] == pytest.approx(5 / 4)  # "≤" would differ


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("batch_size", [7, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force_on_a_lattice_with_ties(k, batch_size, dtype):
    rng = np.random.default_rng(k)
    real = rng.integers(0, 4, (80, 3)).astype(np.float64)
    fake = rng.integers(0, 5, (65, 3)).astype(np.float64)
    expected = _brute_force(real, fake, k)
    assert expected != _brute_force(real, fake, k, strict=False)  # ties matter here
    got = density_coverage(real, torch.from_numpy(fake), k=k, batch_size=batch_size, dtype=dtype)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("batch_size", [33, 1000])
def test_matches_brute_force_on_random_sets(batch_size):
    rng = np.random.default_rng(6)
    real = rng.standard_normal((150, 10))
    fake = rng.standard_normal((120, 10)) * 1.3 + 0.3
    expected = _brute_force(real, fake, 5)
    assert 0 < expected[1] < 1
    got = density_coverage(real, fake, k=5, batch_size=batch_size, dtype=torch.float64)
    assert got == pytest.approx(expected, abs=1e-12)


def test_identical_distributions_small():
    # 2k vs 2k in 64-d. Over 30 seeds: density 0.998 ± 0.059, coverage 0.9686 ± 0.0071
    # (E[coverage] = 0.96887); the bounds are about 5 standard deviations.
    rng = np.random.default_rng(7)
    real = rng.standard_normal((2000, 64), dtype=np.float32)
    fake = rng.standard_normal((2000, 64), dtype=np.float32)
    density, coverage = density_coverage(real, fake, k=5)
    assert abs(density - 1) < 0.3
    assert abs(coverage - _expected_coverage(2000, 2000, 5)) < 0.035


def test_identical_distributions_prdc_readme_case():
    # The prdc README's example: 10k vs 10k of N(0, I) in 1000-d, k = 5, reports density 1.0555,
    # coverage 0.9735 (one random draw). This draw gives density 1.06206, coverage 0.9736
    # (about 10 s on one core). E[density] = 1 and E[coverage] = 0.96877 exactly; at 2k points
    # the spread over seeds was 0.064 and 0.0059, about √5 times the spread at 10k, so these
    # bounds are about 5 standard deviations.
    rng = np.random.default_rng(0)
    real = rng.standard_normal((10000, 1000), dtype=np.float32)
    fake = rng.standard_normal((10000, 1000), dtype=np.float32)
    density, coverage = density_coverage(real, fake, k=5)
    assert abs(density - 1) < 0.15
    assert abs(coverage - _expected_coverage(10000, 10000, 5)) < 0.015


def test_far_apart_sets_give_zero():
    rng = np.random.default_rng(8)
    assert density_coverage(rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 100) == (0.0, 0.0)


def test_distance_blocks_are_bounded_by_batch_size(monkeypatch):
    shapes = []
    original = neighbours.sq_distances

    def recording(a, b, *norms):
        shapes.append((a.shape[0], b.shape[0]))
        return original(a, b, *norms)

    monkeypatch.setattr(neighbours, "sq_distances", recording)
    rng = np.random.default_rng(9)
    density_coverage(rng.standard_normal((95, 3)), rng.standard_normal((80, 3)), k=5, batch_size=20)
    assert shapes and max(max(s) for s in shapes) <= 20


def test_errors():
    with pytest.raises(ValueError, match="more than k = 5 points"):
        density_coverage(np.zeros((5, 2)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="at least one fake point"):
        density_coverage(np.zeros((10, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match="differ in dimension"):
        density_coverage(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="k must be"):
        density_coverage(np.ones((10, 2)), np.ones((10, 2)), k=0)
    with pytest.raises(ValueError, match="dc_k"):
        MetricOptions(dc_k=0)


def test_registry_computes_kid_and_density_coverage():
    rng = np.random.default_rng(10)
    real = rng.standard_normal((300, 6))
    fake = rng.standard_normal((200, 6)) + 0.2
    stats = ReferenceStats.from_features({"pool": real}, META, keep_features={"pool": 300})
    options = MetricOptions(kid_subsets=5, kid_subset_size=150, dc_k=4, pr_batch_size=64)
    got = compute_metrics(["kid", "density_coverage"], {"pool": fake}, stats, options)
    assert set(got) == {"kid", "kid_std", "density", "coverage"}
    assert METRICS["density_coverage"].columns == ("density", "coverage")
    assert METRICS["density_coverage"].layers == ("pool",) and METRICS["density_coverage"].needs_reference
    assert (got["density"], got["coverage"]) == density_coverage(real, fake, k=4)
    assert (got["kid"], got["kid_std"]) == kernel_inception_distance(real, fake, subsets=5, subset_size=150)
    without = ReferenceStats.from_features({"pool": real}, META)
    with pytest.raises(ValueError, match="no real features for density/coverage"):
        compute_metrics(["density_coverage"], {"pool": fake}, without, options)
