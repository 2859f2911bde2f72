"""Editing rows through the suite and the command line: the toy editing suite, resume, and bad
input refused before anything is sampled."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cmbench.cli import main
from cmbench.results import read_rows
from cmbench.suite import load_suite
from cmbench.validate import ConfigError

SUITES = Path(__file__).resolve().parent.parent / "suites"
TOY_EDIT = SUITES / "toy_edit.yaml"
SMALL = ["editing.runs=[{model: cd, sampler: cm_multistep, nfe: [1, 2, 4], tasks: [box, sr2]}, "
         "{model: ctm, sampler: ctm_gamma, nfe: [1, 2, 4], tasks: [box, sr2]}]"]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def cmbench(*args: str, cwd: Path) -> Done:
    """``cmbench ARGS`` in this process (``cwd`` is not used: every path given is absolute)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Done(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> tuple[Path, Done]:
    folder = tmp_path_factory.mktemp("toy_edit")
    done = cmbench("run", str(TOY_EDIT), "--out", str(folder / "out"), *(f"--set={s}" for s in SMALL), cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "out", done


def test_psnr_rises_with_nfe_for_cd_and_ctm_on_inpainting_and_super_resolution(toy_run):
    out, _ = toy_run
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 12 and all(row["kind"] == "edit" and row["status"] == "ok" for row in rows)
    for model in ("cd", "ctm"):
        for task in ("box", "sr2"):
            psnr = [row["psnr"] for row in sorted(rows, key=lambda r: r["nfe"]) if (row["model"], row["task"]) == (model, task)]
            assert len(psnr) == 3 and psnr[0] < psnr[1] < psnr[2], (model, task, psnr)


def test_every_number_has_its_standard_error_and_the_known_part_is_kept(toy_run):
    out, done = toy_run
    for row in read_rows(out / "results.jsonl"):
        assert row["num_samples"] == 297 and row["task_kind"] in ("inpainting", "superres")
        for column in ("psnr", "ssim", "fid", "is_mean", "precision", "recall", "consistency_rms"):
            assert np.isfinite(row[column]) and np.isfinite(row[f"{column}_se"]), column
        assert row["psnr_se"] > 0 and row["fid_se"] > 0
        assert row["consistency_max"] < 1e-12
        assert row["conventions"]["ssim"]["window_used"] == 7  # 8×8 digits: the 11-tap window shrinks
        assert (out / row["grid"]).is_file() and (out / row["grid_truth"]).is_file()
        assert (out / row["grid_degraded"]).is_file()
    lines = [line for line in done.stdout.splitlines() if line.startswith(("box: ", "sr2: "))]
    assert len(lines) >= 12 and all("psnr" in line and " ± " in line for line in lines[:12])


def test_a_rerun_resumes_and_a_changed_task_is_refused_naming_it(toy_run, tmp_path):
    out, _ = toy_run
    again = cmbench("run", str(TOY_EDIT), "--out", str(out), *(f"--set={s}" for s in SMALL), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(read_rows(out / "results.jsonl")) == 12
    changed = cmbench("run", str(TOY_EDIT), "--out", str(out), *(f"--set={s}" for s in SMALL),
                      "--set=editing.tasks.box.size=0.25", cwd=tmp_path)
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    assert "box.cd.cm_multistep.nfe1" in changed.stderr and "editing" in changed.stderr


def _refused(tmp_path: Path, *overrides: str, suite: Path = TOY_EDIT) -> str:
    done = cmbench("run", str(suite), "--out", str(tmp_path / "out"), *(f"--set={s}" for s in overrides), cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before any row was made
    return done.stderr


def test_images_of_the_wrong_size_are_refused_before_sampling(tmp_path):
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((4, 16, 16, 1), dtype=np.uint8))
    message = _refused(tmp_path, f"editing.data={tmp_path / 'big.npz'}")
    assert "editing.data" in message and "16×16 images but models.cd makes 8×8" in message


def test_a_task_the_images_cannot_take_is_refused_before_sampling(tmp_path):
    message = _refused(tmp_path, "editing.tasks={colour: {task: colorization}}")
    assert "editing.tasks.colour: colorization needs RGB images (3 channels); these have 1" in message
    message = _refused(tmp_path, "editing.tasks={sr3: {task: superres, factor: 3}}")
    assert "editing.tasks.sr3: factor 3 does not divide 8×8 images" in message


def test_missing_lpips_weights_are_named_before_sampling(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    for size in (8, 32):
        np.savez(tmp_path / f"images{size}.npz", arr_0=np.zeros((4, size, size, 3), dtype=np.uint8))
    gmm = tmp_path / "gmm_edit.yaml"
    gmm.write_text(_GMM_EDIT.format(lpips=f"lpips: {{net: alex, weights: {tmp_path / 'empty'}}}", size=32))
    message = _refused(tmp_path, suite=gmm)
    assert "editing.lpips" in message and "alexnet-owt-7be5be79.pth" in message
    gmm.write_text(_GMM_EDIT.format(lpips="lpips: {net: alex}", size=8))
    message = _refused(tmp_path, suite=gmm)
    assert "editing.lpips" in message and "31" in message  # AlexNet's trunk needs 31×31 images or more


_GMM_EDIT = """
name: gmm_edit
num_samples: 4
batch_size: 4
features: {{extractor: pixels}}
metrics: [fid]
reference: {{model: mix, num_images: 8}}
models:
  mix: {{family: gmm, image_shape: [3, {size}, {size}], random: {{count: 2, seed: 0, mean_scale: 0.5, std: 0.2}}, ode_steps: 4}}
runs: []
editing:
  data: images{size}.npz
  {lpips}
  tasks: {{box: {{task: inpainting}}}}
  runs: [{{model: mix, sampler: cm_multistep, nfe: [1]}}]
"""


def test_the_analytic_mixture_edits_colour_images_through_the_suite(tmp_path):
    """Colorization (RGB) end to end: a suite of the mixture with data from an .npz; the luminance is kept."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "images8.npz", arr_0=images)
    suite = tmp_path / "gmm_edit.yaml"
    suite.write_text(_GMM_EDIT.format(lpips="", size=8).replace("{box: {task: inpainting}}", "{colorization: {}}"))
    done = cmbench("run", str(suite), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert row["task_kind"] == "colorization" and row["num_samples"] == 6 and row["consistency_max"] < 1e-12
    assert row["edit_data"].startswith(str(tmp_path / "images8.npz"))


@pytest.mark.parametrize("override,where,message", [
    ("editing.runs=[{model: cd, sampler: ddim, nfe: [1]}]", "editing.runs[0].sampler",
     "has no replacement step; editing samplers: heun, euler, cm_multistep, ctm_gamma"),
    ("editing.runs=[{model: cd, sampler: cm_multistep, nfe: [1], tasks: [nope]}]", "editing.runs[0].tasks[0]", "nope"),
    ("editing.tasks={blur: {task: deblur}}", "editing.tasks.blur.task", "unknown task 'deblur'"),
    ("editing.tasks={box: {task: inpainting, mask: box, missing: 0.2}}", "editing.tasks.box", "do nothing with mask: box"),
    ("editing.runs=[{model: cd, sampler: cm_multistep, nfe: [2], tasks: [denoise], "
     "options: {time_points: {2: [80, 1, 0.002]}}}]", "editing.runs[0].tasks", "starts its chain at its own σ"),
    ("editing.num_images=1", "editing.num_images", "an integer ≥ 2, got 1"),
])
def test_suite_errors_name_the_key(override, where, message):
    with pytest.raises(ConfigError) as caught:
        load_suite(TOY_EDIT, [override])
    assert where in str(caught.value) and message in str(caught.value)


def test_editing_rows_have_their_own_fingerprints_and_leave_generation_rows_alone():
    plain = load_suite(SUITES / "toy.yaml")
    with_edits = load_suite(SUITES / "toy.yaml", ["editing={data: 'toy:test', tasks: {sr2: {task: superres, factor: 2}}, "
                                                  "runs: [{model: cd, sampler: cm_multistep, nfe: [1]}]}"])
    assert [plain.row_fingerprint(row) for row in plain.rows] == [with_edits.row_fingerprint(row) for row in with_edits.rows]
    (edit,) = with_edits.editing.rows
    assert edit.row_id == "sr2.cd.cm_multistep.nfe1"
    other = load_suite(SUITES / "toy.yaml", ["editing={data: 'toy:test', tasks: {sr2: {task: superres, factor: 4}}, "
                                             "runs: [{model: cd, sampler: cm_multistep, nfe: [1]}]}"])
    assert with_edits.row_fingerprint(edit) != other.row_fingerprint(other.editing.rows[0])
