"""Regression testing: `cmbench compare` verdicts (direction, thresholds, z·se), protocol
checks, exit codes, output formats, baselines, the report's regression section, the bootstrap
standard errors, and the toy-zoo checks: the same checkpoint under other seeds is "same", a
degraded EDM checkpoint is "worse"."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cmbench.checkpoints import load_native, save_native
from cmbench.cli import main
from cmbench.compare import (BASELINE_FORMAT, CompareError, Settings, Side, Threshold, compare, load_side,
                             metric_verdict, parse_threshold, parse_threshold_option, render_markdown,
                             render_table, resolve_settings, to_json)
from cmbench.metrics import MetricOptions, ReferenceStats, compute_metrics
from cmbench.metrics.bootstrap import NeighbourPlan, bootstrap_standard_errors
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError
from cmbench.zoo import resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHA_A, SHA_B = "a" * 64, "b" * 64


def result_row(row_id="edm.heun.nfe35", **changes) -> dict:
    model, label, nfe = row_id.split(".")
    row = {
        "suite": "toy", "row_id": row_id, "model": model, "family": "edm", "sampler": "heun", "sampler_label": label,
        "nfe": int(nfe.removeprefix("nfe")), "num_samples": 1000, "fid": 10.0, "fid_se": 1.0, "is_mean": 9.0,
        "is_mean_se": 0.1, "precision": 0.98, "precision_se": 0.005, "recall": 0.84, "recall_se": 0.02,
        "seed_start": 0, "checkpoint_sha256": SHA_A, "extractor": "toy-classifier", "extractor_sha256": SHA_A,
        "quantisation": "round", "reference_sha256": SHA_A, "metric_options": MetricOptions().__dict__,
        "profile": "toy",
    }
    row.update(changes)
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def side(rows, **kw) -> Side:
    return Side(kw.pop("source", "x"), "results file", {r["row_id"]: r for r in rows}, **kw)


# --- verdicts ----------------------------------------------------------------------------------


def test_direction_decides_which_change_is_worse():
    assert metric_verdict("fid", 10.0, 20.0, 1.0, 1.0).verdict == "worse"  # lower is better
    assert metric_verdict("fid", 20.0, 10.0, 1.0, 1.0).verdict == "better"
    assert metric_verdict("kid", 0.01, 0.02, 0.001, 0.001).verdict == "worse"
    assert metric_verdict("bpd", 8.0, 9.0, 0.01, 0.01).verdict == "worse"
    for metric in ("precision", "recall", "is_mean", "density", "coverage"):  # higher is better
        assert metric_verdict(metric, 0.9, 0.5, 0.01, 0.01).verdict == "worse"
        assert metric_verdict(metric, 0.5, 0.9, 0.01, 0.01).verdict == "better"


def test_a_difference_within_z_standard_errors_is_same():
    v = metric_verdict("fid", 10.0, 14.0, 1.0, 1.0)  # se of the difference √2, 3·se = 4.24 > 4
    assert v.verdict == "same"
    assert v.se == pytest.approx(2 ** 0.5) and v.noise == pytest.approx(3 * 2 ** 0.5)
    assert v.diff == pytest.approx(4.0) and v.z_score == pytest.approx(4 / 2 ** 0.5)
    assert metric_verdict("fid", 10.0, 14.0, 1.0, 1.0, z=2).verdict == "worse"
    assert metric_verdict("fid", 10.0, 6.0, 1.0, 1.0, z=2).verdict == "better"
    assert metric_verdict("fid", 10.0, 10.0, 0.0, 0.0).verdict == "same"


def test_thresholds_absolute_relative_and_both():
    # Far outside the noise, but inside an absolute tolerance of 5.
    assert metric_verdict("fid", 10.0, 14.0, 0.1, 0.1, threshold=Threshold(absolute=5)).verdict == "same"
    assert metric_verdict("fid", 10.0, 16.0, 0.1, 0.1, threshold=Threshold(absolute=5)).verdict == "worse"
    # Relative: 50 % of the baseline value 10 is 5.
    assert metric_verdict("fid", 10.0, 14.0, 0.1, 0.1, threshold=Threshold(relative=0.5)).verdict == "same"
    assert metric_verdict("fid", 10.0, 4.0, 0.1, 0.1, threshold=Threshold(relative=0.5)).verdict == "better"
    # Both: the larger applies (max(1, 0.5·10) = 5).
    both = Threshold(absolute=1, relative=0.5)
    assert metric_verdict("fid", 10.0, 14.0, 0.1, 0.1, threshold=both).threshold == pytest.approx(5.0)
    assert metric_verdict("fid", 10.0, 14.0, 0.1, 0.1, threshold=both).verdict == "same"
    # A threshold never overrides the noise: 6 > 5 but 3·se = 8.5.
    assert metric_verdict("fid", 10.0, 16.0, 2.0, 2.0, threshold=Threshold(absolute=5)).verdict == "same"
    # Precision (higher is better), relative to 0.9: a drop of 0.05 is below 10 %.
    assert metric_verdict("precision", 0.9, 0.85, 0.001, 0.001, threshold=Threshold(relative=0.1)).verdict == "same"


def test_parse_thresholds():
    assert parse_threshold("fid", 0.5) == Threshold(absolute=0.5)
    assert parse_threshold("fid", "2%") == Threshold(relative=0.02)
    assert parse_threshold("fid", "0.5") == Threshold(absolute=0.5)
    assert parse_threshold("fid", [0.5, "2%"]) == Threshold(0.5, 0.02)
    assert parse_threshold("fid", {"absolute": 0.5, "relative": 0.02}) == Threshold(0.5, 0.02)
    assert parse_threshold_option("precision=1%") == ("precision", Threshold(relative=0.01))
    for metric, value, message in [("fid", -1, "≥ 0"), ("fid", "abc", "not a number"), ("fid", [1, 2], "given twice"),
                                   ("is_std", 1, "no scored metric 'is_std'"), ("fid", True, "≥ 0")]:
        with pytest.raises(ValueError, match=message):
            parse_threshold(metric, value)
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_threshold_option("fid")


def test_missing_standard_error_counts_as_zero_and_is_noted():
    new = side([result_row(fid=10.5, fid_se=None)])
    result = compare(new, side([result_row()]))
    fid = next(m for m in result.rows[0].metrics if m.metric == "fid")
    assert fid.se_missing and fid.se == pytest.approx(1.0)
    assert fid.verdict == "same"  # 0.5 < 3·1
    assert any("fid has no standard error" in note and "counted as 0" in note for note in result.notes)


def test_settings_command_line_over_new_suite_over_baseline():
    new, base = side([result_row()]), side([result_row()], regression={"z": 2, "thresholds": {"fid": "5%"}})
    settings = resolve_settings(new, base)
    assert settings.z == 2 and settings.thresholds == {"fid": Threshold(relative=0.05)}
    assert "baseline" in settings.source
    new = side([result_row()], regression={"z": 4, "thresholds": {"precision": 0.01}})
    settings = resolve_settings(new, base, thresholds={"fid": Threshold(absolute=1)})
    assert settings.z == 4 and settings.thresholds == {"precision": Threshold(absolute=0.01), "fid": Threshold(absolute=1)}
    assert settings.source.startswith("command line over new")
    assert resolve_settings(side([result_row()]), side([result_row()]), z=5).z == 5
    assert resolve_settings(side([result_row()]), side([result_row()])) == Settings()


# --- inputs, protocol and exit codes -----------------------------------------------------------


@pytest.mark.parametrize("field, new_value, shown", [
    ("quantisation", "truncate", "'truncate'"),
    ("reference_sha256", SHA_B, "bbbbbbbbbbbb…"),
    ("extractor_sha256", SHA_B, "bbbbbbbbbbbb…"),
    ("num_samples", 2000, "2000"),
    ("profile", "edm", "'edm'"),
    ("metric_options", {**MetricOptions().__dict__, "pr_k": 5}, "{pr_k: 5}"),
])
def test_protocol_mismatch_exits_2_naming_the_field_and_rows(tmp_path, capsys, field, new_value, shown):
    base = write_rows(tmp_path / "base.jsonl", [result_row(), result_row("cd.cm_multistep.nfe1")])
    new = write_rows(tmp_path / "new.jsonl", [result_row(**{field: new_value}), result_row("cd.cm_multistep.nfe1")])
    assert main(["compare", str(new), str(base)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmbench: error: ") and "protocols differ" in err
    assert f"{field}: new {shown}" in err
    assert "edm.heun.nfe35" in err and "cd.cm_multistep.nfe1" not in err


def test_unusable_inputs_exit_2(tmp_path, capsys):
    good = write_rows(tmp_path / "good.jsonl", [result_row()])
    other = write_rows(tmp_path / "other.jsonl", [result_row("ct.cm_multistep.nfe2")])
    assert main(["compare", str(good), str(other)]) == 2
    assert "no row of" in capsys.readouterr().err
    assert main(["compare", str(good), str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert main(["compare", str(good), str(tmp_path / "broken.jsonl")]) == 2
    assert "broken.jsonl:1: not valid JSON" in capsys.readouterr().err
    (tmp_path / "future.json").write_text(json.dumps({"format": "cmbench-baseline/9", "rows": []}))
    assert main(["compare", str(good), str(tmp_path / "future.json")]) == 2
    assert f"accepted: '{BASELINE_FORMAT}'" in capsys.readouterr().err
    assert main(["compare", str(good), str(tmp_path)]) == 2  # a folder without results.jsonl
    assert "without results.jsonl" in capsys.readouterr().err
    assert main(["compare", str(good), str(good), "--threshold", "fid=-1"]) == 2
    assert "expected a number ≥ 0" in capsys.readouterr().err
    assert main(["compare", str(good), str(good), "--metric", "fidd"]) == 2
    assert "unknown metric(s) fidd" in capsys.readouterr().err


def test_exit_1_on_a_regression_and_rows_on_one_side_only_with_strict(tmp_path, capsys):
    base = write_rows(tmp_path / "base.jsonl", [result_row(), result_row("cd.cm_multistep.nfe1")])
    new = write_rows(tmp_path / "new.jsonl", [result_row(precision=0.9), result_row("ctm.jump.nfe1")])
    assert main(["compare", str(new), str(base)]) == 1
    out = capsys.readouterr().out
    assert "WORSE" in out and "precision ↑" in out
    assert "only in new (not compared): ctm.jump.nfe1" in out
    assert "only in baseline (missing from new): cd.cm_multistep.nfe1" in out
    same = write_rows(tmp_path / "same.jsonl", [result_row(fid=10.3), result_row("ctm.jump.nfe1")])
    assert main(["compare", str(same), str(base)]) == 0
    assert main(["compare", str(same), str(base), "--strict"]) == 1
    assert main(["compare", str(new), str(base), "--metric", "fid"]) == 0  # precision not compared
    capsys.readouterr()


def test_output_formats(tmp_path, capsys):
    base = write_rows(tmp_path / "base.jsonl", [result_row(), result_row("edm.heun.nfe1", fid=500.0, fid_se=5.0)])
    new = write_rows(tmp_path / "new.jsonl", [result_row(fid=20.0), result_row("edm.heun.nfe1", fid=400.0, fid_se=5.0)])
    code = main(["compare", str(new), str(base), "--json", str(tmp_path / "c.json"), "--markdown",
                 str(tmp_path / "c.md"), "--threshold", "fid=2%", "--z", "2.5"])
    assert code == 1
    table = capsys.readouterr().out
    assert "z = 2.5; thresholds: fid 2% (from command line)" in table
    assert "1 worse, 6 same, 1 better (2 rows) → exit status 1" in table
    document = json.loads((tmp_path / "c.json").read_text())
    assert document["format"] == "cmbench-compare/1" and document["exit_code"] == 1 and document["regressed"]
    assert document["counts"] == {"worse": 1, "same": 6, "better": 1}
    assert document["thresholds"] == {"fid": {"absolute": None, "relative": 0.02}}
    fid = {r["row_id"]: next(m for m in r["metrics"] if m["metric"] == "fid") for r in document["rows"]}
    assert fid["edm.heun.nfe35"]["verdict"] == "worse" and fid["edm.heun.nfe35"]["diff"] == pytest.approx(10.0)
    assert fid["edm.heun.nfe35"]["se"] == pytest.approx(2 ** 0.5) and fid["edm.heun.nfe35"]["direction"] == "lower"
    assert fid["edm.heun.nfe1"]["verdict"] == "better" and fid["edm.heun.nfe1"]["threshold"] == pytest.approx(10.0)
    markdown = (tmp_path / "c.md").read_text()
    assert markdown.startswith("### cmbench compare: ❌ 1 metric worse")
    assert "| Row | Metric | Baseline | New | Δ | z·se | Threshold | Verdict |" in markdown
    assert "| `edm.heun.nfe35` | fid ↓ | 10 ± 1 | 20 ± 1 | +10 | 3.536 | 0.2 | **🔴 worse** |" in markdown
    assert "**🟢 better**" in markdown and "⚪ same" in markdown
    assert main(["compare", str(new), str(base), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["worse"] == 1
    assert main(["compare", str(base), str(base), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("### cmbench compare: ✅ no regression")


def test_renderers_are_pure_functions_of_the_comparison():
    result = compare(side([result_row("a|b.heun.nfe35", fid=30.0)]), side([result_row("a|b.heun.nfe35")]))
    assert "WORSE" in render_table(result)
    assert "`a\\|b.heun.nfe35`" in render_markdown(result)  # a pipe would split the table cell
    assert to_json(result)["exit_code"] == 1 and result.exit_code() == 1 and result.exit_code(strict=True) == 1


# --- failing closed: a metric the baseline measured and the new row did not ----------------------

METRICS_OF_ROW = ("fid", "is_mean", "precision", "recall")


def failed_row(row_id="edm.heun.nfe35", error="non-finite samples: 12 of 1000 images hold NaN") -> dict:
    """A row as `cmbench run` records one it could not score: identity and error, metrics null."""
    row = result_row(row_id, status="failed", error=error)
    row.update({key: None for key in METRICS_OF_ROW + tuple(f"{m}_se" for m in METRICS_OF_ROW)})
    return row


def verdicts_of(document: dict, row_id: str = "edm.heun.nfe35") -> dict[str, dict]:
    row = next(r for r in document["rows"] if r["row_id"] == row_id)
    return {m["metric"]: m for m in row["metrics"]}


@pytest.mark.parametrize("strict", [[], ["--strict"]])
def test_a_nan_model_row_is_worse_and_exits_1_with_and_without_strict(tmp_path, capsys, strict):
    base = write_rows(tmp_path / "base.jsonl", [result_row()])
    # results.py writes NaN as null; a hand-made file may hold NaN itself or a string.
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(result_row(fid=None, fid_se=None)).replace('"is_mean": 9.0', '"is_mean": NaN')
                   .replace('"precision": 0.98', '"precision": "inf"') + "\n")
    code = main(["compare", str(new), str(base), "--json", str(tmp_path / "c.json"), *strict])
    assert code == 1
    table = capsys.readouterr().out
    assert "missing on the new side" in table and "non-finite: nan" in table and "non-finite: inf" in table
    assert "3 worse, 1 same, 0 better (1 row); 3 of the worse not measured on the new side → exit status 1" in table
    document = json.loads((tmp_path / "c.json").read_text())
    assert document["exit_code"] == 1 and document["regressed"] and document["unmeasured"] == 3
    fid, is_mean, precision, recall = (verdicts_of(document)[m] for m in METRICS_OF_ROW)
    assert (fid["verdict"], fid["failure"], fid["reason"]) == ("worse", "missing", "missing on the new side")
    assert (is_mean["verdict"], is_mean["failure"], is_mean["reason"]) == ("worse", "non-finite", "non-finite: nan")
    assert (precision["failure"], precision["reason"]) == ("non-finite", "non-finite: inf")
    assert fid["new"] is None and fid["diff"] is None and fid["baseline"] == 10.0
    assert recall["verdict"] == "same" and recall["failure"] is None and recall["reason"] is None
    assert not any("fid is measured on one side only" in note for note in document["notes"])


def test_a_metric_column_missing_from_the_new_rows_is_worse(tmp_path, capsys):
    base = write_rows(tmp_path / "base.jsonl", [result_row()])
    row = result_row()
    del row["recall"], row["recall_se"]
    new = write_rows(tmp_path / "new.jsonl", [row])
    assert main(["compare", str(new), str(base), "--format", "markdown"]) == 1
    markdown = capsys.readouterr().out
    assert markdown.startswith("### cmbench compare: ❌ 1 metric worse (1 not measured on the new side)")
    assert "| `edm.heun.nfe35` | recall ↑ | 0.84 ± 0.02 | missing on the new side | — | — | — | **🔴 worse** |" in markdown
    assert main(["compare", str(new), str(base), "--metric", "fid"]) == 0  # recall not asked for


def test_a_failed_row_is_worse_on_every_baseline_metric_naming_its_error(tmp_path, capsys):
    base = write_rows(tmp_path / "base.jsonl", [result_row(), result_row("cd.cm_multistep.nfe1")])
    new = write_rows(tmp_path / "new.jsonl", [failed_row(), result_row("cd.cm_multistep.nfe1")])
    assert main(["compare", str(new), str(base), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    verdicts = verdicts_of(document)
    assert set(verdicts) == set(METRICS_OF_ROW)
    reason = "row failed: non-finite samples: 12 of 1000 images hold NaN"
    assert all(v["verdict"] == "worse" and v["failure"] == "row failed" and v["reason"] == reason for v in verdicts.values())
    row = next(r for r in document["rows"] if r["row_id"] == "edm.heun.nfe35")
    assert row["new_error"] == "non-finite samples: 12 of 1000 images hold NaN" and row["baseline_error"] is None
    assert document["counts"] == {"worse": 4, "same": 4, "better": 0} and document["exit_code"] == 1
    assert main(["compare", str(new), str(base)]) == 1
    table = capsys.readouterr().out
    assert table.count(reason) == 4 and table.count("WORSE") == 4
    # A metric the baseline lacks is not judged, failed or not: fid only in the baseline → 1 verdict.
    only_fid = write_rows(tmp_path / "fid.jsonl", [{k: v for k, v in result_row().items()
                                                    if k not in ("is_mean", "precision", "recall")}])
    assert compare(load_side(new), load_side(only_fid)).counts() == {"worse": 1, "same": 0, "better": 0}


def test_a_row_failed_on_the_baseline_side_only_is_noted_not_a_failure(tmp_path, capsys):
    base = write_rows(tmp_path / "base.jsonl", [failed_row(error="boom"), result_row("cd.cm_multistep.nfe1")])
    new = write_rows(tmp_path / "new.jsonl", [result_row(), result_row("cd.cm_multistep.nfe1")])
    assert main(["compare", str(new), str(base), "--strict", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "note: edm.heun.nfe35 failed on the baseline side (boom); its metrics are not compared" in out
    document = json.loads((tmp_path / "c.json").read_text())
    assert verdicts_of(document) == {} and verdicts_of(document, "cd.cm_multistep.nfe1")
    assert next(r for r in document["rows"] if r["row_id"] == "edm.heun.nfe35")["baseline_error"] == "boom"
    # Failed on both sides: nothing to compare, said so; alone, there is nothing to compare at all.
    both = compare(side([failed_row(error="again"), result_row("cd.cm_multistep.nfe1")]), load_side(base))
    assert both.exit_code(strict=True) == 0
    assert "edm.heun.nfe35 failed on both sides (new: again; baseline: boom); nothing to compare" in both.notes
    with pytest.raises(CompareError, match=r"nothing to compare \(edm.heun.nfe35 failed on the baseline side\)"):
        compare(side([result_row()]), side([failed_row()]))


def test_a_baseline_value_that_is_not_finite_is_noted_not_compared():
    result = compare(side([result_row(fid=50.0)]), side([result_row(fid=float("nan"), precision="inf")]))
    assert {m.metric for m in result.rows[0].metrics} == {"is_mean", "recall"}
    assert result.exit_code(strict=True) == 0
    assert "the baseline's fid is non-finite: nan for edm.heun.nfe35; nothing to compare against, not compared" in result.notes
    assert any("the baseline's precision is non-finite: inf" in note for note in result.notes)
    # Both sides without a value: nothing to compare, nothing said (as before).
    quiet = compare(side([result_row(fid=None)]), side([result_row(fid=None)]))
    assert quiet.exit_code() == 0 and not any("fid" in note for note in quiet.notes)
    # The baseline measured it and the new side did not: worse, whatever the new row's type.
    for value, reason in [(None, "missing on the new side"), (float("-inf"), "non-finite: -inf"),
                          ("nan", "non-finite: nan"), ("12.5", "not a number: '12.5'"), (True, "not a number: True")]:
        fid = next(m for m in compare(side([result_row(fid=value)]), side([result_row()])).rows[0].metrics if m.metric == "fid")
        assert (fid.verdict, fid.reason) == ("worse", reason)


def test_a_baseline_file_keeps_a_failed_rows_status_and_error(tmp_path):
    from cmbench.compare import baseline_document

    document = baseline_document(side([failed_row(error="boom")], source="run"))
    assert document["rows"][0]["status"] == "failed" and document["rows"][0]["error"] == "boom"


# --- suites, bootstrap, baselines and the report ------------------------------------------------


def gmm_raw(**changes) -> dict:
    raw = {
        "name": "tiny", "num_samples": 120, "batch_size": 60, "grid_images": 0,
        "features": {"extractor": "gmm-posterior", "model": "mix"},
        "metrics": ["fid", "inception_score", "precision_recall", "density_coverage"],
        "metric_options": {"is_splits": 2},
        "reference": {"model": "mix", "num_images": 200, "seed": 1000},
        "models": {"mix": {"family": "gmm", "image_shape": [1, 4, 4],
                           "random": {"count": 3, "seed": 0, "mean_scale": 0.7, "std": 0.15}, "ode_steps": 16}},
        "runs": [{"model": "mix", "sampler": "heun", "nfe": [5]}, {"model": "mix", "sampler": "cm_multistep", "nfe": [1]}],
    }
    raw.update(changes)
    return raw


def test_suite_uncertainty_and_regression_blocks(tmp_path):
    suite = parse_suite(gmm_raw(), "s.yaml", tmp_path)
    assert suite.uncertainty == {"bootstrap": 20, "seed": 0} and suite.regression == {}
    other = parse_suite(gmm_raw(uncertainty={"bootstrap": 0}), "s.yaml", tmp_path)
    assert other.uncertainty == {"bootstrap": 0, "seed": 0}
    assert suite.row_fingerprint(suite.rows[0]) != other.row_fingerprint(other.rows[0])
    regression = parse_suite(gmm_raw(regression={"z": 2, "thresholds": {"fid": [0.5, "2%"]}}), "s.yaml", tmp_path)
    assert regression.regression == {"z": 2.0, "thresholds": {"fid": {"absolute": 0.5, "relative": 0.02}}}
    assert regression.row_fingerprint(regression.rows[0]) == suite.row_fingerprint(suite.rows[0])
    for changes, key, message in [
        ({"uncertainty": {"bootstrap": 1}}, "uncertainty.bootstrap", "one resample has no spread"),
        ({"uncertainty": {"resamples": 5}}, "uncertainty.resamples", "unknown key"),
        ({"regression": {"thresholds": {"kid": 0.1}}}, "regression.thresholds.kid", "this suite measures no 'kid'"),
        ({"regression": {"thresholds": {"fid": "x%"}}}, "regression.thresholds.fid", "not a number"),
        ({"regression": {"z": 0}}, "regression.z", "expected a number > 0"),
        ({"regression": {"zz": 1}}, "regression.zz", "unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_suite(gmm_raw(**changes), "s.yaml", tmp_path)
        assert info.value.path == key and message in str(info.value) and "s.yaml" in str(info.value)


def _features(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[1] = x[0]  # exact duplicates happen (quantised images)
    return x


@pytest.mark.parametrize("nearest", [8, 1])
def test_neighbour_plan_equals_the_metrics_on_each_resample(monkeypatch, nearest):
    monkeypatch.setattr(NeighbourPlan, "nearest_per_neighbour", nearest)  # 1: the full-row fallback runs too
    rng = np.random.default_rng(0)
    real, fake = _features(rng, 300), _features(rng, 250) * 1.2
    reference = ReferenceStats.from_features({"pool": real}, {"extractor": "x", "extractor_sha256": "y", "num_images": 300,
                                                              "resolution": [4], "source": "test"}, keep_features={"pool": 300})
    names = ["precision_recall", "density_coverage"]
    plan = NeighbourPlan.for_metrics(names, {"pool": fake}, reference, MetricOptions())
    for seed in range(8):
        index = np.random.default_rng(seed).integers(0, len(fake), len(fake))
        assert plan.values(index) == compute_metrics(names, {"pool": fake[index]}, reference, MetricOptions())


def test_bootstrap_is_seeded_and_leaves_the_metric_values_alone(tmp_path):
    from cmbench.generate import sample_and_score
    from cmbench.runner import RunContext
    from cmbench.samplers import get_sampler

    suite = parse_suite(gmm_raw(), "s.yaml", tmp_path)
    ctx = RunContext(suite, tmp_path / "out", "cpu")
    row = suite.rows[0]
    kwargs = dict(metrics=suite.metrics, metric_options=suite.metric_options, reference=ctx.reference(),
                  batch_size=60, device=ctx.device, quantisation="round", extractor=ctx.extractor)
    args = (ctx.model("mix"), get_sampler(row.sampler), row.nfe, row.options, list(range(120)))
    plain = sample_and_score(*args, **kwargs)[0]
    with_se = sample_and_score(*args, **kwargs, bootstrap=10, bootstrap_seed=3)[0]
    again = sample_and_score(*args, **kwargs, bootstrap=10, bootstrap_seed=3)[0]
    assert {k: with_se[k] for k in plain} == plain  # bit-identical metric values
    assert set(with_se) - set(plain) == {"fid_se", "is_mean_se", "precision_se", "recall_se", "density_se", "coverage_se"}
    assert with_se == again and with_se["fid_se"] > 0 and all(v >= 0 for k, v in with_se.items() if k.endswith("_se"))
    with pytest.raises(ValueError, match="at least 2 resamples"):
        bootstrap_standard_errors(suite.metrics, {"pool": np.zeros((4, 2))}, None, MetricOptions(), resamples=1)


def test_run_saves_a_baseline_and_the_report_compares_against_one(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(gmm_raw(regression={"thresholds": {"fid": 0.01}})))
    baseline = tmp_path / "baseline.json"
    assert main(["run", str(suite), "--out", str(tmp_path / "a"), "--quiet", "--save-baseline", str(baseline)]) == 0
    assert f"baseline: {baseline} (2 rows)" in capsys.readouterr().out
    document = json.loads(baseline.read_text())
    assert document["format"] == BASELINE_FORMAT and document["suite"] == "tiny"
    assert document["regression"] == {"z": 3.0, "thresholds": {"fid": {"absolute": 0.01, "relative": None}}}
    assert {"created_at", "cmbench_version", "rows"} <= set(document)
    first = document["rows"][0]
    for key in ("row_id", "model", "sampler", "nfe", "num_samples", "quantisation", "extractor", "extractor_sha256",
                "reference_sha256", "metric_options", "fid", "fid_se", "precision_se", "coverage_se", "uncertainty"):
        assert first.get(key) is not None, key
    assert first["uncertainty"] == {"method": "bootstrap", "resamples": 20, "seed": 0}
    before = baseline.read_text()
    # No overwrite without --overwrite-baseline, and nothing runs.
    assert main(["run", str(suite), "--out", str(tmp_path / "b"), "--quiet", "--save-baseline", str(baseline)]) == 2
    assert "--overwrite-baseline" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert baseline.read_text() == before
    # Another seed set, compared in the report (and on the terminal).
    code = main(["run", str(suite), "--out", str(tmp_path / "b"), "--quiet", "--set", "seed_start=5000",
                 "--baseline", str(baseline)])
    assert code == 0
    assert f"regression vs {baseline}: " in capsys.readouterr().out
    html = (tmp_path / "b" / "report.html").read_text()
    assert "Regression vs baseline" in html and 'class="verdict verdict-' in html
    assert f"Baseline: <code>{baseline.name}, created " in html  # the file given (no machine path), not the copy
    assert (tmp_path / "b" / "baseline.json").is_file()
    assert "Regression vs baseline" not in (tmp_path / "a" / "report.html").read_text()
    # The run folder and the baseline file are interchangeable sides.
    assert main(["compare", str(tmp_path / "a"), str(baseline)]) == 0
    assert "0 worse, 12 same, 0 better (2 rows)" in capsys.readouterr().out
    assert load_side(tmp_path / "a" / "results.jsonl").regression == document["regression"]
    # The report says why when the baseline cannot be compared.
    (tmp_path / "b" / "baseline.json").write_text(json.dumps({**document, "rows": [
        {**r, "quantisation": "truncate"} for r in document["rows"]]}))
    assert main(["report", str(tmp_path / "b")]) == 0
    assert "Not compared: cannot compare" in (tmp_path / "b" / "report.html").read_text()


# --- the toy zoo: done-when checks ------------------------------------------------------------


TOY_SAMPLES = 1000


def toy_suite(folder: Path, *, checkpoint: str = "zoo:toy/edm", seed_start: int = 0,
              reference: str = "toy-digits-all.npz") -> Path:
    """The bundled toy suite reduced to EDM Heun at NFE 35 (no grids, no likelihood)."""
    raw = yaml.safe_load((REPO / "suites" / "toy.yaml").read_text())
    raw.pop("likelihood")
    raw.update(num_samples=TOY_SAMPLES, seed_start=seed_start, grid_images=0,
               reference={"path": str(REPO / "reference_stats" / reference)},
               models={"edm": {"family": "edm", "checkpoint": checkpoint}},
               runs=[{"model": "edm", "sampler": "heun", "nfe": [35]}])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def degraded_edm(path: Path, scale: float = 0.2) -> Path:
    """The toy EDM with seeded Gaussian noise of ``scale`` × each weight tensor's RMS added."""
    checkpoint = load_native(resolve_checkpoint("zoo:toy/edm", REPO)[0])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in checkpoint.net.parameters():
            rms = parameter.float().pow(2).mean().sqrt()
            parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale * rms)
    save_native(path, checkpoint.net, arch=checkpoint.arch, arch_kwargs=copy.deepcopy(checkpoint.arch_kwargs),
                family=checkpoint.family, model_options=checkpoint.model_options,
                meta={**checkpoint.meta, "degraded": scale}, storage_dtype=torch.float16)
    return path


@pytest.fixture(scope="module")
def toy_baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    baseline = root / "baseline.json"
    assert main(["run", str(toy_suite(root / "base")), "--out", str(root / "base-run"), "--quiet",
                 "--save-baseline", str(baseline)]) == 0
    return root, baseline


def test_toy_same_checkpoint_other_seeds_is_same(toy_baseline, capsys):
    root, baseline = toy_baseline
    out = root / "seeds"
    assert main(["run", str(toy_suite(root / "s", seed_start=100_000)), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(baseline), "--json", str(root / "same.json")]) == 0
    document = json.loads((root / "same.json").read_text())
    verdicts = {m["metric"]: m["verdict"] for r in document["rows"] for m in r["metrics"]}
    assert verdicts == {"fid": "same", "is_mean": "same", "precision": "same", "recall": "same"}
    assert document["only_in_new"] == document["only_in_baseline"] == [] and document["notes"] == []


def test_toy_degraded_edm_is_worse_with_exit_status_1(toy_baseline, capsys):
    root, baseline = toy_baseline
    checkpoint = degraded_edm(root / "edm-noisy.pt")
    out = root / "degraded"
    assert main(["run", str(toy_suite(root / "d", checkpoint=str(checkpoint))), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(baseline), "--markdown", str(root / "pr.md")]) == 1
    assert "WORSE" in capsys.readouterr().out
    fid = next(m for m in compare(load_side(out), load_side(baseline)).rows[0].metrics if m.metric == "fid")
    assert fid.verdict == "worse" and fid.diff > fid.noise > 0
    assert "| `edm.heun.nfe35` | fid ↓ |" in (root / "pr.md").read_text()


def test_toy_other_reference_statistics_exit_2(toy_baseline, capsys):
    root, baseline = toy_baseline
    out = root / "test-split"
    suite = toy_suite(root / "t", reference="toy-digits-test.npz")
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--set", "uncertainty.bootstrap=0"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "protocols differ" in err and "reference_sha256: new" in err and "edm.heun.nfe35" in err
    with pytest.raises(CompareError, match="reference_sha256"):
        compare(load_side(out), load_side(baseline))
