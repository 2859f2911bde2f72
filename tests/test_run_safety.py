"""Runs that cannot lie or collide: non-finite samples fail their row (and the gate), one writer per
output folder, names that stay inside it, strict YAML, and a memory check before sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cmbench.checkpoints import save_native
from cmbench.cli import main
from cmbench.finite import NonFiniteSamples, check_features, first_non_finite, non_finite_rows
from cmbench.memory import check_fits
from cmbench.names import inside, name_problem
from cmbench.nets import build_network
from cmbench.run_lock import FolderBusyError, output_folder_lock
from cmbench.seeds import seed_range
from cmbench.yaml_input import StrictYAMLError, load_yaml

NET_KWARGS = {"img_resolution": 8, "img_channels": 1, "model_channels": 8, "channel_mult": [1, 2]}


def gmm_model(shape=(1, 8, 8)) -> dict:
    return {"family": "gmm", "image_shape": list(shape), "random": {"count": 2, "seed": 0, "mean_scale": 0.7, "std": 0.15},
            "ode_steps": 8}


def save_edm(path: Path, *, nan: bool) -> str:
    torch.manual_seed(0)
    net = build_network("small_unet", NET_KWARGS)
    if nan:
        with torch.no_grad():
            next(net.parameters()).view(-1)[0] = float("nan")
    return save_native(path, net, arch="small_unet", arch_kwargs=NET_KWARGS, family="edm",
                       model_options={"image_shape": [1, 8, 8]}, overwrite=True)


def edm_suite(folder: Path, **changes) -> Path:
    raw = {"name": "safety", "num_samples": 16, "batch_size": 8, "metrics": ["fid"], "features": {"extractor": "pixels"},
           "reference": {"model": "ref", "num_images": 64}, "uncertainty": {"bootstrap": 0}, "grid_images": 4,
           "models": {"ref": gmm_model(), "edm": {"family": "edm", "checkpoint": "edm.pt"}},
           "runs": [{"model": "edm", "sampler": "heun", "nfe": [1, 3]}, {"model": "ref", "sampler": "euler", "nfe": [2]}],
           **changes}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "suite.yaml"


def rows_of(out: Path) -> dict[str, dict]:
    return {row["row_id"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def good_and_nan_runs(tmp_path_factory):
    """The same suite run once with finite weights (the baseline) and once with one NaN weight."""
    base = tmp_path_factory.mktemp("runs")
    outcomes = {}
    for name, nan in (("good", False), ("nan", True)):
        suite = edm_suite(base / name)
        save_edm(base / name / "edm.pt", nan=nan)
        outcomes[name] = main(["run", str(suite), "--out", str(base / name / "out"), "--quiet"])
    return base, outcomes


def test_a_nan_weight_fails_its_rows_with_the_first_bad_evaluation_named(good_and_nan_runs, capsys):
    base, outcomes = good_and_nan_runs
    assert outcomes == {"good": 0, "nan": 1}
    rows = rows_of(base / "nan" / "out")
    for row_id in ("edm.heun.nfe1", "edm.heun.nfe3"):
        row = rows[row_id]
        assert row["status"] == "failed" and row["fid"] is None
        assert "non-finite samples for seeds 0, 1, 2, 3, 4, … (8 of 8)" in row["error"]
        assert "output of model evaluation 1 (denoise at σ = 80)" in row["error"]
        assert "1 non-finite parameter value(s)" in row["error"]
    assert rows["ref.euler.nfe2"]["status"] == "ok" and rows["ref.euler.nfe2"]["fid"] > 0  # the others still run
    assert "failed: edm.heun.nfe1: non-finite samples" in (base / "nan" / "out" / "report.html").read_text()


def test_compare_of_a_failed_run_against_a_good_baseline_exits_1(good_and_nan_runs, capsys):
    base, _ = good_and_nan_runs
    for strict in ([], ["--strict"]):
        assert main(["compare", str(base / "nan" / "out"), str(base / "good" / "out"), *strict]) == 1
    assert main(["compare", str(base / "good" / "out"), str(base / "good" / "out")]) == 0


def test_a_failed_row_is_tried_again_on_rerun(tmp_path):
    suite = edm_suite(tmp_path, runs=[{"model": "edm", "sampler": "heun", "nfe": [1]}])
    save_edm(tmp_path / "edm.pt", nan=True)
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 1
    save_edm(tmp_path / "edm.pt", nan=False)  # the checkpoint is fixed: its hash (and fingerprint) changes
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--recompute-changed"]) == 0
    row = rows_of(out)["edm.heun.nfe1"]
    assert row["status"] == "ok" and row["fid"] > 0 and "error" not in row


def test_no_baseline_is_saved_from_a_run_with_failed_rows(tmp_path, capsys):
    suite = edm_suite(tmp_path, runs=[{"model": "edm", "sampler": "heun", "nfe": [1]}])
    save_edm(tmp_path / "edm.pt", nan=True)
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet", "--save-baseline",
                 str(tmp_path / "out" / "base.json")]) == 1
    assert not (tmp_path / "out" / "base.json").exists()
    assert "no baseline written: 1 row(s) failed" in capsys.readouterr().err


def test_first_non_finite_names_the_sampler_arithmetic_when_every_evaluation_was_finite():
    class Model:
        def denoise(self, x, sigma, labels=None):
            return x * 0

    def overflowing(model):
        model.denoise(torch.ones(2, 1), torch.ones(2))
        return torch.full((2, 1), float("inf"))

    assert "sampler's own arithmetic" in first_non_finite(overflowing, Model())

    def bad_input(model):
        model.denoise(torch.full((2, 1), float("nan")), torch.full((2,), 0.5))

    assert first_non_finite(bad_input, Model()) == ("the first non-finite value is in the sampler's input to "
                                                     "model evaluation 1 (denoise at σ = 0.5)")


def test_non_finite_features_are_refused_naming_the_extractor_and_seeds():
    assert non_finite_rows(torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [0.0, float("nan")]])) == [1, 2]
    with pytest.raises(NonFiniteSamples, match=r"the toy extractor's 'pool' features are non-finite for seed 11 \(1 of 2\)"):
        check_features({"pool": torch.tensor([[0.0], [float("nan")]])}, [10, 11], "row", "toy")


def test_a_second_run_on_a_busy_folder_fails_at_once_and_the_first_loses_nothing(tmp_path, capsys):
    suite = edm_suite(tmp_path, models={"ref": gmm_model()}, runs=[{"model": "ref", "sampler": "euler", "nfe": [1, 2]}])
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--set", "runs.0.nfe=[1]"]) == 0
    before = (out / "results.jsonl").read_text()
    with output_folder_lock(out):  # another process holds the folder
        assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 2
        assert (out / "results.jsonl").read_text() == before
    err = capsys.readouterr().err
    assert f"output folder {out} is in use by cmbench pid" in err and "--wait" in err
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0  # released: the run resumes
    assert set(rows_of(out)) == {"ref.euler.nfe1", "ref.euler.nfe2"}


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    code = (f"import os; from cmbench.run_lock import output_folder_lock\n"
            f"with output_folder_lock({str(tmp_path)!r}): os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with output_folder_lock(tmp_path):
        pass
    with output_folder_lock(tmp_path), pytest.raises(FolderBusyError):
        with output_folder_lock(tmp_path):
            pass


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "-rf", "/abs", "a b", "x" * 101, ""])
def test_unsafe_names_are_refused(name):
    assert name_problem(name)


@pytest.mark.parametrize("name", ["toy", "cm_imagenet64", "ctm_g0", "edm.heun", "γ", "cd-l2+ema", "_x"])
def test_ordinary_names_are_accepted(name):
    assert name_problem(name) is None


def test_paths_built_from_names_stay_inside_the_output_folder(tmp_path):
    assert inside(tmp_path, "grids/a.png") == tmp_path / "grids/a.png"
    for escape in ("../x.png", "grids/../../x.png", "/etc/x"):
        with pytest.raises(ValueError, match="outside the output folder"):
            inside(tmp_path, escape)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError, match="outside the output folder"):
        inside(tmp_path, "link/x.png")


def test_yaml_aliases_and_duplicate_keys_are_refused_with_their_line():
    assert load_yaml("a: 1\nb: {c: [1, 2]}\n") == {"a": 1, "b": {"c": [1, 2]}}
    with pytest.raises(StrictYAMLError, match=r"line 3: key 'a' is given twice in one mapping \(first on line 1\)"):
        load_yaml("a: 1\nb: 2\na: 3\n")
    with pytest.raises(StrictYAMLError, match=r"line 2, column 4: alias \*x is not accepted"):
        load_yaml("a: &x [1, 2]\nb: *x\n")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    with pytest.raises(StrictYAMLError, match="alias"):
        load_yaml(laughs)


def test_sizes_that_cannot_fit_are_refused_before_sampling():
    check_fits("num_samples", 1000, 8192, available=1 << 30)
    with pytest.raises(ValueError, match=r"num_samples = 1,000,000 images would need about 15.3 GiB .* 1.0 GiB available"):
        check_fits("num_samples", 1_000_000, 8192, available=1 << 30)


def test_seeds_are_a_range_not_a_list():
    seeds = seed_range(5, 10**15)
    assert isinstance(seeds, range) and seeds[0] == 5 and seeds[-1] == 5 + 10**15 - 1 and len(seeds[:3]) == 3


def test_a_failed_row_is_one_warning_line_and_marked_in_the_summary(tmp_path, capsys):
    suite = edm_suite(tmp_path, runs=[{"model": "edm", "sampler": "heun", "nfe": [1]}, {"model": "ref", "sampler": "euler", "nfe": [2]}])
    save_edm(tmp_path / "edm.pt", nan=True)
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    out, err = capsys.readouterr()
    warning, summary = err.splitlines()
    assert warning.startswith("cmbench: warning: row edm.heun.nfe1 failed: non-finite samples for seeds 0, 1, 2")
    assert summary == "cmbench: 1 row(s) failed: edm.heun.nfe1 (their errors are in results.jsonl and the report)"
    assert [line.split()[:4] for line in out.split("\n\n")[0].splitlines()] == [["ref", "euler", "NFE", "2"]]
    table = out.split("\n\n")[1].splitlines()
    assert table[1].split()[:5] == ["edm", "heun", "1", "failed:", "non-finite"] and table[2].split()[:2] == ["ref", "euler"]
