"""Official reference-statistics formats, `cmbench stats compute`, and the registry of official files.

Every official file here is synthetic (small D, a few uint8 images) in the published layout;
nothing touches the network (fetch is tested with urlopen monkeypatched).
"""

import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cmbench.cli import main
from cmbench.features.analytic import PixelExtractor
from cmbench.features.toy import ToyClassifierExtractor
from cmbench.images import from_uint8
from cmbench.metrics.fid import feature_statistics
from cmbench.metrics.npz_array import NpzArray
from cmbench.metrics.reference import load_reference
from cmbench.metrics.reference_formats import COVARIANCE_RTOL_PER_DIM, psd_problem
from cmbench.metrics.reference_registry import REQUIRED_KEYS, fetch_reference, find_entry, load_registry
from cmbench.stats import attach_image_features, compute_reference_stats, open_images
from cmbench.validate import ConfigError
from cmbench.zoo.toy.classifier import DEFAULT_CLASSIFIER
from cmbench.zoo.toy.data import load_toy

REPO = Path(__file__).resolve().parents[1]
INCEPTION = {"extractor": "inception-tf", "extractor_sha256": "f" * 64}
TOY_ID = {"extractor": "toy-classifier", "extractor_sha256": "b" * 64}


def _gaussian_stats(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, d))
    return x.mean(0), np.cov(x, rowvar=False)


def _adm_batch(path: Path, compressed: bool = False) -> dict:
    rng = np.random.default_rng(1)
    arrays = {"arr_0": rng.integers(0, 256, (5, 6, 4, 3), dtype=np.uint8)}
    arrays["mu"], arrays["sigma"] = _gaussian_stats(8, 2)
    arrays["mu_s"], arrays["sigma_s"] = _gaussian_stats(5, 3)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def _mu_sigma_file(path: Path, d: int = 8) -> dict:
    mu, sigma = _gaussian_stats(d, 4)
    np.savez(path, mu=mu, sigma=sigma)
    return {"mu": mu, "sigma": sigma}


@pytest.fixture(scope="module")
def toy_extractor():
    return ToyClassifierExtractor(DEFAULT_CLASSIFIER)


# Readers.


@pytest.mark.parametrize("compressed", [False, True])
def test_adm_reference_batch(tmp_path, compressed):
    path = tmp_path / "VIRTUAL_test64_labeled.npz"
    arrays = _adm_batch(path, compressed)
    stats = load_reference(path)
    assert stats.format == "adm" and stats.is_official
    assert set(stats.mu) == set(stats.sigma) == {"pool", "spatial"}
    np.testing.assert_array_equal(stats.mu["pool"], arrays["mu"])
    np.testing.assert_array_equal(stats.sigma["pool"], arrays["sigma"])
    np.testing.assert_array_equal(stats.mu["spatial"], arrays["mu_s"])
    np.testing.assert_array_equal(stats.sigma["spatial"], arrays["sigma_s"])
    assert stats.features == {}
    meta = stats.meta
    assert (meta["format"], meta["extractor"], meta["extractor_sha256"]) == ("adm", "inception-tf", None)
    assert "pool_3" in meta["extractor_convention"] and meta["layers"] == {"pool": 8, "spatial": 5}
    assert meta["resolution"] == [6, 4] and meta["source"] == str(path)
    assert meta["images"] == {"path": str(path), "key": "arr_0", "count": 5, "shape": [5, 6, 4, 3], "dtype": "uint8"}
    # The images are streamed on demand, NCHW, in stored order.
    assert len(stats.images) == 5
    blocks = list(stats.images.batches(2))
    assert [len(b) for b in blocks] == [2, 2, 1] and blocks[0].dtype == torch.uint8
    np.testing.assert_array_equal(torch.cat(blocks).numpy(), arrays["arr_0"].transpose(0, 3, 1, 2))
    assert [len(b) for b in stats.images.batches(2, limit=3)] == [2, 1]
    assert load_reference(path, format="adm").meta == meta


def test_adm_batch_without_images_and_with_bad_images(tmp_path):
    path = tmp_path / "stats_only.npz"
    mu, sigma = _gaussian_stats(4, 0)
    np.savez(path, mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=sigma[:2, :2])
    stats = load_reference(path)
    assert stats.format == "adm" and stats.images is None and stats.meta["images"] is None
    bad = tmp_path / "bad_images.npz"
    np.savez(bad, arr_0=np.zeros((2, 4, 4, 3), np.float32), mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=sigma[:2, :2])
    with pytest.raises(ValueError, match=r"bad_images\.npz.*arr_0.*uint8 NHWC"):
        load_reference(bad)


def test_edm_reference_statistics(tmp_path):
    path = tmp_path / "cifar10-32x32.npz"
    arrays = _mu_sigma_file(path)
    stats = load_reference(path)
    assert stats.format == "edm" and set(stats.mu) == {"pool"}
    np.testing.assert_array_equal(stats.mu["pool"], arrays["mu"])
    np.testing.assert_array_equal(stats.sigma["pool"], arrays["sigma"])
    assert stats.meta["extractor"] == "inception-tf" and stats.meta["extractor_sha256"] is None
    assert stats.meta["resolution"] == [32, 32] and stats.meta["dataset"] == "cifar10"
    assert stats.images is None and stats.meta["num_images"] is None
    other = tmp_path / "my-stats.npz"  # any mu/sigma file not named as clean-fid names its files
    _mu_sigma_file(other)
    assert load_reference(other).format == "edm" and load_reference(other).meta["resolution"] is None


@pytest.mark.parametrize("name, mode, extractor, split, resolution", [
    ("cifar10_legacy_tensorflow_train_32.npz", "legacy_tensorflow", "inception-tf", "train", [32, 32]),
    ("cifar10_clean_train_32.npz", "clean", "inception-tf+clean-resize", "train", [32, 32]),
    ("ffhq_legacy_pytorch_trainval70k_1024.npz", "legacy_pytorch", "inception-pytorch-fid", "trainval70k", [1024, 1024]),
    ("my_data_clean_custom_na.npz", "clean", "inception-tf+clean-resize", "custom", None),
])
def test_clean_fid_statistics(tmp_path, name, mode, extractor, split, resolution):
    path = tmp_path / name
    arrays = _mu_sigma_file(path)
    stats = load_reference(path)
    assert stats.format == "clean-fid"
    np.testing.assert_array_equal(stats.mu["pool"], arrays["mu"])
    assert stats.meta["clean_fid"]["mode"] == mode and stats.meta["clean_fid"]["split"] == split
    assert stats.meta["extractor"] == extractor and stats.meta["resolution"] == resolution
    assert stats.meta["extractor_sha256"] is None


def test_clean_fid_other_feature_model(tmp_path):
    path = tmp_path / "cifar10_clean_clip_vit_b_32_train_32.npz"
    _mu_sigma_file(path)
    meta = load_reference(path).meta
    assert meta["clean_fid"] == {"dataset": "cifar10", "mode": "clean", "model": "clip_vit_b_32", "split": "train"}
    assert meta["extractor"] == "clean-fid:clip_vit_b_32"


def test_explicit_format_mismatches(tmp_path):
    edm = tmp_path / "cifar10-32x32.npz"
    _mu_sigma_file(edm)
    with pytest.raises(ValueError, match=r"cifar10-32x32\.npz: not a ADM reference batch file: it lacks mu_s, sigma_s"):
        load_reference(edm, format="adm")
    with pytest.raises(ValueError, match=r"cifar10-32x32\.npz: clean-fid statistics are only usable when the file name"):
        load_reference(edm, format="clean-fid")
    with pytest.raises(ValueError, match=r"no 'meta' entry.*cmbench reference file"):
        load_reference(edm, format="cmbench")
    with pytest.raises(ValueError, match=r"unknown reference format 'tf'; accepted: auto, cmbench, adm, edm, clean-fid"):
        load_reference(edm, format="tf")


@pytest.mark.parametrize("arrays, hint", [
    ({"foo": np.zeros(3), "mu": np.zeros(3)}, None),
    ({"arr_0": np.zeros((2, 4, 4, 3), np.uint8)}, "image batch"),
    ({"arr_0": np.zeros((2, 4, 4, 3), np.uint8), "arr_1": np.zeros(2, np.int64)}, "cmbench stats compute"),
    ({"feats": np.zeros((4, 3))}, "KID features"),
])
def test_detection_errors_list_keys_and_formats(tmp_path, arrays, hint):
    path = tmp_path / "mystery.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as err:
        load_reference(path)
    message = str(err.value)
    assert "mystery.npz" in message and str(sorted(arrays)) in message
    for fmt in ("cmbench:", "adm:", "edm:", "clean-fid:"):
        assert fmt in message
    if hint:
        assert hint in message


def test_not_an_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"broken\.npz: not an \.npz file"):
        load_reference(path)


def test_cmbench_files_still_load(tmp_path):
    stats = load_reference(REPO / "reference_stats" / "toy-digits-test.npz")
    assert stats.format == "cmbench" and not stats.is_official and stats.images is None
    assert stats.features["pool"].shape == (297, 64)


# Corrupt statistics are refused by name at load time.


def _not_psd(sigma: np.ndarray, ratio: float = 0.05) -> np.ndarray:
    """``sigma`` with its smallest eigenvalue replaced by −ratio × its largest."""
    w, v = np.linalg.eigh(sigma)
    w[0] = -ratio * w[-1]
    return (v * w) @ v.T


def _with(array: np.ndarray, index, value) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


CORRUPTIONS = {
    "nan in sigma": (lambda mu, sigma: (mu, _with(sigma, (1, 2), np.nan)), "sigma", r"holds 1 NaN value \(of 64\)"),
    "inf in mu": (lambda mu, sigma: (_with(mu, 3, np.inf), sigma), "mu", r"holds 1 infinite value \(of 8\)"),
    "not psd": (lambda mu, sigma: (mu, _not_psd(sigma)), "sigma",
                r"is not positive semi-definite: smallest eigenvalue -0\.\d+ vs largest \d\.\d+"),
    "not symmetric": (lambda mu, sigma: (mu, _with(sigma, (0, 5), sigma[0, 5] + 1.0)), "sigma", "is not symmetric"),
    "shorter mu": (lambda mu, sigma: (mu[:-1], sigma), "sigma", r"has shape \[8, 8\] but 'mu(_s)?' has 7 entries"),
    "not square": (lambda mu, sigma: (mu, sigma[:, :-1]), "sigma", r"has shape \[8, 7\]; a covariance is a square"),
    "mu a matrix": (lambda mu, sigma: (sigma, sigma), "mu", r"has shape \[8, 8\]; a mean is a non-empty vector"),
    "strings": (lambda mu, sigma: (mu.astype(str), sigma), "mu", r"has dtype <U\d+; statistics are real numbers"),
}


def _official_file(folder: Path, fmt: str, layer_keys: tuple[str, str], corrupt) -> Path:
    """A synthetic official file (D = 8 for the corrupted pair) with ``corrupt`` applied to one pair."""
    pairs = {("mu", "sigma"): _gaussian_stats(8, 4), ("mu_s", "sigma_s"): _gaussian_stats(8, 5)}
    pairs[layer_keys] = corrupt(*pairs[layer_keys])
    arrays = {key: value for keys, pair in pairs.items() for key, value in zip(keys, pair)}
    if fmt == "adm":
        path = folder / "VIRTUAL_bad.npz"
        arrays["arr_0"] = np.zeros((2, 4, 4, 3), np.uint8)
    else:
        path = folder / ("cifar10-32x32.npz" if fmt == "edm" else "cifar10_legacy_tensorflow_train_32.npz")
        arrays = {"mu": arrays["mu"], "sigma": arrays["sigma"]}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("fmt, layer_keys", [("adm", ("mu", "sigma")), ("adm", ("mu_s", "sigma_s")),
                                             ("edm", ("mu", "sigma")), ("clean-fid", ("mu", "sigma"))])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_official_files_with_corrupt_statistics_are_refused_naming_file_and_key(tmp_path, fmt, layer_keys, corruption):
    corrupt, which, problem = CORRUPTIONS[corruption]
    path = _official_file(tmp_path, fmt, layer_keys, corrupt)
    key = layer_keys[0] if which == "mu" else layer_keys[1]
    with pytest.raises(ValueError) as err:
        load_reference(path)
    message = str(err.value)
    assert message.startswith(f"{path}: array {key!r} ")
    assert re.search(problem, message), message
    assert "accepted: finite float arrays, mu of shape [D] and sigma a symmetric positive semi-definite" in message


def test_statistics_within_round_off_of_psd_load(tmp_path):
    """Singular covariances (fewer images than dimensions), float32 storage and eigenvalues a little
    below 0 are what real files hold; the tolerance D·2⁻²³ of the largest eigenvalue lets them through."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 64))
    mu, sigma = feature_statistics(x)  # rank 4 of 64
    np.savez(tmp_path / "singular.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    loaded = load_reference(tmp_path / "singular.npz")
    assert loaded.sigma["pool"].dtype == np.float64
    np.testing.assert_array_equal(loaded.sigma["pool"], sigma.astype(np.float32))
    tol = COVARIANCE_RTOL_PER_DIM * 8
    base = _gaussian_stats(8, 4)[1]
    assert psd_problem(_not_psd(base, 0.5 * tol), tol) is None
    assert "smallest eigenvalue" in psd_problem(_not_psd(base, 2 * tol), tol)
    assert psd_problem(np.zeros((3, 3)), tol) is None  # features that never vary


# check_compatible for official files.


def test_official_files_serve_only_the_inception_extractor(tmp_path):
    adm = tmp_path / "VIRTUAL_x.npz"
    _adm_batch(adm)
    edm = tmp_path / "cifar10-32x32.npz"
    _mu_sigma_file(edm)
    legacy = tmp_path / "cifar10_legacy_tensorflow_train_32.npz"
    _mu_sigma_file(legacy)
    for path, fmt in ((adm, "adm"), (edm, "edm"), (legacy, "clean-fid")):
        stats = load_reference(path)
        stats.check_compatible(INCEPTION, str(path))  # any inception-tf weights hash: the files record none
        with pytest.raises(ValueError) as err:
            stats.check_compatible(TOY_ID, str(path))
        message = str(err.value)
        assert f"reference statistics {path}" in message and f"format {fmt!r}" in message
        assert "inception-tf" in message and "toy-classifier" in message and "cmbench stats compute" in message
    clean = tmp_path / "cifar10_clean_train_32.npz"
    _mu_sigma_file(clean)
    with pytest.raises(ValueError, match=r"clean-fid statistics file.*PIL bicubic.*'inception-tf\+clean-resize'.*'inception-tf'"):
        load_reference(clean).check_compatible(INCEPTION, str(clean))


# Streaming npz reader.


def test_npz_array_streams_rows(tmp_path):
    data = np.arange(7 * 3 * 2, dtype=np.int16).reshape(7, 3, 2)
    np.savez_compressed(tmp_path / "a.npz", x=data)
    array = NpzArray(tmp_path / "a.npz", "x")
    assert (array.shape, array.dtype, len(array)) == ((7, 3, 2), np.dtype(np.int16), 7)
    np.testing.assert_array_equal(np.concatenate(list(array.batches(3))), data)
    with pytest.raises(KeyError, match="no array 'y'; it has: x"):
        NpzArray(tmp_path / "a.npz", "y")
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="Python objects"):
        NpzArray(tmp_path / "o.npz", "x")


# stats compute.


def test_compute_matches_full_feature_matrix(toy_extractor):
    images = load_toy("test")[0]
    full = {k: v.numpy() for k, v in toy_extractor.extract(images, ("pool", "logits")).items()}
    stats = compute_reference_stats(open_images("toy:test", channels=1), toy_extractor, keep=100, batch_size=64,
                                    progress=False)
    for layer in ("pool", "logits"):
        mu, sigma = feature_statistics(full[layer])
        np.testing.assert_allclose(stats.mu[layer], mu, rtol=0, atol=1e-10)
        np.testing.assert_allclose(stats.sigma[layer], sigma, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(stats.features["pool"], full["pool"][:100])
    assert stats.features["pool"].dtype == np.float32 and set(stats.features) == {"pool"}
    meta = stats.meta
    assert (meta["extractor"], meta["extractor_sha256"]) == tuple(toy_extractor.identity.values())
    assert meta["num_images"] == 297 and meta["resolution"] == [8, 8] and meta["channels"] == 1
    assert meta["layers"] == {"pool": 64, "logits": 10} and meta["kept_features"] == {"pool": 100}
    assert {"cmbench_version", "created_at", "source", "source_details"} <= set(meta)
    # ... and the shipped statistics of the same split (computed from the full matrix).
    # The shipped file was computed on another CPU, whose float32 kernels sum in another order:
    # the features agree to float32 rounding, so the covariances to ~1e-6 of their scale.
    shipped = load_reference(REPO / "reference_stats" / "toy-digits-test.npz")
    scale = np.abs(shipped.sigma["pool"]).max()
    np.testing.assert_allclose(stats.sigma["pool"], shipped.sigma["pool"], rtol=0, atol=1e-6 * scale)
    assert compute_reference_stats(open_images("toy:test", limit=40), toy_extractor, keep=0, batch_size=16,
                                   layers=["pool"], progress=False).features == {}


def test_cli_compute_writes_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "ref.npz"
    args = ["stats", "compute", "--extractor", "toy-classifier", "--images", "toy:test", "--out", str(out),
            "--keep-features", "50", "--batch-size", "100", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    stats = load_reference(out)
    assert stats.features["pool"].shape == (50, 64) and stats.meta["num_images"] == 297
    before = out.read_bytes()
    assert main(args) == 2
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args[:-1] + ["--overwrite", "--quiet", "--limit", "30"]) == 0
    assert load_reference(out).meta["num_images"] == 30
    assert main(["stats", "compute", "--suite", "toy", "--checkpoint", "x.pt", "--images", "toy:test",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "--checkpoint and --weights go with --extractor" in capsys.readouterr().err


def test_cli_compute_from_suite(tmp_path):
    out = tmp_path / "suite_ref.npz"
    assert main(["stats", "compute", "--suite", "toy", "--images", "toy:test", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    assert load_reference(out).meta["extractor"] == "toy-classifier"


def _write_pngs(folder: Path, images: np.ndarray, rgb: bool) -> list[str]:
    """Images ``[N, H, W]`` as PNGs named so that name order differs from index order."""
    folder.mkdir()
    names = [f"img_{i}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(np.repeat(image[:, :, None], 3, 2) if rgb else image, "RGB" if rgb else "L").save(folder / name)
    return names


@pytest.mark.parametrize("rgb", [False, True])
def test_compute_from_png_folder(tmp_path, toy_extractor, rgb):
    images = load_toy("test")[0][:24]
    names = _write_pngs(tmp_path / "pngs", images[:, 0].numpy(), rgb)
    order = sorted(range(len(names)), key=lambda i: names[i])  # img_0, img_1, img_10, ...
    source = open_images(str(tmp_path / "pngs"), channels=1)
    assert source.count == 24 and source.shape == (1, 8, 8)
    stats = compute_reference_stats(source, toy_extractor, batch_size=5, progress=False)
    # The same batches of 5, so the float32 features are bit-identical whatever the thread count.
    ordered = images[order]
    expected = torch.cat([toy_extractor.extract(ordered[i : i + 5], ("pool",))["pool"] for i in range(0, 24, 5)]).numpy()
    mu, sigma = feature_statistics(expected)
    np.testing.assert_allclose(stats.mu["pool"], mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.sigma["pool"], sigma, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(stats.features["pool"], expected)
    assert stats.meta["source_details"]["color_mode"] == "L"


def test_png_folder_errors_and_colour(tmp_path):
    folder = tmp_path / "mixed"
    _write_pngs(folder, np.zeros((3, 8, 8), np.uint8), rgb=True)
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(folder / "sub_small.png")
    with pytest.raises(ValueError, match=r"sub_small\.png: image is 4×4 but img_0\.png .* is 8×8"):
        list(open_images(str(folder), channels=1).batches(8))
    colour = open_images(str(folder), limit=3)  # pixels-style extractor: channels from the first image
    assert colour.shape == (3, 8, 8) and next(colour.batches(8)).shape == (3, 3, 8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .png"):
        open_images(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="toy:train"):
        open_images(str(tmp_path / "nowhere"))


def test_compute_from_npz(tmp_path, toy_extractor):
    images = load_toy("test")[0]
    nhwc = images.numpy().transpose(0, 2, 3, 1)
    np.savez(tmp_path / "batch.npz", arr_0=nhwc)
    reference = compute_reference_stats(open_images("toy:test"), toy_extractor, progress=False)
    stats = compute_reference_stats(open_images(str(tmp_path / "batch.npz"), channels=1), toy_extractor,
                                    batch_size=128, progress=False)
    np.testing.assert_allclose(stats.mu["pool"], reference.mu["pool"], rtol=0, atol=1e-12)  # other batch merges
    np.testing.assert_allclose(stats.sigma["pool"], reference.sigma["pool"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(stats.features["pool"], reference.features["pool"])
    assert stats.meta["source_details"]["sha256"] and stats.meta["source_details"]["key"] == "arr_0"
    # Float images in [-1, 1] need the quantisation that makes them uint8.
    np.savez(tmp_path / "float.npz", arr_0=from_uint8(images).numpy().transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="float images.*--quantisation round or truncate"):
        open_images(str(tmp_path / "float.npz"), channels=1)
    rounded = compute_reference_stats(open_images(str(tmp_path / "float.npz"), channels=1, quantisation="round"),
                                      toy_extractor, progress=False)
    np.testing.assert_array_equal(rounded.features["pool"], reference.features["pool"])
    assert rounded.meta["quantisation"] == "round"
    with pytest.raises(ValueError, match="uint8 images already"):
        open_images(str(tmp_path / "batch.npz"), quantisation="round")
    # Grey images are repeated to three channels for an extractor that takes colour.
    grey = next(open_images(str(tmp_path / "batch.npz"), channels=3, limit=4).batches(4))
    assert grey.shape == (4, 3, 8, 8) and torch.equal(grey[:, 0], grey[:, 2])


def test_attach_image_features_of_an_adm_batch(tmp_path):
    path = tmp_path / "VIRTUAL_x.npz"
    arrays = _adm_batch(path)
    stats = load_reference(path)
    attach_image_features(stats, PixelExtractor(), batch_size=2, progress=False)
    expected = from_uint8(torch.from_numpy(arrays["arr_0"].transpose(0, 3, 1, 2).copy())).reshape(5, -1).numpy()
    np.testing.assert_array_equal(stats.features["pool"], expected)
    edm = tmp_path / "cifar10-32x32.npz"
    _mu_sigma_file(edm)
    with pytest.raises(ValueError, match="store no real images"):
        attach_image_features(load_reference(edm), PixelExtractor())


def test_cli_info(tmp_path, capsys):
    path = tmp_path / "VIRTUAL_x.npz"
    _adm_batch(path)
    assert main(["stats", "info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "adm" and info["layers"] == {"pool": 8, "spatial": 5} and info["images"]["count"] == 5


# Registry and fetch.


def test_shipped_registry():
    registry = load_registry()
    files = {entry.file for entry in registry.values()}
    assert {"VIRTUAL_imagenet64_labeled.npz", "VIRTUAL_lsun_bedroom256.npz", "VIRTUAL_lsun_cat256.npz",
            "cifar10-32x32.npz", "imagenet-64x64.npz", "cifar10_legacy_tensorflow_train_32.npz"} <= files
    raw = __import__("yaml").safe_load((REPO / "reference_stats" / "registry.yaml").read_text())
    for item in raw["entries"]:
        assert set(REQUIRED_KEYS) <= set(item), item["name"]
    for entry in registry.values():
        assert entry.url.startswith("https://") and entry.url.endswith("/" + entry.file)
        assert entry.format in ("adm", "edm", "clean-fid", "edm2") and entry.resolution[0] == entry.resolution[1]
    assert find_entry(registry, "edm2-img512").url == "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img512.pkl"
    adm = find_entry(registry, "VIRTUAL_lsun_cat256.npz")
    assert adm.url == "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/lsun/cat/VIRTUAL_lsun_cat256.npz"
    assert find_entry(registry, "edm-cifar10-32").url == "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz"
    legacy = find_entry(registry, "cleanfid-cifar10-legacy-tf-train-32")
    assert legacy.url == "https://www.cs.cmu.edu/~clean-fid/stats/cifar10_legacy_tensorflow_train_32.npz"
    with pytest.raises(ValueError, match="no reference file 'nope'.*adm-imagenet64"):
        find_entry(registry, "nope")


def _registry_text(**changes) -> str:
    entry = {"name": "toy", "file": "t.npz", "url": "https://example.org/x/t.npz", "sha256": None, "format": "edm",
             "profile": "edm", "dataset": "toy", "resolution": [8, 8], "source": "here"}
    entry.update(changes)
    entry = {k: v for k, v in entry.items() if v != "DROP"}
    return __import__("yaml").safe_dump({"format": "cmbench-reference-registry/1", "entries": [entry]})


@pytest.mark.parametrize("changes, match", [
    ({"url": "DROP"}, r"entries\[0\]\.url: missing required key"),
    ({"sha256": "abc"}, r"entries\[0\]\.sha256: expected 64 lower-case hex digits"),
    ({"url": "http://example.org/t.npz"}, r"entries\[0\]\.url: .*https://"),
    ({"format": "tf"}, r"entries\[0\]\.format"),
    ({"resolution": [8]}, r"entries\[0\]\.resolution: expected \[height, width\]"),
    ({"colour": "red"}, r"entries\[0\]\.colour: unknown key"),
])
def test_registry_validation(tmp_path, changes, match):
    path = tmp_path / "registry.yaml"
    path.write_text(_registry_text(**changes))
    with pytest.raises(ConfigError, match=match):
        load_registry(path)


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": "11"}


def test_fetch_offline_names_url_and_destination(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    entry = find_entry(load_registry(), "edm-cifar10-32")
    with pytest.raises(RuntimeError) as err:
        fetch_reference(entry, tmp_path / "refs", progress=False)
    message = str(err.value)
    assert entry.url in message and str(tmp_path / "refs" / "cifar10-32x32.npz") in message
    assert not (tmp_path / "refs" / "cifar10-32x32.npz").exists()
    assert main(["stats", "fetch", "edm-cifar10-32", "--dest", str(tmp_path / "refs"), "--quiet"]) == 2
    assert entry.url in capsys.readouterr().err


def test_fetch_writes_atomically_and_checks_sha256(tmp_path, monkeypatch):
    import hashlib

    payload = b"npz payload"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    path = tmp_path / "registry.yaml"
    path.write_text(_registry_text(sha256="0" * 64))
    with pytest.raises(ValueError, match="sha256 .* not the registry's 0000"):
        fetch_reference(load_registry(path)["toy"], tmp_path / "d", progress=False)
    assert not list((tmp_path / "d").iterdir())  # nothing published, no temp file left
    digest = hashlib.sha256(payload).hexdigest()
    path.write_text(_registry_text(sha256=digest))
    entry = load_registry(path)["toy"]
    assert fetch_reference(entry, tmp_path / "d", progress=False) == (tmp_path / "d" / "t.npz", digest, True)
    assert (tmp_path / "d" / "t.npz").read_bytes() == payload
    assert fetch_reference(entry, tmp_path / "d", progress=False)[2] is False  # already present: no download
