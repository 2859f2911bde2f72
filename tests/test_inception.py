"""The ``inception-tf`` extractor against torch-fidelity's own Inception-v3, and its weights file.

No real weights are needed (nor downloaded): the agreement tests write a randomly initialised
state dict in the official file's format (a plain dict of float32 tensors under the official
keys, no ``num_batches_tracked``), load it into both cmbench's extractor and torch-fidelity's
``FeatureExtractorInceptionV3`` (``feature_extractor_weights_path=``) and compare the features
on the same uint8 images. torch-fidelity is imported through a torchvision stub
(:mod:`cmbench.reference_impls`). Measured on the CPU: pool, logits and spatial agree exactly
(max |diff| 0.0); the resize is bit-identical too. The tolerance asserted is 1e-5.

The test at the end runs only with the real file (``$CMBENCH_INCEPTION_WEIGHTS``).
"""

from __future__ import annotations

import io
import os
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cmbench import weights as weights_module
from cmbench.checkpoints.hashing import sha256_file
from cmbench.features import build_extractor
from cmbench.features.inception import InceptionExtractor, full_float32
from cmbench.nets.inception_tf import SPATIAL_DIM, InceptionV3TF, resize_bilinear_tf1
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError
from cmbench.weights import (
    ENV_VAR,
    FETCH_COMMAND,
    INCEPTION_WEIGHTS,
    WeightsDownloadError,
    WeightsFile,
    WeightsHashError,
    fetch_inception_weights,
    find_inception_weights,
    verify_weights,
)

from cmbench.reference_impls import torchvision_stubbed

TOLERANCE = 1e-5
NAME = INCEPTION_WEIGHTS.file_name


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official file's format, scaled so activations stay O(1) through the net.

    Convolutions get He-normal weights; every batch norm random statistics and affine terms (the
    module's default init would make batch norm the identity and shrink activations to ~0, a
    weak test).
    """
    torch.manual_seed(seed)
    net = InceptionV3TF()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0.0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / NAME
    torch.save(random_official_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def fidelity(weights_file):
    """torch-fidelity's extractor (features '2048', 'logits_unbiased') on the random weights, and its resize.

    torch-fidelity is imported with the torchvision stub installed; the stub and the imported
    torch_fidelity modules are gone again when the fixture returns.
    """
    with torchvision_stubbed():
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights_file)
        )
    assert not any(name == "torchvision" or name.startswith(("torchvision.", "torch_fidelity")) for name in sys.modules)
    assert not any(type(finder).__module__ == "cmbench.reference_impls" for finder in sys.meta_path)
    return net, interpolate_bilinear_2d_like_tensorflow1x


@pytest.fixture(scope="module")
def extractor(weights_file) -> InceptionExtractor:
    return InceptionExtractor(weights_file, expected_sha256=sha256_file(weights_file))


def uint8_images(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), generator=g, dtype=torch.uint8)


def fidelity_features(net, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """torch-fidelity's pool and logits, and its Mixed_6d.branch1x1 activation caught by a hook."""
    caught = {}
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda module, args, out: caught.update(act=out.clone()))
    try:
        with torch.no_grad():
            pool, logits = net(images)
    finally:
        hook.remove()
    return {"pool": pool, "logits": logits, "act": caught["act"]}


# --- agreement with torch-fidelity ------------------------------------------------------------


def test_state_dict_keys_and_shapes_are_torch_fidelitys(fidelity):
    ours = InceptionV3TF().state_dict()
    theirs = fidelity[0].state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_official_format_file_loads_strictly(weights_file):
    state = torch.load(weights_file, weights_only=True)
    assert type(state) is dict and not any(k.endswith("num_batches_tracked") for k in state)
    InceptionV3TF().load_state_dict(state, strict=True)


@pytest.mark.parametrize("shape", [(4, 32, 32), (1, 17, 23)], ids=["4x32x32", "1x17x23"])
def test_features_match_torch_fidelity(extractor, fidelity, shape):
    images = uint8_images(*shape, seed=sum(shape))
    ours = extractor.extract(images, ["pool", "logits", "spatial"])
    theirs = fidelity_features(fidelity[0], images)
    assert ours["pool"].shape == (shape[0], 2048) and ours["logits"].shape == (shape[0], 1008)
    assert theirs["pool"].abs().mean() > 0.1 and theirs["logits"].abs().mean() > 0.1  # a real test, not ~0
    for layer in ("pool", "logits"):
        diff = (ours[layer] - theirs[layer]).abs().max().item()
        assert diff <= TOLERANCE, f"{layer}: max |diff| {diff}"
    act = theirs["act"]
    assert act.shape[1:] == (192, 17, 17)
    expected = act[:, :7].permute(0, 2, 3, 1).reshape(shape[0], -1)
    assert (ours["spatial"] - expected).abs().max().item() <= TOLERANCE


def test_spatial_is_mixed_6d_branch1x1_in_nhwc_order(extractor, fidelity):
    images = uint8_images(2, 32, 32, seed=7)
    spatial = extractor.extract(images, ["spatial"])["spatial"]
    assert spatial.shape == (2, SPATIAL_DIM) == (2, 17 * 17 * 7)
    act = fidelity_features(fidelity[0], images)["act"]
    # element k of an image is (row, column, channel) = (k // 119, k // 7 % 17, k % 7)
    for n, k in [(0, 0), (0, 6), (0, 7), (1, 118), (1, 119), (1, 2022), (0, 1000)]:
        row, col, channel = k // (17 * 7), k // 7 % 17, k % 7
        assert abs(spatial[n, k].item() - act[n, channel, row, col].item()) <= TOLERANCE
    assert spatial.abs().sum() > 0


@pytest.mark.parametrize("in_size,out_size", [((32, 32), (299, 299)), ((17, 23), (299, 299)), ((300, 451), (299, 299)),
                                              ((5, 9), (12, 4)), ((64, 64), (64, 64))])
def test_resize_matches_torch_fidelity(fidelity, in_size, out_size):
    g = torch.Generator().manual_seed(in_size[0] * 1000 + in_size[1])
    x = torch.rand(2, 3, *in_size, generator=g) * 255
    ours = resize_bilinear_tf1(x, out_size)
    theirs = fidelity[1](x, size=out_size, align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, *out_size)
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert torch.equal(ours, theirs)  # measured: bit-identical on the CPU


def test_resize_is_tf1_on_a_hand_example():
    # 2 -> 4 pixels, align_corners=False: positions 0, 0.5, 1, 1.5 -> x0, mid, x1, x1 (clamped)
    x = torch.tensor([[[[10.0, 30.0]]]])
    assert resize_bilinear_tf1(x, (1, 4)).flatten().tolist() == [10.0, 20.0, 30.0, 30.0]


def test_grey_images_are_replicated_to_rgb(extractor):
    grey = uint8_images(2, 16, 16, seed=3)[:, :1]
    got = extractor.extract(grey, ["pool", "spatial"])
    want = extractor.extract(grey.repeat(1, 3, 1, 1), ["pool", "spatial"])
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_batching_does_not_change_features(weights_file, extractor):
    images = uint8_images(3, 24, 24, seed=11)
    small = InceptionExtractor(weights_file, expected_sha256=sha256_file(weights_file), batch_size=2)
    a = small.extract(images, ["pool", "logits"])
    b = extractor.extract(images, ["pool", "logits"])
    assert all((a[k] - b[k]).abs().max() <= TOLERANCE for k in a)


def test_extractor_identity_and_input_checks(extractor, weights_file):
    assert extractor.name == "inception-tf" and extractor.layers == ("pool", "logits", "spatial")
    assert extractor.weights_sha256 == sha256_file(weights_file)
    assert extractor.identity == {"extractor": "inception-tf", "extractor_sha256": sha256_file(weights_file)}
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(torch.zeros(1, 3, 8, 8), ["pool"])
    with pytest.raises(ValueError, match="1 .grey. or 3"):
        extractor.extract(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), ["pool"])
    with pytest.raises(ValueError, match="no layer"):
        extractor.extract(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["features"])
    assert extractor.extract(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), ["spatial"])["spatial"].shape == (0, 2023)


def test_tf32_is_off_inside_a_cuda_call_and_restored_after():
    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision settings (torch < 2.9); the allow_tf32 flags are used")
    before = (matmul.fp32_precision, conv.fp32_precision)
    with full_float32(torch.device("cuda")):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with full_float32(torch.device("cpu")):
        assert (matmul.fp32_precision, conv.fp32_precision) == before


# --- finding and verifying the weights file ---------------------------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch) -> Path:
    """No weights anywhere: the torch hub folder and cmbench's cache point into an empty tmp folder."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path


def test_missing_weights_say_what_to_put_where(empty_caches):
    with pytest.raises(FileNotFoundError) as info:
        build_extractor({"extractor": "inception-tf"}, {})
    msg = str(info.value)
    for part in (NAME, FETCH_COMMAND, INCEPTION_WEIGHTS.url, INCEPTION_WEIGHTS.sha256, ENV_VAR,
                 str(empty_caches / "torch" / "hub" / "checkpoints" / NAME), str(empty_caches / "xdg" / "cmbench")):
        assert part in msg, f"{part!r} not in {msg!r}"


def test_missing_explicit_path_is_an_error_not_a_fallthrough(empty_caches, weights_file, monkeypatch):
    hub = empty_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / NAME).write_bytes(weights_file.read_bytes())
    missing = empty_caches / "elsewhere" / NAME
    with pytest.raises(FileNotFoundError, match=str(missing)):
        find_inception_weights(missing, sha256=None)
    with pytest.raises(FileNotFoundError, match=f"features.weights.*{FETCH_COMMAND}"):
        build_extractor({"extractor": "inception-tf", "weights": "elsewhere/w.pth"}, {}, base_dir=empty_caches)
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=f"\\${ENV_VAR}"):
        find_inception_weights(sha256=None)
    monkeypatch.delenv(ENV_VAR)
    assert find_inception_weights(sha256=sha256_file(weights_file)) == hub / NAME


def test_search_order_and_folders(empty_caches, weights_file, monkeypatch):
    digest = sha256_file(weights_file)
    cache = empty_caches / "xdg" / "cmbench"
    cache.mkdir(parents=True)
    (cache / NAME).write_bytes(weights_file.read_bytes())
    assert find_inception_weights(sha256=digest) == cache / NAME
    hub = empty_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / NAME).write_bytes(weights_file.read_bytes())
    assert find_inception_weights(sha256=digest) == hub / NAME  # torch hub before cmbench's cache
    monkeypatch.setenv(ENV_VAR, str(weights_file.parent))  # a folder holding the file
    assert find_inception_weights(sha256=digest) == weights_file
    assert find_inception_weights(hub, sha256=digest) == hub / NAME  # an explicit path wins


def test_corrupted_file_is_a_hash_error_naming_it(empty_caches, weights_file, monkeypatch):
    bad = empty_caches / "bad" / NAME
    bad.parent.mkdir()
    bad.write_bytes(weights_file.read_bytes()[:-100])
    with pytest.raises(WeightsHashError) as info:
        verify_weights(bad)
    assert str(bad) in str(info.value) and INCEPTION_WEIGHTS.sha256 in str(info.value)
    monkeypatch.setenv(ENV_VAR, str(bad))
    with pytest.raises(WeightsHashError, match=str(bad)):
        build_extractor({"extractor": "inception-tf"}, {})
    # a suite's weights must be the official file: the random test file is refused by its hash
    with pytest.raises(WeightsHashError, match=str(weights_file)):
        build_extractor({"extractor": "inception-tf", "weights": str(weights_file)}, {})


def test_fetch_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights_module.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsDownloadError) as info:
        fetch_inception_weights(tmp_path / "dest", progress=False)
    msg = str(info.value)
    for part in (INCEPTION_WEIGHTS.url, str(tmp_path / "dest" / NAME), INCEPTION_WEIGHTS.sha256, "no network"):
        assert part in msg, f"{part!r} not in {msg!r}"
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


class _Response(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_fetch_writes_only_a_verified_file(tmp_path, monkeypatch):
    import hashlib

    payload = b"not really inception" * 1000
    spec = WeightsFile("w.pth", "https://example.invalid/w.pth", hashlib.sha256(payload).hexdigest(), len(payload))
    served = []
    monkeypatch.setattr(weights_module.urllib.request, "urlopen",
                        lambda url, timeout: served.append(url) or _Response(served_bytes[0]))
    served_bytes = [payload[:-1] + b"!"]  # the server sends something else: nothing is written
    with pytest.raises(WeightsHashError, match="nothing was written"):
        fetch_inception_weights(tmp_path, progress=False, spec=spec)
    assert list(tmp_path.iterdir()) == []
    served_bytes[0] = payload
    assert fetch_inception_weights(tmp_path, progress=False, spec=spec) == tmp_path / "w.pth"
    assert (tmp_path / "w.pth").read_bytes() == payload and [p.name for p in tmp_path.iterdir()] == ["w.pth"]
    assert fetch_inception_weights(tmp_path, progress=False, spec=spec) == tmp_path / "w.pth"
    assert len(served) == 2  # the verified file was kept, not downloaded again


# --- suites -----------------------------------------------------------------------------------


def inception_suite(**features) -> dict:
    return {
        "name": "t",
        "num_samples": 16,
        "features": {"extractor": "inception-tf", **features},
        "metrics": ["fid"],
        "reference": {"model": "mix", "num_images": 32},
        "models": {"mix": {"family": "gmm", "image_shape": [3, 8, 8],
                           "random": {"count": 2, "seed": 0, "mean_scale": 0.7, "std": 0.15}, "ode_steps": 4}},
        "runs": [{"model": "mix", "sampler": "euler", "nfe": [1]}],
    }


def test_suite_validation_accepts_a_weights_path(tmp_path):
    suite = parse_suite(inception_suite(weights="weights/" + NAME), "s.yaml", tmp_path)
    assert suite.features == {"extractor": "inception-tf", "weights": "weights/" + NAME}
    assert parse_suite(inception_suite(), "s.yaml", tmp_path).features == {"extractor": "inception-tf"}
    with pytest.raises(ConfigError, match=r"features.weights: only the inception-tf, inception-tf\+clean-resize, dinov2-vitl14, .* extractors take weights"):
        parse_suite({**inception_suite(), "features": {"extractor": "pixels", "weights": "w.pth"}}, "s.yaml", tmp_path)
    with pytest.raises(ConfigError, match="features.weights: expected a non-empty string"):
        parse_suite(inception_suite(weights=3), "s.yaml", tmp_path)


def test_a_run_without_weights_fails_before_sampling(empty_caches):
    from cmbench.runner import run_suite

    suite = parse_suite(inception_suite(), "s.yaml", empty_caches)
    out = empty_caches / "out"
    with pytest.raises(FileNotFoundError, match=FETCH_COMMAND):
        run_suite(suite, out, device="cpu", progress=False)
    assert not (out / "results.jsonl").exists()


# --- the real weights (only where the file is) ------------------------------------------------


def _real_weights() -> Path | None:
    given = os.environ.get(ENV_VAR)
    if not given:
        return None
    path = Path(given).expanduser()
    path = path / NAME if path.is_dir() else path
    return path if path.is_file() and sha256_file(path) == INCEPTION_WEIGHTS.sha256 else None


@pytest.mark.skipif(_real_weights() is None, reason=f"the real Inception weights file is absent (set ${ENV_VAR} to {NAME})")
def test_real_weights_agree_with_torch_fidelity():
    path = _real_weights()
    extractor = InceptionExtractor(path)
    assert extractor.weights_sha256 == INCEPTION_WEIGHTS.sha256
    with torchvision_stubbed():
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=str(path))
    for shape in [(4, 32, 32), (1, 17, 23)]:
        images = uint8_images(*shape, seed=1)
        ours = extractor.extract(images, ["pool", "logits", "spatial"])
        theirs = fidelity_features(net, images)
        assert (ours["pool"] - theirs["pool"]).abs().max() <= TOLERANCE
        assert (ours["logits"] - theirs["logits"]).abs().max() <= TOLERANCE
        expected = theirs["act"][:, :7].permute(0, 2, 3, 1).reshape(shape[0], -1)
        assert (ours["spatial"] - expected).abs().max() <= TOLERANCE
        # pool3 of natural-ish inputs is non-negative (after ReLU and averaging) and not all zero
        assert (ours["pool"] >= 0).all() and ours["pool"].sum() > 0


def test_cli_weights_fetch_offline_exits_2_saying_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    from cmbench.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(weights_module.urllib.request, "urlopen", offline)
    assert main(["weights", "fetch", "--dest", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert NAME in err and str(tmp_path) in err
    assert not list(tmp_path.iterdir())


# --- clean-fid's "clean" mode: PIL bicubic resize outside the network -------------------------


def test_pil_bicubic_resize_equals_clean_fids_resizer():
    from cmbench.features.resize import resize_pil_bicubic
    from cmbench.reference_impls import import_reference

    resizer = import_reference("cleanfid.resize").make_resizer("PIL", False, "bicubic", (299, 299))
    for shape in [(2, 3, 32, 32), (1, 3, 17, 23), (1, 3, 299, 299)]:
        images = uint8_images(shape[0], *shape[2:], seed=3)
        ours = resize_pil_bicubic(images)
        theirs = np.stack([resizer(image.permute(1, 2, 0).numpy()) for image in images]).transpose(0, 3, 1, 2)
        assert ours.dtype == torch.float32 and ours.shape == (shape[0], 3, 299, 299)
        np.testing.assert_array_equal(ours.numpy(), theirs)


def test_clean_mode_extractor_feeds_the_network_the_clean_resize(weights_file):
    from cmbench.features.resize import resize_pil_bicubic

    clean = InceptionExtractor(weights_file, resize="pil_bicubic", expected_sha256=sha256_file(weights_file))
    assert clean.name == "inception-tf+clean-resize" and clean.identity["extractor"] == "inception-tf+clean-resize"
    images = uint8_images(2, 24, 24, seed=4)
    ours = clean.extract(images, ["pool", "logits"])
    with torch.no_grad():
        direct = clean.net(resize_pil_bicubic(images))
    assert torch.equal(ours["pool"], direct["pool"]) and torch.equal(ours["logits"], direct["logits"])
    tf_resized = InceptionExtractor(weights_file, expected_sha256=sha256_file(weights_file)).extract(images, ["pool"])
    assert not torch.equal(ours["pool"], tf_resized["pool"])  # the recipes differ, and so do the features
    with pytest.raises(ValueError, match="unknown resize 'area'; accepted: tf1_bilinear, pil_bicubic"):
        InceptionExtractor(weights_file, resize="area", expected_sha256=sha256_file(weights_file))


# --- profiles end to end on the Inception path (random weights in the official format) --------


@pytest.fixture
def random_weights_are_official(weights_file, monkeypatch):
    """Let suites use the random test file as if it were the official one (its hash is pinned)."""
    monkeypatch.setitem(InceptionExtractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(weights_file))
    return weights_file


def _gmm_suite(weights: Path, **changes) -> dict:
    return {"name": "inception-e2e", "num_samples": 12, "batch_size": 12, "grid_images": 0,
            "features": {"weights": str(weights)}, "uncertainty": {"bootstrap": 0},
            "models": {"mix": {"family": "gmm", "image_shape": [3, 8, 8],
                               "random": {"count": 4, "seed": 0, "mean_scale": 0.7, "std": 0.15}}},
            "runs": [{"model": "mix", "sampler": "heun", "nfe": [3]}], **changes}


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 12 samples in 2048-d: singular covariances
def test_profile_adm_with_an_adm_reference_batch_gives_fid_sfid_is_precision_recall(tmp_path, random_weights_are_official,
                                                                                   exact_low_rank_sqrtm):
    from cmbench.metrics.fid import feature_statistics
    from cmbench.results import read_rows
    from cmbench.runner import run_suite

    extractor = InceptionExtractor(random_weights_are_official)
    images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
    features = extractor.extract(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), ["pool", "spatial"])
    (mu, sigma), (mu_s, sigma_s) = (feature_statistics(features[k].numpy()) for k in ("pool", "spatial"))
    batch = tmp_path / "VIRTUAL_test8.npz"
    np.savez(batch, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    raw = _gmm_suite(random_weights_are_official, profile="adm", reference={"path": str(batch)})
    run_suite(parse_suite(raw, "adm.yaml", tmp_path), tmp_path / "out", device="cpu", progress=False)
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    for column in ("fid", "sfid", "is_mean", "precision", "recall"):
        assert isinstance(row[column], float) and np.isfinite(row[column]), column
    assert row["profile"] == "adm" and row["quantisation"] == "truncate" and row["extractor"] == "inception-tf"


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_the_same_samples_under_edm_and_clean_fid_side_by_side(tmp_path, random_weights_are_official, exact_low_rank_sqrtm):
    from cmbench.metrics.reference import ReferenceStats, save_reference
    from cmbench.results import read_rows
    from cmbench.runner import run_suite

    extractor = InceptionExtractor(random_weights_are_official)
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(16, 3, 8, 8), dtype=np.uint8))
    meta = {**extractor.identity, "num_images": 16, "resolution": [8, 8], "source": "test images"}
    reference = tmp_path / "ref.npz"
    pool = extractor.extract(images, ["pool"])["pool"].numpy()
    save_reference(reference, ReferenceStats.from_features({"pool": pool}, meta, keep_features={"pool": 16}))
    raw = _gmm_suite(random_weights_are_official, reference={"path": str(reference)},
                     profiles={"edm": {}, "clean-fid": {}})
    report = run_suite(parse_suite(raw, "two.yaml", tmp_path), tmp_path / "out", device="cpu", progress=False)
    rows = {r["row_id"]: r for r in read_rows(tmp_path / "out" / "results.jsonl")}
    edm, clean = rows["mix.heun.nfe3@edm"], rows["mix.heun.nfe3@clean-fid"]
    assert (edm["quantisation"], clean["quantisation"]) == ("round", "truncate")
    assert edm["fid"] != clean["fid"] and np.isfinite(clean["kid"])  # round vs truncate, registered by FID
    html = report.read_text()
    assert "heun @edm" in html and "heun @clean-fid" in html
