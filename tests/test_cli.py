"""The command line: `cmbench run` and `cmbench report`, exit codes and error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmbench.cli import bundled_suites, main, resolve_suite
from cmbench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]


def tiny_raw(**changes) -> dict:
    raw = {
        "name": "tiny",
        "num_samples": 64,
        "batch_size": 32,
        "grid_images": 16,
        "features": {"extractor": "gmm-posterior", "model": "mix"},
        "metrics": ["fid", "inception_score"],
        "metric_options": {"is_splits": 2},
        "reference": {"model": "mix", "num_images": 200, "seed": 1000},
        "models": {
            "mix": {
                "family": "gmm",
                "image_shape": [1, 4, 4],
                "random": {"count": 2, "seed": 0, "mean_scale": 0.7, "std": 0.15},
                "ode_steps": 16,
            }
        },
        "runs": [
            {"model": "mix", "sampler": "heun", "nfe": [3]},
            {"model": "mix", "sampler": "cm_multistep", "nfe": [1]},
        ],
    }
    raw.update(changes)
    return raw


IDS = ["mix.heun.nfe3", "mix.cm_multistep.nfe1"]


def write_suite(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_run_then_report(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert str(out / "report.html") in printed.out
    assert str(out / "results.jsonl") in printed.out
    assert printed.err == ""  # --quiet: no progress bars
    report = out / "report.html"
    html = report.read_text()
    assert all(row_id in html for row_id in IDS)
    assert [r["row_id"] for r in rows(out)] == IDS
    assert all(r["num_samples"] == 64 for r in rows(out))

    report.unlink()
    assert main(["report", str(out)]) == 0
    assert str(report) in capsys.readouterr().out
    assert report.is_file()
    assert all(row_id in report.read_text() for row_id in IDS)


def test_report_of_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmbench: error: ")
    assert str(tmp_path / "nothing") in err


def test_suite_error_exits_2_naming_file_and_key(tmp_path, capsys):
    raw = tiny_raw()
    raw["runs"][1]["sampler"] = "heunn"
    suite = write_suite(tmp_path / "suite", raw)
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmbench: error: ")
    assert str(suite) in err
    assert "runs[1].sampler" in err
    assert "heun, euler, cm_multistep, ctm_gamma, ddim" in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing ran


def test_unknown_suite_name_lists_bundled_suites(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "no-such-suite"]) == 2
    err = capsys.readouterr().err
    assert "'no-such-suite'" in err
    assert "bundled: " in err and "gmm" in err.split("bundled: ")[1]


def test_set_overrides_through_the_cli(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    code = main(["run", str(suite), "--out", str(out), "--quiet", "--set", "num_samples=40", "--set", "runs.0.nfe=[1,5]"])
    assert code == 0
    assert [r["row_id"] for r in rows(out)] == ["mix.heun.nfe1", "mix.heun.nfe5", "mix.cm_multistep.nfe1"]
    assert {r["num_samples"] for r in rows(out)} == {40}
    assert json.loads((out / "run.json").read_text())["num_samples"] == 40
    assert load_suite(suite).num_samples == 64  # the file is unchanged


def test_bad_set_override_exits_2(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--set", "nokey"]) == 2
    err = capsys.readouterr().err
    assert "nokey" in err and "key.path=value" in err and str(suite) in err


def test_changed_configuration_exits_2_and_recompute_changed_replaces(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    changed = ["run", str(suite), "--out", str(out), "--quiet", "--set", "num_samples=32"]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "--recompute-changed" in err
    assert {r["num_samples"] for r in rows(out)} == {64}
    assert main(changed + ["--recompute-changed"]) == 0
    assert {r["num_samples"] for r in rows(out)} == {32}


def test_default_output_folder_is_reports_suite_name(tmp_path, capsys, monkeypatch):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["run", str(suite), "--quiet"]) == 0
    assert (work / "reports" / "tiny" / "report.html").is_file()
    assert [r["row_id"] for r in rows(work / "reports" / "tiny")] == IDS


def test_resolve_suite_finds_the_bundled_gmm_suite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called "gmm" here
    path = resolve_suite("gmm")
    assert path.is_file()
    assert path.name == "gmm.yaml"
    assert path.resolve() == (REPO / "suites" / "gmm.yaml").resolve()
    assert "gmm" in bundled_suites()
    assert load_suite(path).name == "gmm"
    local = write_suite(tmp_path / "x", tiny_raw())
    assert resolve_suite(str(local)) == local
    with pytest.raises(FileNotFoundError, match="bundled: .*gmm"):
        resolve_suite("gmmm")


def test_python_dash_m_cmbench_run(tmp_path):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cmbench", "run", str(suite), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").is_file()
    assert [r["row_id"] for r in rows(out)] == IDS


def test_python_dash_m_cmbench_error_exit_code(tmp_path):
    raw = tiny_raw(num_samples="many")
    suite = write_suite(tmp_path / "suite", raw)
    proc = subprocess.run(
        [sys.executable, "-m", "cmbench", "run", str(suite), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert str(suite) in proc.stderr and "num_samples" in proc.stderr and "expected an integer" in proc.stderr
