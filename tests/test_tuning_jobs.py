"""Tune jobs on the shipped toy zoo: schedule files, round trips, resume, and suite validation."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

import cmbench.tuning.candidates as candidates_module
from cmbench.cli import main, resolve_suite
from cmbench.results import read_rows
from cmbench.runner import run_suite, tune_suite
from cmbench.suite import load_suite, parse_suite
from cmbench.tuning.schedule_file import SCHEDULE_FORMAT, read_schedule
from cmbench.validate import ConfigError

SUITES = resolve_suite("toy").parent
TOY = {
    "name": "tune_test", "num_samples": 200, "seed_start": 0, "batch_size": 100, "quantisation": "round",
    "features": {"extractor": "toy-classifier"}, "metrics": ["fid"], "grid_images": 0,
    "reference": {"path": "../reference_stats/toy-digits-all.npz"},
    "models": {"cd": {"family": "cd", "checkpoint": "zoo:toy/cd"}, "ctm": {"family": "ctm", "checkpoint": "zoo:toy/ctm"}},
    "tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "karras_steps": 12, "num_samples": 200}},
    "runs": [{"model": "cd", "sampler": "cm_multistep", "name": "tuned", "nfe": [2, 3], "schedule": "tuned:cd"}],
}


def suite(**changes):
    raw = copy.deepcopy(TOY)
    raw.update(changes)
    return parse_suite(raw, "tune_test.yaml", SUITES)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned")
    run_suite(suite(), out, device="cpu", progress=False)
    return out


def test_schedule_file_records_the_search(tuned):
    document = read_schedule(tuned / "schedules" / "cd.json")
    assert document["format"] == SCHEDULE_FORMAT
    assert document["model"]["checkpoint"] == "zoo:toy/cd" and len(document["model"]["checkpoint_sha256"]) == 64
    expected = {"metric": "fid", "num_samples": 200, "seed_start": 200, "direction": "min"}
    assert {key: document["objective"][key] for key in expected} == expected
    by_nfe = {s["nfe"]: s for s in document["schedules"]}
    assert set(by_nfe) == {1, 2, 3}
    assert by_nfe[1]["indices"] == [0, 11] and by_nfe[1]["sigmas"] == [80.0, 0.002]
    assert document["search"]["method"] == "robust" and document["search"]["refine"] is True
    assert document["search"]["samples"] == {"race": [50, 100, 200], "tie_break": [400]}
    assert document["evaluations"] == len(document["trace"]) == sum(s["evaluations"] for s in by_nfe.values())
    assert document["cost"]["evaluations"] == pytest.approx(sum(e["cost"] for e in document["trace"]), abs=1e-3)
    evaluated = {(tuple(e["sigmas"]), e["samples"]): e for e in document["trace"]}
    assert len(evaluated) == len(document["trace"])  # nothing twice
    for s in by_nfe.values():  # each chosen schedule was scored on the proxy samples, as recorded
        assert evaluated[(tuple(s["sigmas"]), 200)]["value"] == s["value"] and s["se"] > 0
    validation = document["validation"]
    assert validation["num_samples"] == 200 and validation["seed_start"] == 200 + 400  # past every proxy seed
    assert [v["nfe"] for v in validation["schedules"]] == [2, 3]
    for v in validation["schedules"]:
        assert v["verdict"] in ("better", "tied", "worse") and v["difference_se"] > 0
        assert v["difference"] == pytest.approx(v["value"] - v["default_value"])
        assert len(v["default_sigmas"]) == v["nfe"] + 1 and v["default_sigmas"][0] == 80.0


def test_a_row_referencing_the_schedule_reproduces_the_recorded_fid_exactly(tuned, tmp_path):
    document = read_schedule(tuned / "schedules" / "cd.json")
    recorded = {s["nfe"]: s["value"] for s in document["schedules"]}
    # The tune job's proxy: 200 samples from seed 200 (just past the suite's seeds).
    schedule_file = tmp_path / "cd-schedule.json"
    shutil.copy(tuned / "schedules" / "cd.json", schedule_file)
    runs = [{"model": "cd", "sampler": "cm_multistep", "name": "from_file", "nfe": [2, 3], "schedule": str(schedule_file)}]
    run_suite(suite(seed_start=200, runs=runs, tune=None), tmp_path / "run", device="cpu", progress=False)
    rows = {r["nfe"]: r for r in read_rows(tmp_path / "run" / "results.jsonl")}
    assert rows[2]["fid"] == recorded[2] and rows[3]["fid"] == recorded[3]
    assert rows[2]["schedule"] == next(s["sigmas"] for s in document["schedules"] if s["nfe"] == 2)
    assert rows[2]["schedule_source"] == str(schedule_file)
    shown = tmp_path / "run" / "schedules" / "cd-schedule.json"  # the report shows the file it used
    assert shown.read_bytes() == schedule_file.read_bytes()
    assert "search trace: cd" in (tmp_path / "run" / "report.html").read_text()


def test_tuned_rows_use_the_schedule_and_a_rerun_reuses_it(tuned, monkeypatch):
    rows = {r["nfe"]: r for r in read_rows(tuned / "results.jsonl")}
    document = read_schedule(tuned / "schedules" / "cd.json")
    assert rows[3]["schedule"] == next(s["sigmas"] for s in document["schedules"] if s["nfe"] == 3)
    monkeypatch.setattr(candidates_module, "gather_views", _forbidden)
    run_suite(suite(), tuned, device="cpu", progress=False)  # schedule and rows are done: nothing is sampled


def _forbidden(*args, **kwargs):
    raise AssertionError("a finished schedule was searched again")


def test_a_changed_job_is_refused_unless_recompute_is_asked(tuned, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tuned, out)
    changed = suite(tune={"cd": {**TOY["tune"]["cd"], "method": "golden"}})
    with pytest.raises(RuntimeError, match="different configuration.*--recompute-changed"):
        tune_suite(changed, ["cd"], out, device="cpu", progress=False)
    _, documents = tune_suite(changed, ["cd"], out, device="cpu", recompute_changed=True, progress=False)
    assert documents["cd"]["search"]["method"] == "golden"


def test_an_interrupted_search_resumes_without_repeating_evaluations(tmp_path, monkeypatch):
    calls = []
    real = candidates_module.gather_views

    def sampled(*args, **kwargs):  # (model, sampler, grid, options, seeds, ...)
        calls.append((json.dumps(args[3]["time_points"], sort_keys=True), args[4].start, args[4].stop))
        return real(*args, **kwargs)

    def flaky(*args, **kwargs):
        if len(calls) == 12:
            raise KeyboardInterrupt
        return sampled(*args, **kwargs)

    monkeypatch.setattr(candidates_module, "gather_views", flaky)
    with pytest.raises(KeyboardInterrupt):
        tune_suite(suite(), ["cd"], tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "schedules" / "cd.json").exists()
    logged = (tmp_path / "schedules" / "cd.evaluations.jsonl").read_text().splitlines()
    assert len(logged) == 12
    monkeypatch.setattr(candidates_module, "gather_views", sampled)
    _, documents = tune_suite(suite(), ["cd"], tmp_path, device="cpu", progress=False)
    assert len(calls) == len(set(calls))  # no seeds of a schedule sampled twice
    uninterrupted = tmp_path / "again"
    _, again = tune_suite(suite(), ["cd"], uninterrupted, device="cpu", progress=False)
    # The resumed search made the same decisions; its values may differ in the last float32 bits,
    # as a resumed candidate's features come from one batch instead of extended prefixes.
    for key in ("schedules", "validation"):
        assert _close(documents["cd"][key], again["cd"][key])
    assert documents["cd"]["cost"]["evaluations"] == again["cd"]["cost"]["evaluations"]


def _close(a, b):
    """Equal structure, equal non-floats, floats within 1e-5 relative."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, float):
        return isinstance(b, float) and a == pytest.approx(b, rel=1e-5)
    return a == b


def test_fast_searches_for_cd_nfe2_come_close_to_the_exhaustive_grid_for_less(tmp_path):
    """Same proxy samples and noise, 40-point Karras grid: the line searches land within one index of
    the grid's choice; the robust search within one standard error of its value for under a third
    of its cost."""
    job = {"model": "cd", "sampler": "cm_multistep", "max_nfe": 2, "num_samples": 500, "validation": False}
    tune = {method: {**job, "method": method} for method in ("robust", "ternary", "golden", "grid")}
    plain = [{"model": "cd", "sampler": "cm_multistep", "nfe": [1]}]
    _, documents = tune_suite(suite(tune=tune, runs=plain), list(tune), tmp_path, device="cpu", progress=False)
    chosen = {name: d["schedules"][1] for name, d in documents.items()}
    counts = {name: s["evaluations"] for name, s in chosen.items()}
    assert counts["grid"] == 38 and counts["golden"] < counts["ternary"] < counts["grid"]
    assert abs(chosen["ternary"]["indices"][1] - chosen["grid"]["indices"][1]) <= 1
    assert abs(chosen["golden"]["indices"][1] - chosen["grid"]["indices"][1]) <= 1
    assert chosen["robust"]["value"] <= chosen["grid"]["value"] + chosen["grid"]["se"]
    assert chosen["robust"]["cost"] < chosen["grid"]["cost"] / 3 and chosen["grid"]["cost"] == 38
    assert documents["robust"]["validation"] is None


def test_a_weighted_objective_is_what_the_search_minimises(tmp_path):
    job = {"model": "cd", "sampler": "cm_multistep", "max_nfe": 2, "num_samples": 100, "metric": {"fid": 1, "recall": -100},
           "karras_steps": 12, "screen_points": 5, "resamples": 4, "validation": {"num_samples": 100}}
    metrics = ["fid", "precision_recall"]
    runs = [{"model": "cd", "sampler": "cm_multistep", "nfe": [2], "schedule": "tuned:cd"}]
    _, documents = tune_suite(suite(metrics=metrics, tune={"cd": job}, runs=runs), ["cd"], tmp_path, device="cpu",
                              progress=False)
    document = documents["cd"]
    assert document["objective"]["combine"] == "weighted" and document["objective"]["direction"] == "min"
    assert document["objective"]["metric"] == "1·fid − 100·recall"
    logged = [json.loads(line) for line in (tmp_path / "schedules" / "cd.evaluations.jsonl").read_text().splitlines()]
    chosen = document["schedules"][1]
    entry = next(e for e in logged if e["sigmas"] == chosen["sigmas"] and e["samples"] == 100 and e["seed_start"] == 200)
    assert chosen["value"] == pytest.approx(entry["values"]["fid"] - 100 * entry["values"]["recall"])
    assert len(entry["replicates"]["recall"]) == 4


def test_cli_tune_runs_an_ad_hoc_job_and_prints_the_evaluation_counts(tmp_path, capsys):
    path = tmp_path / "suite.json"
    raw = {key: value for key, value in copy.deepcopy(TOY).items() if key != "tune"}
    raw["runs"] = [{"model": "cd", "sampler": "cm_multistep", "nfe": [1]}]
    raw["reference"] = {"path": str(SUITES.parent / "reference_stats" / "toy-digits-all.npz")}
    path.write_text(json.dumps(raw))  # JSON is YAML
    code = main(["tune", str(path), "--model", "ctm", "--sampler", "ctm_gamma", "--max-nfe", "2", "--method", "golden",
                 "--space", "sigma", "--tol", "0.5", "--samples", "100", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ctm_ctm_gamma: ctm · ctm_gamma · golden search over sigma" in printed
    document = read_schedule(tmp_path / "out" / "schedules" / "ctm_ctm_gamma.json")
    assert f"{document['evaluations']} evaluations" in printed
    assert document["schedules"][1]["indices"] is None and document["search"]["tol"] == 0.5
    report = (tmp_path / "out" / "report.html")
    assert not report.exists()  # tune writes schedules only; `cmbench report` renders them
    assert main(["report", str(tmp_path / "out")]) == 0
    html = report.read_text()
    assert "Tuned schedules" in html and "search trace: ctm_ctm_gamma" in html


@pytest.mark.parametrize("change, where, message", [
    ({"runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [2], "schedule": "tuned:nope"}]},
     "runs[0].schedule", "no tune job 'nope'"),
    ({"runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [4], "schedule": "tuned:cd"}]},
     "runs[0].nfe[0]", "up to NFE 3"),
    ({"runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [2], "schedule": "tuned:cd",
                "options": {"time_points": {2: [80.0, 1.0, 0.002]}}}]}, "runs[0].options", "keep one"),
    ({"runs": [{"model": "ctm", "sampler": "ctm_gamma", "nfe": [2], "schedule": "tuned:cd"}]},
     "runs[0].schedule", "tunes cd with cm_multistep"),
    ({"runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [2], "schedule": "missing.json"}]},
     "runs[0].schedule", "does not exist"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "karras_steps": 3}}},
     "tune.cd.karras_steps", "need at least 4"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "metric": "recall"}}},
     "tune.cd.metric", "accepted: fid"),
    ({"tune": {"cd": {"model": "cd", "sampler": "heun", "max_nfe": 3}}}, "tune.cd.sampler", "accepted: cm_multistep, ctm_gamma"),
    ({"tune": {"cd": {"model": "cd", "sampler": "ctm_gamma", "max_nfe": 3}}}, "tune.cd.sampler", "needs the 'jump' map"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "options": {"time_points": {}}}}},
     "tune.cd.options", "what the search finds"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "seed_start": 100}}},
     "tune.cd.seed_start", "proxy seeds 100..499 overlap the suite's evaluation seeds 0..199"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "validation": {"seed_start": 300}}}},
     "tune.cd.validation", "validation seeds 300..499 overlap proxy seeds 200..599"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "resamples": 1}}},
     "tune.cd.resamples", "give 0"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "metric": {"fid": "a lot"}}}},
     "tune.cd.metric", "weights must be numbers"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "budget": {"minutes": 5}}}},
     "tune.cd.budget.minutes", "minutes"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "method": "annealing"}}},
     "tune.cd.method", "accepted: robust, ternary, golden, grid"),
    ({"tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 3, "screen_samples": 500}}},
     "tune.cd.screen_samples", "more than the proxy's 200 samples"),
])
def test_suite_validation_names_the_key(change, where, message):
    with pytest.raises(ConfigError, match=message) as error:
        suite(**change)
    assert error.value.path == where


def test_a_schedule_file_for_another_checkpoint_is_refused(tuned, tmp_path):
    document = json.loads((tuned / "schedules" / "cd.json").read_text())
    document["model"]["checkpoint_sha256"] = "0" * 64
    path = tmp_path / "other.json"
    path.write_text(json.dumps(document))
    runs = [{"model": "cd", "sampler": "cm_multistep", "nfe": [2], "schedule": str(path)}]
    with pytest.raises(ValueError, match="tuned for checkpoint sha256 0000"):
        run_suite(suite(runs=runs, tune=None), tmp_path / "run", device="cpu", progress=False)


def test_read_schedule_rejects_malformed_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format is 'something-else'"):
        read_schedule(path)
    path.write_text(json.dumps({"format": SCHEDULE_FORMAT, "name": "x", "model": {}, "sampler": "cm_multistep",
                                "objective": {}, "schedules": [{"nfe": 2, "sigmas": [80.0, 0.002]}]}))
    with pytest.raises(ValueError, match=r"schedules\[0\]: sigmas must be NFE \+ 1 = 3"):
        read_schedule(path)


def test_bundled_toy_tune_suite_reports_tuned_rows_beside_the_karras_rows(tmp_path):
    # The shipped suite at a quarter of its sample counts (evaluation, proxy and validation).
    smaller = ["num_samples=500"] + [f"tune.{model}.num_samples=125" for model in ("cd", "ct", "ctm")]
    toy_tune = load_suite(resolve_suite("toy_tune"), smaller)
    report = run_suite(toy_tune, tmp_path, device="cpu", progress=False)
    rows = {r["row_id"]: r for r in read_rows(tmp_path / "results.jsonl")}
    for model in ("cd", "ct", "ctm"):
        document = read_schedule(tmp_path / "schedules" / f"{model}.json")
        assert [s["nfe"] for s in document["schedules"]] == [1, 2, 3]
        for nfe in (2, 3):
            assert rows[f"{model}.tuned.nfe{nfe}"]["schedule"] == document["schedules"][nfe - 1]["sigmas"]
            assert f"{model}.karras.nfe{nfe}" in rows
    # The point of tuning: CD's 2-step FID with searched points beats the default Karras points.
    assert rows["cd.tuned.nfe2"]["fid"] < rows["cd.karras.nfe2"]["fid"]
    html = report.read_text()
    assert html.count("search trace:") == 3


def test_cli_tune_without_jobs_says_what_to_give(capsys):
    assert main(["tune", "toy"]) == 2
    assert "has no tune jobs; add a tune: block or give --model" in capsys.readouterr().err
