import json
import re

import numpy as np
import pytest

from cmbench.metrics import METRICS, MetricOptions, compute_metrics, layers_for
from cmbench.metrics.fid import feature_statistics, frechet_distance
from cmbench.metrics.inception_score import inception_score
from cmbench.metrics.precision_recall import precision_recall
from cmbench.metrics.reference import ReferenceStats, load_reference, save_reference

IDENTITY = {"extractor": "inception-v3-tf", "extractor_sha256": "a" * 64}


def _meta(**extra):
    meta = {
        **IDENTITY,
        "num_images": 300,
        "resolution": [32, 32],
        "source": "toy dataset, train split",
    }
    meta.update(extra)
    return meta


def _stats(keep=None):
    rng = np.random.default_rng(0)
    features = {"pool": rng.standard_normal((300, 8)), "spatial": rng.standard_normal((300, 5))}
    return ReferenceStats.from_features(features, _meta(quantisation="uint8"), keep_features=keep), features


def test_from_features_computes_statistics_and_keeps_rows():
    stats, features = _stats(keep={"pool": 100})
    np.testing.assert_allclose(stats.mu["pool"], features["pool"].mean(0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(stats.sigma["spatial"], np.cov(features["spatial"], rowvar=False), rtol=1e-12)
    assert stats.features["pool"].shape == (100, 8)
    np.testing.assert_array_equal(stats.features["pool"], features["pool"][:100])
    assert set(stats.features) == {"pool"}
    with pytest.raises(ValueError, match="logits"):
        ReferenceStats.from_features(features, _meta(), keep_features={"logits": 10})
    with pytest.raises(ValueError, match="300 rows"):
        ReferenceStats.from_features(features, _meta(), keep_features={"pool": 301})


def test_round_trip(tmp_path):
    stats, _ = _stats(keep={"pool": 50})
    path = tmp_path / "sub" / "ref.npz"
    save_reference(path, stats)
    loaded = load_reference(path)
    assert loaded.meta == stats.meta
    for kind in ("mu", "sigma", "features"):
        ours, theirs = getattr(stats, kind), getattr(loaded, kind)
        assert set(ours) == set(theirs) and ours
        for layer in ours:
            assert theirs[layer].dtype == ours[layer].dtype
            np.testing.assert_array_equal(theirs[layer], ours[layer])
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == [
            "features.pool", "meta", "mu.pool", "mu.spatial", "sigma.pool", "sigma.spatial"
        ]
        assert raw["meta"].ndim == 0 and json.loads(str(raw["meta"]))["resolution"] == [32, 32]
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]  # no temp file left behind


def test_refuses_to_overwrite(tmp_path):
    stats, _ = _stats()
    path = tmp_path / "ref.npz"
    save_reference(path, stats)
    before = path.read_bytes()
    other = ReferenceStats(stats.mu, stats.sigma, {}, _meta(source="other"))
    with pytest.raises(FileExistsError, match="ref.npz"):
        save_reference(path, other)
    assert path.read_bytes() == before
    save_reference(path, other, overwrite=True)
    assert load_reference(path).meta["source"] == "other"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_reference(tmp_path / "nothere.npz")


def test_file_without_meta_explains_format(tmp_path):
    # A bare mu/sigma file is read as EDM statistics by default (tests/test_reference_formats.py);
    # insisting on cmbench's own format explains what that format needs.
    path = tmp_path / "adm_style.npz"
    np.savez(path, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match=r"adm_style\.npz.*no 'meta'.*cmbench reference file"):
        load_reference(path, format="cmbench")


def test_file_with_incomplete_meta(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, **{"mu.pool": np.zeros(3), "sigma.pool": np.eye(3)},
             meta=np.array(json.dumps({"extractor": "x", "source": "y"})))
    with pytest.raises(ValueError, match=r"partial\.npz.*extractor_sha256, num_images, resolution"):
        load_reference(path)


def _corrupt_file(path, layer="pool", **arrays):
    """A cmbench reference file whose ``layer`` arrays are replaced by ``arrays`` (kind: value)."""
    stats, _ = _stats(keep={"pool": 50})
    for kind, value in arrays.items():
        getattr(stats, kind)[layer] = value
    save_reference(path, stats)
    return path


@pytest.mark.parametrize("layer, arrays, key, problem", [
    ("pool", {"sigma": "nan"}, "sigma.pool", r"holds 1 NaN value \(of 64\)"),
    ("spatial", {"mu": "inf"}, "mu.spatial", r"holds 1 infinite value \(of 5\)"),
    ("pool", {"sigma": "not psd"}, "sigma.pool", r"is not positive semi-definite: smallest eigenvalue -\d"),
    ("pool", {"mu": "short"}, "sigma.pool", r"has shape \[8, 8\] but 'mu.pool' has 7 entries"),
    ("pool", {"features": "nan"}, "features.pool", r"holds 1 NaN value \(of 400\)"),
    ("pool", {"features": "narrow"}, "features.pool", r"has shape \[50, 5\]; kept features are rows \[N, 8\]"),
])
def test_cmbench_files_with_corrupt_statistics_are_refused_naming_file_and_key(tmp_path, layer, arrays, key, problem):
    stats, _ = _stats(keep={"pool": 50})
    mu, sigma, features = stats.mu[layer], stats.sigma[layer], stats.features["pool"]
    w, v = np.linalg.eigh(sigma)
    values = {
        ("sigma", "nan"): _set(sigma, (2, 3), np.nan), ("mu", "inf"): _set(mu, 0, -np.inf),
        ("sigma", "not psd"): (v * np.r_[-w[-1], w[1:]]) @ v.T, ("mu", "short"): mu[:-1],
        ("features", "nan"): _set(features, (7, 1), np.nan), ("features", "narrow"): features[:, :5],
    }
    path = _corrupt_file(tmp_path / "bad.npz", layer, **{kind: values[kind, what] for kind, what in arrays.items()})
    with pytest.raises(ValueError) as err:
        load_reference(path)
    message = str(err.value)
    assert message.startswith(f"{path}: array {key!r} ") and re.search(problem, message), message
    assert "accepted: finite float arrays" in message


def _set(array, index, value):
    array = array.copy()
    array[index] = value
    return array


def test_fid_against_a_nan_model_raises_naming_the_generated_side():
    stats, features = _stats()
    fake = {"pool": features["pool"].copy()}
    fake["pool"][4, 2] = np.nan
    with pytest.raises(ValueError, match=r"mu1 \(in cmbench's metrics the generated samples' statistics.*holds 1 NaN"):
        compute_metrics(["fid"], fake, stats, MetricOptions())


def test_check_compatible(tmp_path):
    stats, _ = _stats()
    stats.check_compatible(dict(IDENTITY), source="ref.npz")  # passes silently
    for other in ({"extractor": "toy-classifier", "extractor_sha256": "b" * 64},
                  {"extractor": "inception-v3-tf", "extractor_sha256": "c" * 64}):
        with pytest.raises(ValueError) as err:
            stats.check_compatible(other, source="ref.npz")
        message = str(err.value)
        assert "reference statistics ref.npz" in message
        assert "inception-v3-tf" in message and other["extractor"] in message
        assert "a" * 64 in message and other["extractor_sha256"] in message
        assert "recompute" in message


def test_construction_validates_meta_and_layers():
    with pytest.raises(ValueError, match="num_images"):
        ReferenceStats({"pool": np.zeros(2)}, {"pool": np.eye(2)}, {}, {"extractor": "x"})
    with pytest.raises(ValueError, match="same layers"):
        ReferenceStats({"pool": np.zeros(2)}, {}, {}, _meta())


# The registry (cmbench.metrics) on top of the reference file.


def test_registry_declares_layers_and_columns():
    assert set(METRICS) == {"fid", "sfid", "fd_dinov2", "cmmd", "inception_score", "precision_recall", "kid",
                            "density_coverage"}
    assert layers_for(["fd_dinov2", "cmmd", "fid"]) == ("clip", "dinov2", "pool")
    assert METRICS["inception_score"].columns == ("is_mean", "is_std")
    assert not METRICS["inception_score"].needs_reference
    assert layers_for(["precision_recall", "inception_score", "fid"]) == ("logits", "pool")
    with pytest.raises(ValueError, match="fid, sfid, fd_dinov2, cmmd, inception_score, precision_recall"):
        layers_for(["sfid_not_yet"])


def test_compute_metrics_matches_the_functions():
    stats, real = _stats(keep={"pool": 300})
    rng = np.random.default_rng(1)
    features = {"pool": rng.standard_normal((200, 8)) + 0.3, "logits": rng.standard_normal((200, 10))}
    options = MetricOptions(is_splits=4, pr_k=5, pr_batch_size=64, fid_sqrt="sqrtm")
    got = compute_metrics(["fid", "inception_score", "precision_recall"], features, stats, options)
    mu, sigma = feature_statistics(features["pool"])
    assert got["fid"] == pytest.approx(frechet_distance(mu, sigma, *feature_statistics(real["pool"])))
    assert (got["is_mean"], got["is_std"]) == inception_score(features["logits"], splits=4)
    assert (got["precision"], got["recall"]) == precision_recall(real["pool"], features["pool"], k=5)
    assert set(got) == {"fid", "is_mean", "is_std", "precision", "recall"}


def test_compute_metrics_errors():
    stats, _ = _stats()  # no kept features
    pool = {"pool": np.random.default_rng(2).standard_normal((50, 8))}
    with pytest.raises(ValueError, match="no real features for precision/recall"):
        compute_metrics(["precision_recall"], pool, stats, MetricOptions())
    with pytest.raises(ValueError, match="needs reference statistics"):
        compute_metrics(["fid"], pool, None, MetricOptions())
    with pytest.raises(ValueError, match="needs feature layer.*logits"):
        compute_metrics(["inception_score"], pool, None, MetricOptions())
    no_pool = ReferenceStats({"spatial": stats.mu["spatial"]}, {"spatial": stats.sigma["spatial"]}, {}, _meta())
    with pytest.raises(ValueError, match="no 'pool' layer"):
        compute_metrics(["fid"], pool, no_pool, MetricOptions())
    with pytest.raises(ValueError, match="accepted: fid, sfid, fd_dinov2, cmmd, inception_score, precision_recall"):
        compute_metrics(["FID"], pool, stats, MetricOptions())
    with pytest.raises(ValueError, match="eigh, sqrtm"):
        MetricOptions(fid_sqrt="svd")
    with pytest.raises(ValueError, match="is_splits"):
        MetricOptions(is_splits=0)


def test_sfid_is_the_frechet_distance_of_the_spatial_layer():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(400, 6)), rng.normal(0.3, 1.1, size=(300, 6))
    meta = {"extractor": "x", "extractor_sha256": "0", "num_images": 400, "resolution": [8, 8], "source": "test"}
    stats = ReferenceStats.from_features({"spatial": real, "pool": real[:, :4]}, meta)
    got = compute_metrics(["sfid"], {"spatial": fake}, stats, MetricOptions())["sfid"]
    mu, sigma = feature_statistics(fake)
    assert got == frechet_distance(mu, sigma, stats.mu["spatial"], stats.sigma["spatial"])
    no_spatial = ReferenceStats.from_features({"pool": real}, meta)
    with pytest.raises(ValueError, match="no 'spatial' layer for sFID"):
        compute_metrics(["sfid"], {"spatial": fake}, no_spatial, MetricOptions())
