"""FD_DINOv2 and the ``edm2`` profile: EDM2's reference pickles, per-layer extractor checks, a toy run.

The networks are the official layouts with random weights (Inception at full size, DINOv2 small:
``official_inception`` / ``official_dinov2`` in conftest.py), accepted as if official.
"""

from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest

from cmbench.cli import main, resolve_suite
from cmbench.metrics import METRICS, MetricOptions
from cmbench.metrics.reference import REQUIRED_META, ReferenceStats, load_reference
from cmbench.profiles import PROFILES, describe_profiles
from cmbench.result_text import metric_formats
from cmbench.results import read_rows
from cmbench.suite import parse_suite

SUITES = resolve_suite("toy").parent
RNG = np.random.default_rng(0)


def edm2_stats(pool_dim=6, dino_dim=4, count=40) -> dict:
    """What EDM2's ``calculate_metrics.py ref`` pickles: num_images and per metric mu/sigma (float64)."""
    a, b = RNG.normal(size=(count, pool_dim)), RNG.normal(size=(count, dino_dim))
    return {"num_images": count, "fid": {"mu": a.mean(0), "sigma": np.cov(a, rowvar=False)},
            "fd_dinov2": {"mu": b.mean(0), "sigma": np.cov(b, rowvar=False)}}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_edm2_pickles_are_read_without_running_code(tmp_path, protocol):
    stats = edm2_stats()
    path = tmp_path / "img64.pkl"
    path.write_bytes(pickle.dumps(stats, protocol=protocol))
    loaded = load_reference(path)
    assert loaded.format == "edm2" and loaded.meta["num_images"] == 40 and loaded.meta["resolution"] == [64, 64]
    for layer, key in (("pool", "fid"), ("dinov2", "fd_dinov2")):
        assert np.array_equal(loaded.mu[layer], stats[key]["mu"]) and np.array_equal(loaded.sigma[layer], stats[key]["sigma"])
    assert loaded.layer_identity("dinov2") == {"extractor": "dinov2-vitl14", "extractor_sha256": None}
    assert loaded.layer_identity("pool")["extractor"] == "inception-tf"


class _Runs:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("payload, message", [
    ({"fid": _Runs()}, "refused to unpickle global (posix|nt).system"),
    ({"fid": {"mu": np.zeros(3)}}, "'fid' holds \\['mu'\\], not exactly 'mu' and 'sigma'"),
    ({"kid": {}}, "unexpected key\\(s\\) kid"),
    ({"num_images": 5}, "holds no statistics"),
    ({"fid": {"mu": np.zeros(3), "sigma": np.full((3, 3), np.nan)}}, "fid.sigma"),
    ({"fid": {"mu": np.array(["a", "b"]), "sigma": np.eye(2)}}, "numeric"),
    ([1, 2], "holds a list, not a dict"),
])
def test_bad_edm2_pickles_are_refused_by_name(tmp_path, payload, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(ValueError, match=message) as error:
        load_reference(path)
    assert str(path) in str(error.value)


def test_fd_dinov2_is_fids_code_path_on_the_dinov2_layer():
    features = RNG.normal(size=(30, 5))
    meta = {key: "t" for key in REQUIRED_META}
    reference = ReferenceStats.from_features({"pool": features[:20] + 1, "dinov2": features[:20] + 1}, meta)
    options = MetricOptions(fid_sqrt="sqrtm")
    fd = METRICS["fd_dinov2"].compute({"dinov2": features}, reference, options)["fd_dinov2"]
    assert fd == METRICS["fid"].compute({"pool": features}, reference, options)["fid"] and fd > 0.5


def test_layers_are_checked_against_the_network_that_made_them(tmp_path):
    """An EDM2 pickle serves FID under any inception-tf run; its dinov2 layer only a dinov2-vitl14 one."""
    path = tmp_path / "img64.pkl"
    path.write_bytes(pickle.dumps(edm2_stats(), protocol=4))
    stats = load_reference(path)
    inception = {"extractor": "inception-tf", "extractor_sha256": "abc"}
    stats.check_compatible(inception, str(path), ["pool"])
    both = {**inception, "layer_extractors": {"dinov2": {"extractor": "dinov2-vitl14", "extractor_sha256": "d"}}}
    stats.check_compatible(both, str(path))
    pil = {**inception, "layer_extractors": {"dinov2": {"extractor": "dinov2-vitl14+pil-resize", "extractor_sha256": "d"}}}
    with pytest.raises(ValueError, match="layer 'dinov2'.*dinov2-vitl14\\+pil-resize"):
        stats.check_compatible(pil, str(path))
    ours = ReferenceStats(stats.mu, stats.sigma, meta={**{k: "t" for k in REQUIRED_META}, **both})
    ours.check_compatible(both, "ours.npz")
    other = {**both, "layer_extractors": {"dinov2": {"extractor": "dinov2-vitl14", "extractor_sha256": "e"}}}
    with pytest.raises(ValueError, match="sha256 d.*layer 'dinov2'.*sha256 e"):
        ours.check_compatible(other, "ours.npz")


def test_the_edm2_profile_lists_its_conventions():
    profile = PROFILES["edm2"]
    assert profile.metrics == ("fid", "fd_dinov2") and profile.quantisation == "round"
    assert profile.metric_options.fid_sqrt == "sqrtm" and profile.reference_formats == ("edm2", "cmbench")
    text = describe_profiles()
    assert "edm2: EDM2's calculate_metrics.py" in text and "FD_DINOv2 on DINOv2 ViT-L/14" in text


# --- the toy zoo under profile edm2 -----------------------------------------------------------


def toy_edm2_suite(tmp_path, reference, **changes):
    raw = {"name": "edm2-toy", "num_samples": 12, "batch_size": 6, "grid_images": 0, "profile": "edm2",
           "uncertainty": {"bootstrap": 4},
           "models": {"cd": {"family": "cd", "checkpoint": "zoo:toy/cd"}},
           "reference": {"path": str(reference)},
           "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1, 2]}], **changes}
    return parse_suite(copy.deepcopy(raw), str(tmp_path / "edm2-toy.yaml"), SUITES)


@pytest.fixture
def toy_reference(tmp_path, official_inception, official_dinov2):
    out = tmp_path / "toy-edm2.npz"
    assert main(["stats", "compute", "--extractor", "inception-tf", "--extractor", "dinov2-vitl14",
                 "--images", "toy:test", "--limit", "16", "--out", str(out), "--quiet"]) == 0
    return out


def test_profile_edm2_on_the_toy_zoo_gives_fid_and_fd_dinov2_with_standard_errors(tmp_path, toy_reference,
                                                                                    exact_low_rank_sqrtm):
    from cmbench.runner import run_suite

    stats = load_reference(toy_reference)
    assert set(stats.mu) >= {"pool", "dinov2"} and stats.meta["extractor"] == "inception-tf"
    assert stats.meta["layer_extractors"]["dinov2"]["extractor"] == "dinov2-vitl14"
    suite = toy_edm2_suite(tmp_path, toy_reference)
    assert suite.metrics == ("fid", "fd_dinov2") and suite.features == {"extractor": "inception-tf"}
    report = run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert [row["nfe"] for row in rows] == [1, 2]
    for row in rows:
        for column in ("fid", "fid_se", "fd_dinov2", "fd_dinov2_se"):
            assert np.isfinite(row[column]) and row[column] > 0, column
        assert row["layer_extractors"]["dinov2"]["extractor"] == "dinov2-vitl14"
    assert rows[0]["fd_dinov2"] != rows[1]["fd_dinov2"]
    html = report.read_text()
    decimals = next(fmt.decimals for fmt in metric_formats(rows) if fmt.column.key == "fd_dinov2")
    assert ">FD_DINOv2" in html and f"{rows[0]['fd_dinov2']:.{decimals}f}" in html
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["extractor"]["layer_extractors"]["dinov2"]["extractor_sha256"] == stats.meta["layer_extractors"]["dinov2"]["extractor_sha256"]

    # cmbench compare gates the new column like FID (lower is better).
    worse = tmp_path / "worse"
    worse.mkdir()
    lines = [json.dumps({**row, "fd_dinov2": row["fd_dinov2"] + 100 * row["fd_dinov2_se"] + 50}) for row in rows]
    (worse / "results.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["compare", str(worse), str(tmp_path / "out")]) == 1
    other = {"dinov2": {"extractor": "dinov2-vitl14+pil-resize", "extractor_sha256": "e"}}
    (worse / "results.jsonl").write_text("".join(json.dumps({**row, "layer_extractors": other}) + "\n" for row in rows))
    assert main(["compare", str(worse), str(tmp_path / "out")]) == 2  # another DINOv2 recipe: not comparable


def test_a_run_without_the_dinov2_weights_stops_before_sampling(tmp_path, official_inception, monkeypatch):
    from cmbench.runner import run_suite

    monkeypatch.delenv("CMBENCH_DINOV2_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reference = tmp_path / "img64.pkl"
    reference.write_bytes(pickle.dumps(edm2_stats(pool_dim=2048, dino_dim=1024, count=3000), protocol=4))
    suite = toy_edm2_suite(tmp_path, reference)
    with pytest.raises(FileNotFoundError) as error:
        run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    for part in ("dinov2_vitl14_pretrain.pth", "CMBENCH_DINOV2_WEIGHTS", "cmbench weights fetch dinov2-vitl14",
                 str(tmp_path / "torch" / "hub" / "checkpoints")):
        assert part in str(error.value)
    assert not (tmp_path / "out" / "results.jsonl").exists() and not list((tmp_path / "out").glob("**/*.npz"))


# --- CMMD beside the suite's own metrics -------------------------------------------------------


@pytest.fixture
def toy_clip_reference(tmp_path, official_clip):
    out = tmp_path / "toy-clip.npz"
    assert main(["stats", "compute", "--extractor", "toy-classifier", "--extractor", "clip-vitl14-336",
                 "--images", "toy:test", "--limit", "40", "--keep-features", "30", "--out", str(out), "--quiet"]) == 0
    return out


def test_cmmd_rows_beside_fid_from_one_sampling_pass(tmp_path, toy_clip_reference, monkeypatch):
    import cmbench.row_features as row_features
    from cmbench.metrics import cmmd
    from cmbench.runner import run_suite

    stats = load_reference(toy_clip_reference)
    assert len(stats.features["clip"]) == 40 and len(stats.features["pool"]) == 30  # every CLIP row, N pool rows
    calls = []
    real = row_features.generate_views
    monkeypatch.setattr(row_features, "generate_views", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen = []
    real_cmmd = cmmd.cmmd
    monkeypatch.setattr(cmmd, "cmmd", lambda a, b, **k: seen.append((a, b)) or real_cmmd(a, b, **k))
    suite = toy_edm2_suite(tmp_path, toy_clip_reference, profile="toy", metrics=["cmmd"], num_samples=20,
                           batch_size=20, runs=[{"model": "cd", "sampler": "cm_multistep", "nfe": [1]}])
    assert suite.metrics == ("fid", "inception_score", "precision_recall", "cmmd")
    run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert len(calls) == 1  # one sampling pass feeds the toy classifier and CLIP
    for column in ("fid", "precision", "cmmd", "cmmd_se"):
        assert np.isfinite(row[column]), column
    real_rows, fake_rows = seen[0]
    assert np.array_equal(real_rows, stats.features["clip"]) and fake_rows.shape == (20, 16)
    assert row["cmmd"] == real_cmmd(real_rows, fake_rows) > 0
    assert row["layer_extractors"]["clip"]["extractor"] == "clip-vitl14-336"


def test_a_run_without_the_clip_weights_stops_before_sampling(tmp_path, monkeypatch):
    from cmbench.runner import run_suite

    monkeypatch.delenv("CMBENCH_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suite = toy_edm2_suite(tmp_path, SUITES.parent / "reference_stats" / "toy-digits-all.npz", profile="toy",
                           metrics=["cmmd"])
    with pytest.raises(FileNotFoundError) as error:
        run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    for part in ("pytorch_model.bin", "CMBENCH_CLIP_WEIGHTS", "cmbench weights fetch clip-vitl14-336"):
        assert part in str(error.value)
    assert not (tmp_path / "out" / "results.jsonl").exists()
