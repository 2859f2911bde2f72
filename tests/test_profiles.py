"""Evaluator profiles: named conventions a suite picks with ``profile:``."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cmbench.cli import main, resolve_suite
from cmbench.metrics import METRICS, MetricOptions
from cmbench.metrics.reference import load_reference
from cmbench.profiles import PROFILES, describe_profiles
from cmbench.references import check_profile_reference
from cmbench.suite import load_suite, parse_suite
from cmbench.validate import ConfigError

SUITES = resolve_suite("toy").parent
BASE = {
    "name": "p", "num_samples": 100, "models": {"cd": {"family": "cd", "checkpoint": "zoo:toy/cd"}},
    "reference": {"path": "../reference_stats/toy-digits-all.npz"},
    "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1]}],
}


def suite(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return parse_suite(raw, "p.yaml", SUITES)


def test_every_profile_is_consistent():
    for profile in PROFILES.values():
        assert set(profile.metrics) <= set(METRICS)
        assert isinstance(profile.metric_options, MetricOptions) and profile.quantisation in ("round", "truncate")
    # The conventions that set the published protocols apart.
    assert PROFILES["adm"].metric_options.is_split_size == 5000 and PROFILES["adm"].metric_options.fid_sqrt == "sqrtm"
    assert PROFILES["adm"].quantisation == "truncate" and PROFILES["edm"].quantisation == "round"
    assert PROFILES["torch-fidelity"].metric_options.is_shuffle_seed == 2020
    assert "sfid" in PROFILES["adm"].metrics and PROFILES["edm"].metrics == ("fid",)


def test_the_cm_cifar10_profile_is_clean_fids_fid_with_torch_fidelitys_inception_score():
    """jcm/metrics.py scores FID with clean-fid (legacy_tensorflow) and IS with torch-fidelity: on
    the same features the profile's numbers equal those two profiles' numbers, and nothing else."""
    from cmbench.metrics.reference import REQUIRED_META, ReferenceStats

    cm, clean, fidelity = (PROFILES[name] for name in ("cm-cifar10", "clean-fid", "torch-fidelity"))
    assert cm.metrics == ("fid", "inception_score") and cm.quantisation == clean.quantisation == "truncate"
    assert cm.extractor == clean.extractor == fidelity.extractor and cm.reference_formats == clean.reference_formats
    rng = np.random.default_rng(0)
    pool, real = rng.normal(size=(64, 16)), rng.normal(0.3, 1.2, size=(80, 16))
    reference = ReferenceStats.from_features({"pool": real}, meta={key: "test" for key in REQUIRED_META})
    features = {"pool": pool, "logits": rng.normal(size=(60, 1008))}
    fid = METRICS["fid"].compute
    assert fid(features, reference, cm.metric_options) == fid(features, reference, clean.metric_options)
    score = METRICS["inception_score"].compute
    assert score(features, reference, cm.metric_options) == score(features, reference, fidelity.metric_options)
    assert score(features, reference, cm.metric_options) != score(features, reference, MetricOptions())  # the shuffle


def test_a_profile_sets_metrics_options_quantisation_and_extractor():
    s = suite(profile="adm", features={"weights": "/somewhere/weights.pth"})
    assert s.profile == "adm" and s.metrics == PROFILES["adm"].metrics and s.quantisation == "truncate"
    assert s.metric_options == PROFILES["adm"].metric_options
    assert s.features == {"extractor": "inception-tf", "weights": "/somewhere/weights.pth"}
    assert suite(profile="toy").features == {"extractor": "toy-classifier"}


@pytest.mark.parametrize("changes, where, message", [
    ({"profile": "toy", "quantisation": "truncate"}, "quantisation", "profile toy sets quantisation"),
    ({"profile": "adm", "features": {"extractor": "toy-classifier"}}, "features.extractor", "uses the 'inception-tf' extractor"),
    ({"profile": "nope"}, "profile", "accepted: adm, edm, edm2, clean-fid, clean-fid-clean, ctm-cifar10, dmd2, cm-cifar10, torch-fidelity, toy"),
])
def test_profile_conflicts_name_the_key(changes, where, message):
    with pytest.raises(ConfigError, match=message) as error:
        suite(**changes)
    assert error.value.path == where


def test_a_profile_refuses_reference_files_of_another_protocol(tmp_path):
    path = tmp_path / "cifar10-32x32.npz"
    rng = np.random.default_rng(0)
    np.savez(path, mu=rng.normal(size=8), sigma=np.eye(8))
    stats = load_reference(path)
    assert stats.format == "edm"
    check_profile_reference(suite(profile="edm"), stats, path)
    with pytest.raises(ValueError, match="profile adm compares against adm files"):
        check_profile_reference(suite(profile="adm"), stats, path)


def test_the_toy_suite_uses_the_toy_profile_and_rows_and_report_say_so(tmp_path):
    toy = load_suite(resolve_suite("toy"))
    assert toy.profile == "toy" and toy.metrics == PROFILES["toy"].metrics
    assert main(["run", toy.source, "--out", str(tmp_path), "--quiet", "--set", "num_samples=200",
                 "--set", "runs=[{model: cd, sampler: cm_multistep, nfe: [1]}]", "--set", "grid_images=0"]) == 0
    assert '"profile": "toy"' in (tmp_path / "results.jsonl").read_text()
    assert "Evaluator profile <strong>toy:" in (tmp_path / "report.html").read_text()


def test_cli_lists_the_profiles(capsys):
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert out == describe_profiles() + "\n"
    for name in PROFILES:
        assert f"\n{name}: " in "\n" + out


# --- several profiles over the same samples ---------------------------------------------------


@pytest.fixture()
def two_toy_profiles(monkeypatch):
    """The toy profile and a twin that truncates instead of rounding (CM's quantisation)."""
    from dataclasses import replace

    monkeypatch.setitem(PROFILES, "toy-truncate", replace(PROFILES["toy"], name="toy-truncate", quantisation="truncate"))
    return ("toy", "toy-truncate")


def several(tmp_path, profiles, **changes):
    raw = {**copy.deepcopy(BASE), "num_samples": 300, "grid_images": 0, "uncertainty": {"bootstrap": 0},
           "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1, 2]}], **changes}
    raw["profiles"] = {name: {} for name in profiles}
    return parse_suite(raw, "several.yaml", SUITES)


def test_several_profiles_sample_once_and_score_each_like_a_single_profile_run(tmp_path, two_toy_profiles, monkeypatch):
    import cmbench.row_features as row_features
    from cmbench.results import read_rows
    from cmbench.runner import run_suite
    from cmbench.shards import work_units

    calls = []
    real = row_features.generate_views
    monkeypatch.setattr(row_features, "generate_views", lambda *a, **k: calls.append(len(k["views"])) or real(*a, **k))
    s = several(tmp_path, two_toy_profiles)
    assert [r.row_id for r in s.rows] == ["cd.cm_multistep.nfe1@toy", "cd.cm_multistep.nfe1@toy-truncate",
                                          "cd.cm_multistep.nfe2@toy", "cd.cm_multistep.nfe2@toy-truncate"]
    run_suite(s, tmp_path / "both", device="cpu", progress=False)
    assert calls == [2] * 2 * len(work_units(s.num_samples, s.batch_size))  # one sampling per NFE, scored twice
    both = {r["row_id"]: r for r in read_rows(tmp_path / "both" / "results.jsonl")}
    assert both["cd.cm_multistep.nfe1@toy-truncate"]["quantisation"] == "truncate"
    assert both["cd.cm_multistep.nfe1@toy"]["sampler_label"] == "cm_multistep @toy"
    for name in two_toy_profiles:
        raw = {**copy.deepcopy(BASE), "num_samples": 300, "grid_images": 0, "uncertainty": {"bootstrap": 0},
               "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1, 2]}], "profile": name}
        run_suite(parse_suite(raw, "one.yaml", SUITES), tmp_path / name, device="cpu", progress=False)
        alone = {r["row_id"]: r for r in read_rows(tmp_path / name / "results.jsonl")}
        for nfe in (1, 2):
            assert both[f"cd.cm_multistep.nfe{nfe}@{name}"]["fid"] == alone[f"cd.cm_multistep.nfe{nfe}"]["fid"]
    assert both["cd.cm_multistep.nfe1@toy"]["fid"] != both["cd.cm_multistep.nfe1@toy-truncate"]["fid"]
    html = (tmp_path / "both" / "report.html").read_text()
    assert "cm_multistep @toy-truncate" in html and "toy-truncate: " in html
    before = len(calls)
    run_suite(s, tmp_path / "both", device="cpu", progress=False)  # resumes: nothing left to sample
    assert len(calls) == before


@pytest.mark.parametrize("changes, where, message", [
    ({"metric_options": {"pr_k": 5}}, "metric_options", "profiles: sets it per profile"),
    ({"profile": "toy"}, "profile", "profiles: sets it per profile"),
    ({"features": {"extractor": "toy-classifier"}}, "features.extractor", "each profile names its extractor"),
])
def test_several_profiles_conflicts_name_the_key(tmp_path, changes, where, message):
    with pytest.raises(ConfigError, match=message) as error:
        several(tmp_path, ["toy"], **changes)
    assert error.value.path == where


def test_several_profiles_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="'nope' is not accepted; accepted: adm") as error:
        several(tmp_path, ["toy", "nope"])
    assert error.value.path == "profiles.nope"


def test_a_suite_with_a_profile_may_add_metrics():
    s = suite(profile="toy", metrics=["kid", "fid", "density_coverage"], num_samples=1000)
    assert s.metrics == ("fid", "inception_score", "precision_recall", "kid", "density_coverage")


def test_a_run_picks_among_the_suites_profiles(tmp_path, two_toy_profiles):
    runs = [{"model": "cd", "sampler": "cm_multistep", "nfe": [1], "profiles": ["toy-truncate"]},
            {"model": "cd", "sampler": "cm_multistep", "name": "both", "nfe": [1]}]
    s = several(tmp_path, two_toy_profiles, runs=runs)
    assert [r.row_id for r in s.rows] == ["cd.cm_multistep.nfe1@toy-truncate", "cd.both.nfe1@toy", "cd.both.nfe1@toy-truncate"]
    with pytest.raises(ConfigError, match="'edm' is not accepted; accepted: toy, toy-truncate") as error:
        several(tmp_path, two_toy_profiles, runs=[{**runs[0], "profiles": ["edm"]}])
    assert error.value.path == "runs[0].profiles[0]"
    with pytest.raises(ConfigError, match="the suite names no profiles") as error:
        suite(profile="toy", runs=[runs[0]])
    assert error.value.path == "runs[0].profiles"
