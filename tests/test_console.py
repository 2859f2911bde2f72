"""What cmbench shows: progress bars only on a terminal, one result line per row and a summary
table on stdout, messages through logging, Ctrl-C and closed pipes, --version and a light --help."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cmbench
from cmbench import row_features, runner
from cmbench.cli import main
from cmbench.console import progress_bar, progress_enabled
from cmbench.report.tables import column_formats, present_metric_columns
from cmbench.result_text import per_sample_text, row_line, summary_table

from test_cli import IDS, rows, tiny_raw, write_suite

REPO = Path(__file__).resolve().parents[1]
CMBENCH = [sys.executable, "-m", "cmbench"]


def environment(**changes) -> dict[str, str]:
    """The environment of a cmbench subprocess: one thread, block-buffered output as for a user
    (unless ``PYTHONUNBUFFERED`` is given)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, "OMP_NUM_THREADS": "1", **changes}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- progress bars ---------------------------------------------------------------------------------


def test_progress_bars_are_drawn_when_asked_or_on_a_terminal():
    assert progress_enabled(True, io.StringIO()) and not progress_enabled(False, _Terminal())
    assert progress_enabled(None, _Terminal()) and not progress_enabled(None, io.StringIO())


def test_a_progress_bar_off_a_terminal_draws_nothing(capsys):
    assert list(progress_bar(range(3), progress=None, desc="x")) == [0, 1, 2]
    assert list(progress_bar(range(3), progress=True, desc="forced")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "forced" in err and "x:" not in err


def test_every_progress_bar_comes_from_the_one_helper():
    users = [path.relative_to(REPO).as_posix() for path in (REPO / "cmbench").rglob("*.py")
             if "tqdm" in path.read_text() and path.name != "console.py"]
    assert users == []


# --- numbers as text -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, se, text", [
    (5.3045, 0.1512, "5.30 ± 0.15"),
    (1227.0117, 1.5802, "1227.0 ± 1.6"),
    (0.9705, 0.0025827, "0.9705 ± 0.0026"),
    (736.47, 12.3, "736 ± 12"),
    (9.63181, None, "9.63"),  # no standard error: the report's default decimals for the column
    (None, 0.1, None),
])
def test_a_value_is_shown_to_the_precision_of_its_standard_error(value, se, text):
    row = {"model": "m", "sampler": "s", "nfe": 1, "fid": value, "fid_se": se}
    assert row_line(row).partition("fid ")[2].strip() == (text or "") and ("fid" in row_line(row)) == bool(text)


@pytest.mark.parametrize("seconds, text", [(4.316e-05, "0.0432 ms/sample"), (0.001, "1.00 ms/sample"),
                                           (1.5, "1500 ms/sample"), (None, None)])
def test_time_per_sample_is_milliseconds_to_three_digits(seconds, text):
    assert per_sample_text(seconds) == text


ROW = {"row_id": "edm.heun.nfe35", "model": "edm", "sampler": "heun", "sampler_label": "heun", "nfe": 35,
       "fid": 5.3045, "fid_se": 0.1512, "is_mean": 9.6318, "is_mean_se": 0.045, "is_std": 0.13,
       "precision": None, "seconds_per_sample": 0.000941, "status": "ok"}


def test_a_row_line_names_model_sampler_nfe_and_each_metric():
    assert row_line(ROW) == "edm  heun  NFE 35   fid 5.30 ± 0.15  is_mean 9.632 ± 0.045  0.941 ms/sample"
    failed = {**ROW, "status": "failed", "error": "non-finite samples"}
    assert row_line(failed) == "edm.heun.nfe35: failed: non-finite samples"


def test_the_summary_table_lines_up_its_columns_and_writes_cells_as_the_report_does():
    other = {**ROW, "model": "cd", "sampler_label": "cm_multistep", "nfe": 1, "fid": 19.1, "fid_se": 1.83,
             "is_mean": 8.86, "is_mean_se": None, "seconds_per_sample": 3.76e-05}
    failed = {**ROW, "model": "ct", "nfe": 2, "status": "failed", "error": "non-finite samples\nmore"}
    lines = summary_table([ROW, other, failed]).splitlines()
    assert lines[0].split() == ["model", "sampler", "NFE", "fid", "is_mean", "ms/sample"]
    assert lines[1].split() == ["edm", "heun", "35", "5.30", "±", "0.15", "9.632", "±", "0.045", "0.941"]
    assert lines[2].split() == ["cd", "cm_multistep", "1", "19.10", "±", "1.83", "8.860", "0.0376"]
    assert lines[3].split() == ["ct", "heun", "2", "failed:", "non-finite", "samples"]
    assert lines[1].index("±") == lines[2].index("±")  # the ± of a column lines up
    assert lines[1].index("35") == lines[2].index(" 1 ")  # NFE right-aligned
    for fmt in column_formats([ROW, other], present_metric_columns([ROW, other])):  # the report's cells
        assert fmt.cell_text(other).replace(" ", "") in lines[2].replace(" ", "")


# --- the command line's output -----------------------------------------------------------------------


def run_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("mix ") and "NFE" in line]


def test_a_run_prints_a_line_per_row_and_a_summary_even_when_quiet(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # no bars, no messages
    lines = run_lines(printed.out)
    assert len(lines) == 2 and all("fid" in line and "±" in line and "ms/sample" in line for line in lines)
    table = printed.out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["model", "sampler", "NFE", "fid", "is_mean", "ms/sample"]
    assert [line.split()[:3] for line in table[1:]] == [["mix", "heun", "3"], ["mix", "cm_multistep", "1"]]
    assert f"results: {tmp_path / 'out' / 'results.jsonl'}" in printed.out

    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--set", "runs.0.nfe=[3,5]"]) == 0
    printed = capsys.readouterr()
    assert [line.split()[:4] for line in run_lines(printed.out)] == [["mix", "heun", "NFE", "5"]]  # the new row
    assert "NFE" in printed.out.split("\n\n")[1] and len(printed.out.split("\n\n")[1].splitlines()) == 4  # all rows
    assert printed.err == f"2 of 3 rows already in {tmp_path / 'out' / 'results.jsonl'}; 1 to run\n"  # a message


def test_progress_forces_bars_and_otherwise_none_off_a_terminal(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    assert main(["run", str(suite), "--out", str(tmp_path / "a"), "--set", "num_samples=32"]) == 0
    assert "\r" not in capsys.readouterr().err
    assert main(["run", str(suite), "--out", str(tmp_path / "b"), "--set", "num_samples=32", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "mix.heun.nfe3:" in err
    with pytest.raises(SystemExit):
        main(["run", str(suite), "--quiet", "--progress"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_run_with_output_to_files_has_no_carriage_returns(tmp_path):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        code = subprocess.call([*CMBENCH, "run", str(suite), "--out", str(tmp_path / "out")], stdout=stdout,
                               stderr=stderr, env=environment(), cwd=tmp_path)
    assert code == 0
    assert (tmp_path / "stderr").read_text() == ""
    out = (tmp_path / "stdout").read_text()
    assert "\r" not in out and len(run_lines(out)) == 2 and "model  sampler" in out


# --- the Python API: logging, not printing --------------------------------------------------------------


def test_the_library_prints_nothing_and_logs_through_logging(tmp_path, capsys, caplog):
    from test_api import REFERENCE, user_network

    caplog.set_level(logging.INFO, logger="cmbench")
    model = cmbench.Model(user_network(), family="cd", image_shape=(1, 8, 8))
    kwargs = dict(profile="toy", reference=REFERENCE, num_samples=40, batch_size=40, out=tmp_path / "run")
    cmbench.evaluate(model, {"cm_multistep": [1]}, **kwargs)
    cmbench.evaluate(model, {"cm_multistep": [1]}, **kwargs)  # resumed: says so in the log
    assert capsys.readouterr() == ("", "")
    assert [(r.name, r.levelname) for r in caplog.records] == [("cmbench.runner", "INFO")]
    assert "1 of 1 rows already in" in caplog.records[0].getMessage()


# --- a refused resume names what changed ---------------------------------------------------------------


def test_a_refused_resume_names_the_changed_settings(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    stored = rows(out)
    assert all(row["config"]["num_samples"] == 64 for row in stored)
    assert "config" not in (out / "results.csv").read_text().splitlines()[0].split(",")
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--set", "num_samples=32",
                 "--set", "metric_options.is_splits=4"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.jsonl'}: row {IDS[0]} (and 1 other row(s)) was computed with a different configuration" in err
    assert "(metric_options.is_splits: 2 → 4; num_samples: 64 → 32)" in err and "--recompute-changed" in err

    (out / "results.jsonl").write_text("".join(json.dumps({k: v for k, v in row.items() if k != "config"}) + "\n"
                                               for row in stored))  # rows of a cmbench before `config`
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--set", "num_samples=32"]) == 2
    assert "(rows written by an older cmbench: the changed setting can't be named)" in capsys.readouterr().err


def test_a_changed_file_is_named_by_its_digests(tmp_path):
    from cmbench.results import config_changes

    old = {"files": {"edm": "a" * 64, "reference": None}, "num_samples": 2000, "options": {"gamma": 0.0}}
    new = {"files": {"edm": "b" * 64, "reference": None}, "num_samples": 2000, "options": {}}
    assert config_changes(old, new) == [f"files.edm: sha256 {'a' * 12}… → sha256 {'b' * 12}…",
                                        "options: (not set) → {}", "options.gamma: 0.0 → (not set)"]


# --- Ctrl-C ---------------------------------------------------------------------------------------------


def test_ctrl_c_keeps_finished_rows_drops_the_row_in_progress_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    real = row_features.generate_views
    rows_seen = []

    def interrupt_second_row(*args, save, desc, **kwargs):
        rows_seen.append(desc) if desc not in rows_seen else None
        if len(rows_seen) == 1:
            return real(*args, save=save, desc=desc, **kwargs)

        def save_then_interrupt(*batch):
            save(*batch)  # the row's images are half kept
            raise KeyboardInterrupt

        return real(*args, save=save_then_interrupt, desc=desc, **kwargs)

    monkeypatch.setattr(row_features, "generate_views", interrupt_second_row)
    argv = ["run", str(suite), "--out", str(out), "--save-samples", "npz,png"]
    assert main(argv) == 130
    printed = capsys.readouterr()
    assert printed.err == (f"cmbench: interrupted; 1 finished row(s) are kept in {out / 'results.jsonl'}, and the "
                           "finished shards of the row in progress. To resume, run the same command again: "
                           f"{shlex.join(['cmbench', *argv])}\n")
    assert len(run_lines(printed.out)) == 1 and "results:" not in printed.out
    assert [row["row_id"] for row in rows(out)] == IDS[:1]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [IDS[0], f"{IDS[0]}.npz"]  # nothing partial
    assert sorted(p.name for p in (out / "grids").iterdir()) == [f"{IDS[0]}.png"]

    monkeypatch.undo()
    assert main(argv) == 0  # resumes: only the dropped row is computed
    assert [line.split()[1] for line in run_lines(capsys.readouterr().out)] == ["cm_multistep"]
    assert [row["row_id"] for row in rows(out)] == IDS


def test_ctrl_c_on_a_real_run(tmp_path):
    """SIGINT to a running `cmbench run` once its first row is printed: exit 130, one line, no traceback."""
    raw = tiny_raw()
    raw["models"]["slow"] = {**copy.deepcopy(raw["models"]["mix"]), "ode_steps": 10_000_000}  # never finishes its row
    raw["runs"] = [{"model": "mix", "sampler": "heun", "nfe": [3]}, {"model": "slow", "sampler": "cm_multistep", "nfe": [1]}]
    suite = write_suite(tmp_path / "suite", raw)
    process = subprocess.Popen([*CMBENCH, "run", str(suite), "--out", "out"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment(), cwd=tmp_path)
    try:
        first = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert first.startswith("mix   heun") and "±" in first
    assert process.returncode == 130 and rest == ""
    assert err == (f"cmbench: interrupted; 1 finished row(s) are kept in {Path('out') / 'results.jsonl'}, and the "
                   "finished shards of the row in progress. To resume, run the same command again: "
                   f"{shlex.join(['cmbench', 'run', str(suite), '--out', 'out'])}\n")
    assert [row["row_id"] for row in rows(tmp_path / "out")] == ["mix.heun.nfe3"]


# --- a reader that leaves: `cmbench ... | head` ------------------------------------------------------------


@pytest.mark.parametrize("argv, unbuffered", [(["--help"], False), (["--help"], True),
                                               (["stats", "info", "reference_stats/toy-digits-all.npz"], False)])
def test_a_closed_pipe_ends_the_command_silently(argv, unbuffered):
    env = environment(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    process = subprocess.Popen([*CMBENCH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    process.stdout.close()  # the reader is gone before the first line is written
    err = process.stderr.read()
    assert (process.wait(), err) == (0, b"")


# --- --version and a light --help --------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"cmbench {cmbench.__version__}\n"


def test_help_and_version_import_no_heavy_module():
    code = ("import sys\nfrom cmbench.cli import main\n"
            "for argv in (['--help'], ['run', '--help'], ['stats', 'compute', '--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print([m for m in ('torch', 'numpy', 'scipy', 'pandas', 'matplotlib', 'yaml', 'tqdm') if m in sys.modules],"
            " file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment(), timeout=60)
    assert result.stderr == "[]\n"
    assert "usage: cmbench" in result.stdout and "--progress" in result.stdout
