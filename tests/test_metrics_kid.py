"""Kernel Inception Distance against an explicit reference and the population MMD² of Gaussians."""

import numpy as np
import pytest
import torch

from cmbench.metrics import METRICS, MetricOptions, compute_metrics, layers_for
from cmbench.metrics.kid import kernel_inception_distance
from cmbench.metrics.reference import ReferenceStats

META = {
    "extractor": "toy",
    "extractor_sha256": "b" * 64,
    "num_images": 400,
    "resolution": [8, 8],
    "source": "test",
}


def _reference_kid(real, fake, subsets, m, degree=3, coef0=1.0, gamma=None, seed=2020):
    """Independent reference: explicit pairwise kernel loops per subset, torch-fidelity's
    sampling (one RandomState; generated rows, then real rows, without replacement)."""
    d = real.shape[1]
    g = 1.0 / d if gamma is None else gamma

    def kern(u, v):
        return (g * float(np.dot(u, v)) + coef0) ** degree

    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        xx = sum(kern(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(kern(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(kern(x[i], y[j]) for i in range(m) for j in range(m))
        values.append(xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (m * m))
    values = np.array(values)
    return values.mean(), np.sqrt(((values - values.mean()) ** 2).mean())


def _population_mmd2(a, b):
    """MMD² of N(a, I) and N(b, I) under k(x, y) = (xᵀy/d + 1)³, from the moments of xᵀy.

    For independent x ~ N(a, I), y ~ N(b, I), S = xᵀy has mean Σaᵢbᵢ, variance
    Σ(aᵢ² + bᵢ² + 1) and third cumulant 6·Σaᵢbᵢ, which give E(1 + S/d)³.
    """
    d = len(a)

    def expected_kernel(u, v):
        mean, var, k3 = float(u @ v), float((u * u + v * v + 1).sum()), 6.0 * float(u @ v)
        m2, m3 = var + mean**2, k3 + 3 * mean * var + mean**3
        return 1 + 3 * mean / d + 3 * m2 / d**2 + m3 / d**3

    return expected_kernel(a, a) + expected_kernel(b, b) - 2 * expected_kernel(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"degree": 2, "coef0": 0.5, "gamma": 0.3, "seed": 7}],
)
def test_matches_explicit_reference(kwargs):
    rng = np.random.default_rng(0)
    real = rng.standard_normal((70, 5))
    fake = rng.standard_normal((55, 5)) * 1.2 + 0.4
    expected = _reference_kid(real, fake, subsets=6, m=25, **kwargs)
    got = kernel_inception_distance(real, fake, subsets=6, subset_size=25, products="float64", **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert expected[1] > 0
    # Float32 inner products (the default, as torch-fidelity and clean-fid), float64 kernels and sums.
    got = kernel_inception_distance(real, fake, subsets=6, subset_size=25, **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_subsets_spanning_several_strips_match_the_reference_and_the_device_path():
    # 150 rows per set: the kernel sums run over strips of ROWS_PER_STRIP rows (three, the last
    # partial), each less the zeros below its diagonal; the torch path (a GPU's) sums whole blocks.
    from cmbench.metrics.kid import ROWS_PER_STRIP, _mmd2_torch

    m = 150
    assert m > 2 * ROWS_PER_STRIP and m % ROWS_PER_STRIP
    rng = np.random.default_rng(3)
    real = np.abs(rng.standard_normal((200, 6)))
    fake = np.abs(rng.standard_normal((180, 6))) * 1.1
    expected = _reference_kid(real, fake, subsets=2, m=m)
    got = kernel_inception_distance(real, fake, subsets=2, subset_size=m, products="float64")
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    draws = np.random.RandomState(2020)
    z = torch.from_numpy(np.concatenate([fake[draws.choice(180, m, replace=False)], real[draws.choice(200, m, replace=False)]]))
    first = _mmd2_torch(z, 1 / 6, m, 3, 1.0)
    assert first == pytest.approx(kernel_inception_distance(real, fake, subsets=1, subset_size=m, products="float64")[0], rel=1e-12)


def test_sampling_order_is_generated_first():
    # Swapping the roles changes which RandomState draws pick which set, hence the value.
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((60, 4)), rng.standard_normal((60, 4)) + 0.5
    one = kernel_inception_distance(real, fake, subsets=5, subset_size=20, products="float64")
    swapped = kernel_inception_distance(fake, real, subsets=5, subset_size=20, products="float64")
    assert one != swapped
    np.testing.assert_allclose(one, _reference_kid(real, fake, 5, 20), rtol=1e-12)


def test_float32_input_with_float64_products_is_exact():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((40, 3)).astype(np.float32)
    fake = rng.standard_normal((40, 3)).astype(np.float32) + 1
    got = kernel_inception_distance(torch.from_numpy(real), torch.from_numpy(fake), subsets=3, subset_size=15,
                                    products="float64")
    expected = _reference_kid(real.astype(np.float64), fake.astype(np.float64), 3, 15)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.25])
def test_agrees_with_the_population_mmd2(shift):
    # Each subset estimate is unbiased for the population MMD², so their mean is too; its
    # standard deviation is at most the per-subset one (``std``), so 4·std is a sound bound.
    d, n = 16, 2000
    rng = np.random.default_rng(3)
    a, b = np.zeros(d), np.full(d, shift)
    real = rng.standard_normal((n, d)) + a
    fake = rng.standard_normal((n, d)) + b
    mean, std = kernel_inception_distance(real, fake, subsets=50, subset_size=500)
    expected = _population_mmd2(a, b)
    assert abs(mean - expected) < 4 * std
    if shift == 0.0:
        assert expected == 0.0
    else:
        # Clearly positive (population MMD² ≈ 0.214, about 9 per-subset std here).
        assert expected > 0.2 and mean > 5 * std


def test_errors_name_sizes_and_option():
    real, fake = np.zeros((300, 4)), np.ones((250, 4))
    with pytest.raises(ValueError, match=r"kid_subset_size.*1000.*300 real and 250 fake.*≤ 250"):
        kernel_inception_distance(real, fake)
    with pytest.raises(ValueError, match="differ in dimension"):
        kernel_inception_distance(real, np.ones((250, 3)), subset_size=10)
    with pytest.raises(ValueError, match="2-D"):
        kernel_inception_distance(np.zeros(10), fake, subset_size=5)
    with pytest.raises(ValueError, match="subsets must be an integer ≥ 1"):
        kernel_inception_distance(real, fake, subsets=0, subset_size=10)
    with pytest.raises(ValueError, match="subset_size must be an integer ≥ 2"):
        kernel_inception_distance(real, fake, subset_size=1)
    with pytest.raises(ValueError, match="gamma"):
        kernel_inception_distance(real, fake, subset_size=10, gamma=0.0)
    with pytest.raises(ValueError, match="products must be one of float32, float64; got 'float16'"):
        kernel_inception_distance(real, fake, subset_size=10, products="float16")
    with pytest.raises(ValueError, match="kid_products is 'half'; accepted: float32, float64"):
        MetricOptions(kid_products="half")


def test_registry_uses_reference_features():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((400, 6))
    fake = rng.standard_normal((150, 6)) + 0.2
    stats = ReferenceStats.from_features({"pool": real}, META, keep_features={"pool": 400})
    options = MetricOptions(kid_subsets=7, kid_subset_size=100)
    got = compute_metrics(["kid"], {"pool": fake}, stats, options)
    assert set(got) == {"kid", "kid_std"} == set(METRICS["kid"].columns)
    assert (got["kid"], got["kid_std"]) == kernel_inception_distance(real, fake, subsets=7, subset_size=100)
    exact = compute_metrics(["kid"], {"pool": fake}, stats, MetricOptions(kid_subsets=7, kid_subset_size=100, kid_products="float64"))
    assert exact["kid"] == pytest.approx(got["kid"], rel=1e-6) and exact["kid"] != got["kid"]
    assert layers_for(["kid"]) == ("pool",) and METRICS["kid"].needs_reference


def test_registry_errors():
    rng = np.random.default_rng(5)
    stats = ReferenceStats.from_features({"pool": rng.standard_normal((50, 3))}, META)
    pool = {"pool": rng.standard_normal((50, 3))}
    with pytest.raises(ValueError, match="no real features for KID"):
        compute_metrics(["kid"], pool, stats, MetricOptions(kid_subset_size=10))
    kept = ReferenceStats.from_features({"pool": rng.standard_normal((50, 3))}, META, keep_features={"pool": 50})
    with pytest.raises(ValueError, match="kid_subset_size"):
        compute_metrics(["kid"], pool, kept, MetricOptions())
    for name in ("kid_subsets", "kid_subset_size"):
        with pytest.raises(ValueError, match=name):
            MetricOptions(**{name: 0})
