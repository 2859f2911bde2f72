import numpy as np
import pytest
import scipy.linalg
import torch

from cmbench.metrics import fid as fid_module
from cmbench.metrics.fid import (
    FID_SQRT_METHODS,
    StatsAccumulator,
    feature_statistics,
    frechet_distance,
)


def _random_cov(rng, d, n=None):
    """A covariance from n Gaussian samples (rank min(n-1, d)), or full rank when n is None."""
    a = rng.standard_normal((d, d)) if n is None else rng.standard_normal((n, d))
    return a.T @ a / a.shape[0]


def test_methods_constant():
    assert FID_SQRT_METHODS == ("eigh", "sqrtm")


@pytest.mark.parametrize("method", FID_SQRT_METHODS)
def test_fid_of_a_set_with_itself_is_zero(method):
    x = np.random.default_rng(0).standard_normal((500, 32)) * 3 + 1
    mu, sigma = feature_statistics(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-8


@pytest.mark.parametrize("method", FID_SQRT_METHODS)
def test_fid_matches_closed_form_for_diagonal_gaussians(method):
    rng = np.random.default_rng(1)
    d = 16
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", FID_SQRT_METHODS)
def test_fid_closed_form_for_scaled_full_covariance(method):
    # Σ₂ = c²Σ₁ ⇒ tr(Σ₁Σ₂)^{1/2} = c·tr Σ₁, so FID = ‖Δμ‖² + (1 − c)² tr Σ₁.
    rng = np.random.default_rng(2)
    s1 = _random_cov(rng, 24)
    mu1, mu2 = rng.standard_normal(24), rng.standard_normal(24)
    c = 1.7
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    got = frechet_distance(mu1, s1, mu2, c**2 * s1, method=method)
    assert got == pytest.approx(expected, rel=1e-8)


def test_eigh_and_sqrtm_agree_full_rank():
    rng = np.random.default_rng(3)
    d = 64
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    b = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert a > 1.0
    assert a == pytest.approx(b, rel=1e-6)


def test_eigh_and_sqrtm_agree_rank_deficient():
    rng = np.random.default_rng(4)
    d, n = 64, 40
    _, s1 = feature_statistics(rng.standard_normal((n, d)))
    mu2, s2 = feature_statistics(rng.standard_normal((n, d)) + 0.5)
    assert np.linalg.matrix_rank(s1) < d
    mu1 = np.zeros(d)
    a = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    b = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert a == pytest.approx(b, rel=1e-6)


def _symmetric_root_trace(sigma1, sigma2):
    """tr (Σ₁ Σ₂)^{1/2} the textbook way: the eigenvalues of Σ₁^{1/2} Σ₂ Σ₁^{1/2}, Σ₁^{1/2} from eigh."""
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root @ sigma2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


@pytest.mark.parametrize("rows", [40, 2000])
def test_eigh_takes_the_cholesky_factor_and_falls_back_to_the_symmetric_root_when_singular(rows):
    # 40 rows in 64-d: Σ₁ is singular and Cholesky fails; 2000 rows: positive definite.
    rng = np.random.default_rng(6)
    _, s1 = feature_statistics(rng.standard_normal((rows, 64)) * rng.uniform(0.2, 3, 64))
    _, s2 = feature_statistics(rng.standard_normal((500, 64)) + 0.3)
    factor, triangular = fid_module._square_root_factor(s1)
    assert triangular == (rows > 64)
    np.testing.assert_allclose(factor @ factor.T, s1, atol=1e-12 * np.abs(s1).max())
    # Singular: the zero eigenvalues come out as ±round-off, whose square roots (≈1e-8 each) differ
    # between any two decompositions.
    rel = 1e-10 if triangular else 1e-7
    assert fid_module._trace_sqrt_eigh(s1, s2) == pytest.approx(_symmetric_root_trace(s1, s2), rel=rel)


@pytest.mark.parametrize("dim", [7, 150])  # 150: the scatter is mirrored in 64 × 64 tiles, the last partial
def test_covariance_uses_unbiased_normaliser(dim):
    x = np.random.default_rng(5).standard_normal((200, dim)) + 3.0
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, ddof=1), rtol=1e-12, atol=1e-14)
    assert np.array_equal(sigma, sigma.T)
    assert not np.allclose(sigma, np.cov(x, rowvar=False, ddof=0), rtol=1e-3)


def test_feature_statistics_accepts_torch_float32():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-12)


def test_feature_statistics_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        feature_statistics(np.ones((1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        feature_statistics(np.ones(4))


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_accumulator_over_chunks_equals_feature_statistics(offset):
    x = np.random.default_rng(6).standard_normal((301, 12)) + offset
    acc = StatsAccumulator()
    for chunk in (x[:100], x[100:101], x[101:]):
        acc.update(chunk)
    assert acc.count == 301
    mu, sigma = acc.statistics()
    mu_ref, sigma_ref = feature_statistics(x)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-12, atol=1e-12 * np.abs(sigma_ref).max())


def test_accumulator_merge_equals_single_pass():
    x = np.random.default_rng(7).standard_normal((90, 6))
    a, b, empty = StatsAccumulator(), StatsAccumulator(), StatsAccumulator()
    a.update(torch.from_numpy(x[:37]))
    b.update(x[37:60]).update(x[60:])
    a.merge(b).merge(empty)
    assert a.count == 90
    mu, sigma = a.statistics()
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)


def test_accumulator_errors():
    acc = StatsAccumulator().update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        acc.statistics()
    with pytest.raises(ValueError, match="dimension mismatch"):
        acc.update(np.ones((2, 4)))


def test_unknown_method_lists_accepted():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="eigh, sqrtm"):
        frechet_distance(mu, s, mu, s, method="svd")


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="malformed"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


def test_sqrtm_retries_with_offset_when_not_finite(monkeypatch):
    rng = np.random.default_rng(8)
    s1, s2 = _random_cov(rng, 5), _random_cov(rng, 5)
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def fake_sqrtm(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", fake_sqrtm)
    got = frechet_distance(np.zeros(5), s1, np.zeros(5), s2, method="sqrtm")
    eps = np.eye(5) * 1e-6
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + eps) @ (s2 + eps), rtol=1e-14)
    assert np.isfinite(got)


def test_sqrtm_imaginary_diagonal_tolerance(monkeypatch):
    s = np.eye(3)
    for imag, ok in ((1e-5, True), (1e-2, False)):
        root = np.eye(3) + 1j * imag * np.eye(3)
        monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", lambda m, r=root: r)
        if ok:
            assert frechet_distance(np.zeros(3), s, np.zeros(3), s, method="sqrtm") == pytest.approx(0.0)
        else:
            with pytest.raises(ValueError, match="imaginary"):
                frechet_distance(np.zeros(3), s, np.zeros(3), s, method="sqrtm")


@pytest.mark.parametrize("method", FID_SQRT_METHODS)
@pytest.mark.parametrize("name, value, text", [
    ("mu1", np.nan, "holds 1 NaN value (of 4)"), ("sigma1", np.inf, "holds 1 infinite value (of 16)"),
    ("mu2", -np.inf, "holds 1 infinite value (of 4)"), ("sigma2", np.nan, "holds 1 NaN value (of 16)"),
])
def test_non_finite_statistics_raise_naming_the_array(method, name, value, text):
    rng = np.random.default_rng(0)
    arrays = {"mu1": rng.normal(size=4), "sigma1": _random_cov(rng, 4), "mu2": rng.normal(size=4),
              "sigma2": _random_cov(rng, 4)}
    arrays[name] = arrays[name].copy()
    arrays[name].flat[1] = value
    with pytest.raises(ValueError) as err:
        frechet_distance(**arrays, method=method)
    message = str(err.value)
    assert message.startswith(f"cannot compute a Fréchet distance: {name} (") and text in message
    assert ("generated samples'" if name.endswith("1") else "reference statistics") in message


def test_nan_features_never_become_a_number():
    x = np.random.default_rng(0).normal(size=(50, 6))
    mu, sigma = feature_statistics(x)
    x[0] = np.nan
    nan_mu, nan_sigma = feature_statistics(x)
    with pytest.raises(ValueError, match=r"mu1 .* holds 6 NaN values \(of 6\)"):
        frechet_distance(nan_mu, nan_sigma, mu, sigma)
