"""The toy classifier and its extractor: the shipped checkpoint classifies the held-out digits,
its features match the shipped reference statistics, FID / IS on it behave like FID / IS, and
suites can name it. Uses the shipped files; only a 5-step smoke run trains anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmbench.checkpoints.hashing import sha256_file
from cmbench.checkpoints.native import load_native
from cmbench.features import build_extractor
from cmbench.features.toy import ToyClassifierExtractor
from cmbench.images import from_uint8
from cmbench.metrics.fid import feature_statistics, frechet_distance
from cmbench.metrics.inception_score import inception_score
from cmbench.metrics.reference import load_reference
from cmbench.nets import ARCHITECTURES, build_network
from cmbench.nets.toy_classifier import ToyClassifier
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError
from cmbench.zoo.toy import classifier as toy_classifier
from cmbench.zoo.toy.classifier import CLASSIFIER_ARCH, CLASSIFIER_KWARGS, DEFAULT_CLASSIFIER, accuracy, train_classifier
from cmbench.zoo.toy.data import load_toy
from cmbench.zoo.toy.reference import compute_toy_reference

REPO = Path(__file__).resolve().parents[1]
REFERENCES = {"all": REPO / "reference_stats" / "toy-digits-all.npz", "test": REPO / "reference_stats" / "toy-digits-test.npz"}
FEATURE_DIM = CLASSIFIER_KWARGS["feature_dim"]


@pytest.fixture(scope="module")
def extractor() -> ToyClassifierExtractor:
    return ToyClassifierExtractor(DEFAULT_CLASSIFIER)


@pytest.fixture(scope="module")
def split_features(extractor) -> dict[str, dict[str, torch.Tensor]]:
    return {split: extractor.extract(load_toy(split)[0], ("pool", "logits")) for split in ("all", "test")}


def test_network_is_registered_and_shapes():
    assert ARCHITECTURES["toy_classifier"] is ToyClassifier
    net = build_network("toy_classifier", {"width": 8, "feature_dim": 16})
    pool, logits = net.features(torch.zeros(3, 1, 8, 8))
    assert pool.shape == (3, 16) and logits.shape == (3, 10)
    assert torch.equal(net(torch.zeros(3, 1, 8, 8)), logits)
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        net(torch.zeros(3, 1, 16, 16))


def test_shipped_classifier_accuracy_and_provenance():
    ckpt = load_native(DEFAULT_CLASSIFIER)
    assert (ckpt.arch, ckpt.family, ckpt.arch_kwargs) == (CLASSIFIER_ARCH, "classifier", CLASSIFIER_KWARGS)
    assert ckpt.model_options == {"image_shape": [1, 8, 8], "num_classes": 10}
    assert {"seed", "steps", "training_seconds", "test_accuracy"} <= set(ckpt.meta)
    measured = accuracy(ckpt.net, "test")
    assert measured >= 0.95
    assert measured == pytest.approx(ckpt.meta["test_accuracy"], abs=1e-9)


def test_extractor_identity_is_the_shipped_file(extractor):
    assert extractor.identity == {"extractor": "toy-classifier", "extractor_sha256": sha256_file(DEFAULT_CLASSIFIER)}
    assert extractor.layers == ("pool", "logits")


def test_extract_shapes_dtypes_and_input_checks(extractor):
    images = load_toy("test")[0][:17]
    out = extractor.extract(images, ("pool", "logits"))
    assert out["pool"].shape == (17, FEATURE_DIM) and out["logits"].shape == (17, 10)
    assert out["pool"].dtype == out["logits"].dtype == torch.float32
    assert set(extractor.extract(images, ("logits",))) == {"logits"}
    with pytest.raises(ValueError, match="uint8"):
        extractor.extract(from_uint8(images), ("pool",))
    with pytest.raises(ValueError, match="spatial"):
        extractor.extract(images, ("spatial",))


@pytest.mark.parametrize("split", ["all", "test"])
def test_shipped_reference_matches_fresh_features(split, extractor, split_features):
    ref = load_reference(REFERENCES[split])
    n = len(load_toy(split)[0])
    assert ref.meta["extractor"] == extractor.identity["extractor"]
    assert ref.meta["extractor_sha256"] == extractor.identity["extractor_sha256"]
    assert ref.meta["num_images"] == n and ref.meta["resolution"] == [8, 8]
    assert ref.meta["source"] == f"sklearn digits ({split}, {n} images)"
    ref.check_compatible(extractor.identity, str(REFERENCES[split]))
    pool = split_features[split]["pool"].numpy().astype(np.float64)
    np.testing.assert_allclose(ref.mu["pool"], pool.mean(axis=0), rtol=0, atol=1e-6)
    assert ref.features["pool"].shape == (n, FEATURE_DIM)


def test_compute_toy_reference_keeps_every_pool_row(extractor):
    stats = compute_toy_reference(extractor, "test")
    assert stats.features["pool"].shape == (297, FEATURE_DIM)
    assert set(stats.mu) == {"pool", "logits"}
    assert stats.meta["quantisation"] == "exact (dataset grey levels)"


def test_inception_score_and_fid_behave(split_features, extractor):
    is_mean, _ = inception_score(split_features["test"]["logits"], splits=1)
    assert is_mean > 7
    ref = load_reference(REFERENCES["all"])
    real = frechet_distance(*feature_statistics(split_features["test"]["pool"]), ref.mu["pool"], ref.sigma["pool"])
    noise_images = torch.randint(0, 256, (297, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    noise_pool = extractor.extract(noise_images, ("pool",))["pool"]
    noise = frechet_distance(*feature_statistics(noise_pool), ref.mu["pool"], ref.sigma["pool"])
    assert noise > 10 * real


def _suite(features: dict) -> dict:
    return {
        "name": "t",
        "num_samples": 16,
        "features": features,
        "metrics": ["fid", "inception_score"],
        "reference": {"path": str(REFERENCES["all"])},
        "models": {"mix": {"family": "gmm", "image_shape": [1, 8, 8], "random": {"count": 2, "seed": 0, "mean_scale": 0.5, "std": 0.2}}},
        "runs": [{"model": "mix", "sampler": "heun", "nfe": [3]}],
    }


def test_suite_default_extractor_validates_and_builds(tmp_path):
    suite = parse_suite(_suite({"extractor": "toy-classifier"}), str(tmp_path / "s.yaml"), tmp_path)
    built = build_extractor(suite.features, {}, base_dir=suite.base_dir)
    assert built.identity["extractor_sha256"] == sha256_file(DEFAULT_CLASSIFIER)


def test_suite_relative_checkpoint_resolves_against_suite_folder(tmp_path):
    shutil.copy(DEFAULT_CLASSIFIER, tmp_path / "clf.pt")
    suite = parse_suite(_suite({"extractor": "toy-classifier", "checkpoint": "clf.pt"}), str(tmp_path / "s.yaml"), tmp_path)
    built = build_extractor(suite.features, {}, base_dir=suite.base_dir)
    assert built.checkpoint == tmp_path / "clf.pt"


def test_suite_missing_checkpoint_names_the_file(tmp_path):
    suite = parse_suite(_suite({"extractor": "toy-classifier", "checkpoint": "missing.pt"}), str(tmp_path / "s.yaml"), tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.pt") as info:
        build_extractor(suite.features, {}, base_dir=suite.base_dir)
    assert str(tmp_path / "missing.pt") in str(info.value)


def test_suite_checkpoint_only_for_toy_classifier(tmp_path):
    with pytest.raises(ConfigError, match="features.checkpoint"):
        parse_suite(_suite({"extractor": "pixels", "checkpoint": "x.pt"}), str(tmp_path / "s.yaml"), tmp_path)
    with pytest.raises(ConfigError, match="features.checkpoint"):
        parse_suite(_suite({"extractor": "toy-classifier", "checkpoint": ""}), str(tmp_path / "s.yaml"), tmp_path)


def test_train_classifier_smoke():
    net = train_classifier(seed=1, steps=5, batch_size=32)
    images, labels = load_toy("test")
    with torch.no_grad():
        pool, logits = net.features(from_uint8(images[:8]))
        loss = F.cross_entropy(logits, labels[:8])
    assert not net.training
    assert pool.shape == (8, FEATURE_DIM) and logits.shape == (8, 10)
    assert torch.isfinite(loss)


def test_training_script_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "clf.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(SystemExit):
        toy_classifier.main(["--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
