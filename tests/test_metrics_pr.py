import numpy as np
import pytest
import torch

from cmbench.metrics import neighbours
from cmbench.metrics import MetricOptions, compute_metrics
from cmbench.metrics.precision_recall import kth_neighbour_radii, precision_recall
from cmbench.metrics.prdc import density_coverage
from cmbench.metrics.reference import ReferenceStats

LINE = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])


def _brute_force(real, fake, k):
    """Independent reference: full distance matrices in float64."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(fake, real)
    precision = np.mean((d <= r_real[None, :]).any(axis=1))
    recall = np.mean((d.T <= r_fake[None, :]).any(axis=1))
    return precision, recall


@pytest.mark.parametrize(
    "k, expected", [(1, [1, 1, 2, 3, 4]), (2, [3, 2, 3, 4, 7]), (4, [10, 9, 7, 6, 10])]
)
def test_radii_on_a_line(k, expected):
    radii = kth_neighbour_radii(LINE, k=k, batch_size=2)
    np.testing.assert_array_equal(radii.numpy(), np.array(expected, dtype=np.float32))


def test_radii_exclude_self_and_keep_duplicates():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    radii = kth_neighbour_radii(points, k=1, batch_size=3, dtype=torch.float64)
    # The duplicate is the nearest neighbour (radius 0); a distinct point never gets radius 0.
    np.testing.assert_array_equal(radii.numpy(), [0.0, 0.0, 5.0, 5.0])


def test_boundary_points_count_as_inside():
    # k=1 real radii [1, 1, 2, 3, 4]: -1 is at distance 1 from 0, 14 at distance 4 from 10 (both
    # exactly on a ball's boundary); -2 and 30 are outside. Fake radii: -2, -1, 14, 15 -> 1,
    # 30 -> 15; only real 0 lies in a fake ball, exactly at distance 1 from -1.
    fake = np.array([[14.0], [15.0], [-1.0], [-2.0], [30.0]])
    precision, recall = precision_recall(LINE, fake, k=1, batch_size=2)
    assert precision == pytest.approx(0.4)
    assert recall == pytest.approx(0.2)


def test_duplicate_radius_zero_ball_contains_only_the_point():
    real = np.array([[0.0], [0.0], [5.0], [9.0]])
    fake = np.array([[0.0], [0.5], [100.0], [101.0]])
    precision, _ = precision_recall(real, fake, k=1)
    # Real radii (k=1) are [0, 0, 4, 4]: fake 0 lies in the zero-radius balls of the duplicates;
    # 0.5 lies in none (4.5 from 5, radius 4); 100 and 101 are far from everything.
    assert precision == pytest.approx(0.25)


def test_identical_sets_give_one():
    x = np.random.default_rng(0).standard_normal((120, 8))
    assert precision_recall(x, x.copy(), k=3, batch_size=50) == (1.0, 1.0)


def test_far_apart_sets_give_zero():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((60, 4))
    fake = rng.standard_normal((70, 4)) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("batch_size", [37, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force(k, batch_size, dtype):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((200, 16))
    fake = rng.standard_normal((170, 16)) * 1.3 + 0.4
    expected = _brute_force(real, fake, k)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    got = precision_recall(torch.from_numpy(real), fake, k=k, batch_size=batch_size, dtype=dtype)
    assert got == pytest.approx(expected, abs=1e-12)
    radii = kth_neighbour_radii(real, k=k, batch_size=batch_size, dtype=dtype)
    ref = np.sort(np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1)), axis=1)[:, k]
    np.testing.assert_allclose(radii.double().numpy(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-12)


def test_distance_blocks_are_bounded_by_batch_size(monkeypatch):
    shapes = []
    original = neighbours.sq_distances

    def recording(a, b, *norms):
        shapes.append((a.shape[0], b.shape[0]))
        return original(a, b, *norms)

    monkeypatch.setattr(neighbours, "sq_distances", recording)
    rng = np.random.default_rng(2)
    precision_recall(rng.standard_normal((95, 3)), rng.standard_normal((80, 3)), k=3, batch_size=20)
    assert shapes and max(max(s) for s in shapes) <= 20


def test_errors():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="more than k = 3 points"):
        precision_recall(x, np.ones((10, 2)), k=3)
    with pytest.raises(ValueError, match="more than k = 3 points"):
        precision_recall(np.ones((10, 2)), x, k=3)
    with pytest.raises(ValueError, match="differ in dimension"):
        precision_recall(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        precision_recall(np.ones((10, 2)), np.ones((10, 2)), dtype=torch.float16)
    with pytest.raises(ValueError, match="k must be"):
        kth_neighbour_radii(np.ones((10, 2)), k=0, batch_size=4, dtype=torch.float32, device=None)
    with pytest.raises(ValueError, match="2-D"):
        kth_neighbour_radii(np.ones(10), k=1)


def _counting_products(monkeypatch) -> list:
    products = []
    original = neighbours.sq_distances

    def counted(a, b, *norms):
        products.append(a.shape[0] * b.shape[0])
        return original(a, b, *norms)

    monkeypatch.setattr(neighbours, "sq_distances", counted)
    return products


def test_two_products_of_the_whole_matrices_not_four(monkeypatch):
    """Within a set only the blocks on and above the diagonal are computed; the real × fake
    blocks serve precision and recall both: N² + 2·N(N + b)/2 distances, not 4N²."""
    products = _counting_products(monkeypatch)
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((100, 5)), rng.standard_normal((100, 5))
    got = precision_recall(real, fake, k=3, batch_size=25)
    assert sum(products) == 100 * 100 + 2 * (100 * 100 + 100 * 25) // 2
    assert got == pytest.approx(_brute_force(real, fake, 3), abs=1e-12)


def _reference(real: np.ndarray) -> ReferenceStats:
    meta = {"extractor": "x", "extractor_sha256": "0", "num_images": len(real), "resolution": 1, "source": "test"}
    return ReferenceStats.from_features({"pool": real}, meta, keep_features={"pool": len(real)})


def test_a_run_computes_the_reference_neighbours_once_for_every_k_nn_metric(monkeypatch):
    rng = np.random.default_rng(4)
    real = rng.standard_normal((90, 6)).astype(np.float32)
    fakes = [rng.standard_normal((70, 6)).astype(np.float32) * s for s in (1.0, 1.4)]
    reference = _reference(real)
    options = MetricOptions(pr_k=3, dc_k=5, pr_batch_size=32)
    calls = []
    original = neighbours.nearest_sq_distances
    monkeypatch.setattr(neighbours, "nearest_sq_distances", lambda x, k, b: calls.append(len(x)) or original(x, k, b))
    monkeypatch.setattr("cmbench.metrics.nearest_sq_distances", neighbours.nearest_sq_distances)
    for fake in fakes:
        got = compute_metrics(["precision_recall", "density_coverage"], {"pool": fake}, reference, options)
        assert (got["precision"], got["recall"]) == precision_recall(real, fake, k=3, batch_size=32)
        assert (got["density"], got["coverage"]) == density_coverage(real, fake, k=5, batch_size=32)
    assert calls == [90, 70, 70]  # the real set's once (to k = 5, both metrics), each fake set's once
    reference.features["pool"] = real[::-1].copy()  # a replaced array is not served from the cache
    compute_metrics(["density_coverage"], {"pool": fakes[0]}, reference, options)
    assert calls[-1] == 90
