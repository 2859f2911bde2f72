"""Images made elsewhere: --save-samples writes them, `cmbench score` scores them as the run did."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cmbench
from cmbench.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "reference_stats" / "toy-digits-all.npz"
SCORED = ("fid", "fid_se", "is_mean", "is_std", "is_mean_se", "precision", "recall", "precision_se", "recall_se")
RUN = ["--set", "num_samples=150", "--set", "batch_size=50", "--set", "likelihood=null", "--set", "grid_images=8",
       "--set", "runs=[{model: cd, sampler: cm_multistep, nfe: [1, 2]}, {model: pd2, sampler: ddim, nfe: [2]}]"]


def _rows(folder: Path) -> dict[str, dict]:
    return {r["row_id"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "toy"
    assert main(["run", "toy", "--out", str(out), "--quiet", "--save-samples", "npz,png", *RUN]) == 0
    return out


def test_saved_samples_are_adm_npz_and_edm_pngs(saved_run):
    rows = _rows(saved_run)
    row = rows["cd.cm_multistep.nfe1"]
    assert row["samples"] == {"npz": "samples/cd.cm_multistep.nfe1.npz", "png": "samples/cd.cm_multistep.nfe1"}
    assert row["samples_quantisation"] == "round"
    with np.load(saved_run / row["samples"]["npz"]) as data:
        assert sorted(data.files) == ["arr_0"]  # unconditional: no labels
        assert data["arr_0"].shape == (150, 8, 8, 1) and data["arr_0"].dtype == np.uint8
    pngs = sorted((saved_run / row["samples"]["png"]).rglob("*.png"))
    assert len(pngs) == 150 and pngs[0].relative_to(saved_run / row["samples"]["png"]).as_posix() == "000000/000000.png"


def test_score_reproduces_the_run_exactly_from_npz_and_png(saved_run, tmp_path):
    run_rows = _rows(saved_run)
    samples = saved_run / "samples"
    args = [f"cd1={samples / 'cd.cm_multistep.nfe1.npz'}", f"cd1png={samples / 'cd.cm_multistep.nfe1'}",
            f"pd2={samples / 'ddim.npz'}"]
    (samples / "ddim.npz").symlink_to(samples / "pd2.ddim.nfe2.npz")
    assert main(["score", *args, "--suite", "toy", "--set", "batch_size=50", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    scored = _rows(tmp_path / "s")
    for row_id, source in (("cd1.stored.nfe0", "cd.cm_multistep.nfe1"), ("cd1png.stored.nfe0", "cd.cm_multistep.nfe1"),
                           ("pd2.stored.nfe0", "pd2.ddim.nfe2")):
        for column in SCORED:
            assert scored[row_id][column] == run_rows[source][column], (row_id, column)
        assert scored[row_id]["model_source"] == "samples" and scored[row_id]["seconds_per_sample"] is None
    assert scored["cd1.stored.nfe0"]["fid"] != scored["pd2.stored.nfe0"]["fid"]
    api = cmbench.score({"cd1": samples / "cd.cm_multistep.nfe1.npz"}, suite="toy", nfe=1)
    assert api["row_id"][0] == "cd1.stored.nfe1" and api["fid"][0] == run_rows["cd.cm_multistep.nfe1"]["fid"]


def test_score_under_a_profile_and_a_suite_model_of_kind_samples(saved_run, tmp_path):
    npz = saved_run / "samples" / "cd.cm_multistep.nfe1.npz"
    assert main(["score", str(npz), "--profile", "toy", "--reference", str(REFERENCE), "--nfe", "1", "--limit", "100",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 0
    by_profile = _rows(tmp_path / "p")["cd_cm_multistep_nfe1.stored.nfe1"]
    assert by_profile["num_samples"] == 100 and by_profile["nfe"] == 1 and by_profile["fid"] > 0
    suite = tmp_path / "samples.yaml"
    suite.write_text(f"name: s\nnum_samples: 100\nprofile: toy\nreference: {{path: {REFERENCE}}}\n"
                     f"models:\n  cd: {{family: samples, path: {npz}}}\nruns:\n  - {{model: cd, sampler: stored, nfe: [1]}}\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "y"), "--quiet"]) == 0
    assert _rows(tmp_path / "y")["cd.stored.nfe1"]["fid"] == by_profile["fid"]


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: _npz(p / "x.npz", images=np.zeros((4, 8, 8, 1), np.uint8)), [], "has no array 'arr_0'; it has: images"),
    (lambda p: _npz(p / "x.npz", arr_0=np.zeros((4, 8, 8, 1), np.float32)), [], "holds float images"),
    (lambda p: _npz(p / "x.npz", arr_0=np.zeros((4, 8, 8), np.uint8)), [], "expected NHWC images"),
    (lambda p: _npz(p / "x.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8)), ["--limit", "10"], "fewer images: x \\(4\\)"),
    (lambda p: (p / "x.npz").write_bytes(b"not a zip") and p / "x.npz", [], "not an .npz file"),
    (lambda p: p / "missing.npz", [], "no such file or folder"),
    (lambda p: _npz(p / "x.npz", arr_0=np.zeros((20, 16, 16, 1), np.uint8)), [], "x.npz .* do not suit the toy-classifier extractor"),
])
def test_score_bad_input_names_the_file(tmp_path, capsys, make, extra, message):
    path = make(tmp_path)
    code = main(["score", str(path), "--profile", "toy", "--reference", str(REFERENCE), "--out", str(tmp_path / "o"),
                 "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err


def test_score_arguments(tmp_path, capsys):
    a = _npz(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    b = _npz(tmp_path / "b.npz", arr_0=np.zeros((6, 8, 8, 1), np.uint8))
    for argv, message in (
        ([str(a), str(b), "--profile", "toy"], "differ in size \\(a: 4, b: 6\\)"),
        ([str(a), "--profile", "toy", "--suite", "toy"], "one of the two"),
        ([str(a)], "give the scoring as --profile"),
        ([f"x={a}", f"x={b}", "--profile", "toy"], "two sample sets are named 'x'"),
        ([f"bad/name={a}", "--profile", "toy"], "may only hold"),
    ):
        assert main(["score", *argv, "--out", str(tmp_path / "o")]) == 2
        assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_stored_runs_take_one_nfe(tmp_path, capsys):
    npz = _npz(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    suite = tmp_path / "s.yaml"
    head = f"name: s\nnum_samples: 4\nreference: {{path: {REFERENCE}}}\nmodels:\n  a: {{family: samples, path: {npz}}}\n"
    suite.write_text(head + "runs:\n  - {model: a, sampler: stored, nfe: [1, 2]}\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "o")]) == 2
    assert "runs[0].nfe: a stored sample set is one set of images" in capsys.readouterr().err
    suite.write_text(head + "runs:\n  - {model: a, sampler: heun, nfe: [3]}\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "o")]) == 2
    assert "samplers for samples: stored" in capsys.readouterr().err
    assert zipfile.is_zipfile(npz)
