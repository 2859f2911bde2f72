"""PSNR and SSIM per image against scikit-image (Wang et al. 2004 settings), and bad input."""

import numpy as np
import pytest
import torch

skimage_metrics = pytest.importorskip("skimage.metrics")
from skimage.metrics import _structural_similarity  # noqa: E402

from cmbench.metrics.restoration import PSNR_CONVENTION, SSIM_CONVENTION, psnr, ssim, ssim_window  # noqa: E402


def _pair(n, c, h, w, seed=0):
    """Random truth and a noisy, clipped copy, noise amplitude 20..200 across the images (so
    SSIM is neither ~0 nor ~1)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    amplitude = np.linspace(20, 200, n).reshape(n, 1, 1, 1)
    noisy = truth + np.rint(amplitude * rng.uniform(-1, 1, size=truth.shape))
    return np.clip(noisy, 0, 255).astype(np.uint8), truth


def _sk_ssim(a, b, **kwargs):
    """skimage SSIM of one CHW uint8 pair on [0, 1], Wang et al.'s settings."""
    a, b = a / 255.0, b / 255.0
    common = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, **kwargs)
    if a.shape[0] == 1:
        return skimage_metrics.structural_similarity(a[0], b[0], **common)
    return skimage_metrics.structural_similarity(a, b, channel_axis=0, **common)


@pytest.mark.parametrize("c", [1, 3])
def test_psnr_matches_skimage(c):
    out, truth = _pair(5, c, 16, 12, seed=c)
    got = psnr(out, truth)
    want = [skimage_metrics.peak_signal_noise_ratio(t / 255.0, o / 255.0, data_range=1.0) for o, t in zip(out, truth)]
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(psnr(torch.from_numpy(out), torch.from_numpy(truth)), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("c,size", [(3, 32), (3, 64), (1, 32), (1, 64)])
def test_ssim_matches_skimage(c, size):
    out, truth = _pair(4, c, size, size, seed=size + c)
    got = ssim(torch.from_numpy(out), torch.from_numpy(truth))
    want = np.array([_sk_ssim(o, t) for o, t in zip(out, truth)])
    assert got.dtype == np.float64 and got.shape == (4,)
    assert 0.05 < want.min() and want.max() < 0.99 and want.max() - want.min() > 0.2
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_non_square_and_chunked(monkeypatch):
    out, truth = _pair(7, 3, 20, 27, seed=3)
    want = np.array([_sk_ssim(o, t) for o, t in zip(out, truth)])
    want_psnr = psnr(out, truth)
    monkeypatch.setattr("cmbench.metrics.restoration._CHUNK_VALUES", 3 * 20 * 27 * 2)  # chunks of 2 images
    np.testing.assert_allclose(ssim(out, truth), want, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(psnr(out, truth), want_psnr)


def test_ssim_small_images_shrink_window(monkeypatch):
    # skimage 0.26 hard-codes truncate = 3.5 (an 11-tap Gaussian at sigma 1.5) and ignores a
    # truncate keyword, so its Gaussian is wrapped to radius int(2.0 * 1.5 + 0.5) = 3, i.e. 7 taps;
    # win_size=7 makes it crop 3 pixels from each side, the valid positions.
    calls = []
    gaussian = _structural_similarity.gaussian

    def gaussian_radius3(image, **kwargs):
        calls.append(kwargs["truncate"])
        return gaussian(image, **{**kwargs, "truncate": 2.0})

    monkeypatch.setattr(_structural_similarity, "gaussian", gaussian_radius3)
    assert ssim_window(8, 8) == 7 and ssim_window(8, 30) == 7 and ssim_window(10, 9) == 9
    for c in (1, 3):
        out, truth = _pair(3, c, 8, 8, seed=10 + c)
        want = np.array([_sk_ssim(o, t, win_size=7) for o, t in zip(out, truth)])
        np.testing.assert_allclose(ssim(out, truth), want, rtol=0, atol=1e-10)
        # the 11-tap window would not fit; a 7-tap window with different weights would not match
        assert np.abs(ssim(out, truth, sigma=1.0) - want).max() > 1e-4
    assert calls and set(calls) == {3.5}


def test_ssim_options_change_the_number():
    out, truth = _pair(2, 3, 32, 32, seed=5)
    base = ssim(out, truth)
    want = np.array([_sk_ssim(o, t, K1=0.02, K2=0.05) for o, t in zip(out, truth)])
    np.testing.assert_allclose(ssim(out, truth, k1=0.02, k2=0.05), want, rtol=0, atol=1e-10)
    assert np.abs(want - base).min() > 1e-6


def test_identical_images():
    _, truth = _pair(3, 3, 16, 16, seed=7)
    flat = np.full((1, 1, 12, 12), 128, dtype=np.uint8)
    assert np.all(psnr(truth, truth) == np.inf)
    np.testing.assert_allclose(ssim(truth, truth), 1.0, rtol=0, atol=1e-12)
    assert psnr(flat, flat)[0] == np.inf and abs(ssim(flat, flat)[0] - 1.0) < 1e-12
    # one grey level off everywhere: MSE = (1/255)², PSNR = 20·log10(255)
    np.testing.assert_allclose(psnr(flat + 1, flat), 20 * np.log10(255.0), rtol=0, atol=1e-12)


def test_empty_batch():
    empty = np.zeros((0, 3, 16, 16), dtype=np.uint8)
    assert psnr(empty, empty).shape == (0,) and ssim(empty, empty).shape == (0,)


def test_conventions_recorded():
    assert SSIM_CONVENTION["window"] == 11 and SSIM_CONVENTION["sigma"] == 1.5
    assert (SSIM_CONVENTION["k1"], SSIM_CONVENTION["k2"]) == (0.01, 0.03)
    assert SSIM_CONVENTION["covariance"] == "population" and SSIM_CONVENTION["border"] == "valid"
    assert SSIM_CONVENTION["data_range"] == 1.0 and PSNR_CONVENTION["data_range"] == 1.0


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_bad_input(metric):
    good = np.zeros((2, 3, 16, 16), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        metric(good, good[:1])
    with pytest.raises(ValueError, match="uint8"):
        metric(good.astype(np.float32), good)
    with pytest.raises(ValueError, match="uint8"):
        metric(good, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        metric(good[0], good[0])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        nhwc = good.transpose(0, 2, 3, 1).copy()
        metric(nhwc, nhwc)
    with pytest.raises(ValueError, match="tensor or numpy"):
        metric(good.tolist(), good)


def test_bad_ssim_options():
    good = np.zeros((1, 1, 16, 16), dtype=np.uint8)
    for window in (10, 0, 2.5):
        with pytest.raises(ValueError, match="odd"):
            ssim(good, good, window=window)
    with pytest.raises(ValueError, match="sigma"):
        ssim(good, good, sigma=0)
    with pytest.raises(ValueError, match="k1 and k2"):
        ssim(good, good, k1=-0.01)


def test_runtime_does_not_import_skimage():
    import subprocess
    import sys

    code = "import sys, cmbench.metrics.restoration; sys.exit('skimage' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
