"""Scale-out (issue 17): rows and tune jobs under torchrun, shard jobs and their merge, a killed rank.

The process tests start real gloo processes (``python -m torch.distributed.run``) and compare their
rows with one process's: every number equal, bit for bit (each rank makes whole batches of the
same batch grid, and the main rank scores the merged features as one process does).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmbench.cli import main
from cmbench.shards import ShardPart, ShardPiece, ShardStore, merge_pieces, missing, uncovered, work_units
from launch import clean_env, cmbench_process, torchrun

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reference_stats" / "toy-digits-all.npz"
VARYING = ("finished_at", "wall_seconds", "seconds_per_sample", "world_size", "shards_made", "gathered_bytes")
"""Row fields that say how and when a row was made, not what it is."""


# --- the shard layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples, batch_size", [(200, 50), (1000, 7), (50_000, 250), (3, 8)])
def test_work_units_are_runs_of_whole_batches_that_tile_the_row(num_samples, batch_size):
    units = work_units(num_samples, batch_size)
    assert len(units) <= 64 and units[0][0] == 0 and units[-1][1] == num_samples
    assert all(a < b and a % batch_size == 0 for a, b in units)
    assert all(units[i][1] == units[i + 1][0] for i in range(len(units) - 1))
    for count in (1, 2, 3, 7):
        parts = [unit for index in range(count) for unit in work_units(num_samples, batch_size, ShardPart(index, count))]
        assert sorted(parts) == sorted(set(parts)) and missing(num_samples, parts) == []
        assert all(a % batch_size == 0 and (b % batch_size == 0 or b == num_samples) for a, b in parts)


def test_uncovered_is_what_no_stored_piece_holds():
    units = [(0, 100), (100, 200), (200, 300)]
    assert uncovered(units, []) == units
    assert uncovered(units, [(0, 150)]) == [(150, 200), (200, 300)]
    assert uncovered(units, [(50, 100), (200, 300)]) == [(0, 50), (100, 200)]
    assert uncovered(units, [(0, 300)]) == []


def store_with(tmp_path, pieces) -> ShardStore:
    store = ShardStore(tmp_path, "row", "key")
    for first, stop in pieces:
        positions = np.arange(first, stop, dtype=np.float32)[:, None]
        store.put(ShardPiece(first, stop, {"row": {"pool": positions}}, nfe=2, seconds=1.0))
    return store


def test_overlapping_pieces_merge_in_position_order(tmp_path):
    """Shard jobs of different counts leave overlapping pieces; each position is taken once."""
    store = store_with(tmp_path, [(100, 200), (0, 100), (50, 150), (150, 300)])
    merged = merge_pieces(store, 300, "row")
    assert merged.features["row"]["pool"][:, 0].tolist() == list(range(300))
    assert merged.nfe == 2 and merged.images is None


def test_a_row_with_missing_pieces_is_not_merged(tmp_path):
    store = store_with(tmp_path, [(0, 100), (200, 300)])
    with pytest.raises(ValueError, match="positions 100–199"):
        merge_pieces(store, 300, "row")


def test_a_broken_shard_file_names_itself(tmp_path):
    store = store_with(tmp_path, [(0, 100)])
    path = next(store.folder.glob("*.npz"))
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{path.name}: cannot read this shard.*delete it"):
        merge_pieces(store, 100, "row")


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_a_bad_shard_option_is_refused(text, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["run", "toy", "--shard", text])
    assert exit_status.value.code == 2 and "argument --shard: " in capsys.readouterr().err


# --- torchrun and shard jobs against one process -----------------------------------------------------------


def write_suite(folder: Path) -> Path:
    """A toy suite with a tune job and a row that uses its schedule (4 batches per row)."""
    raw = {
        "name": "scale", "num_samples": 200, "batch_size": 50, "profile": "toy", "grid_images": 16,
        "reference": {"path": str(REFERENCE)}, "uncertainty": {"bootstrap": 10},
        "models": {"cd": {"family": "cd", "checkpoint": "zoo:toy/cd"}},
        "tune": {"cd": {"model": "cd", "sampler": "cm_multistep", "max_nfe": 2, "num_samples": 100, "karras_steps": 8}},
        "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1]},
                 {"model": "cd", "sampler": "cm_multistep", "name": "tuned", "nfe": [2], "schedule": "tuned:cd"}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "suite.yaml"


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["row_id"] for r in got] == [r["row_id"] for r in want]
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k not in VARYING} == {k: v for k, v in b.items() if k not in VARYING}
        assert a["fingerprint"] == b["fingerprint"] and a["fid"] == b["fid"] and a.get("fid_se") == b.get("fid_se")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, Path]:
    """The suite run by one process: (suite file, output folder)."""
    root = tmp_path_factory.mktemp("one")
    suite = write_suite(root)
    assert main(["run", str(suite), "--out", str(root / "out"), "--threads", "1", "--quiet"]) == 0
    return suite, root / "out"


AUDIT = '''
import os, sys
_watch, _log = os.environ.get("AUDIT_WATCH"), os.environ.get("AUDIT_LOG")
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _written(event, args):
    if not args or not isinstance(args[0], (str, os.PathLike)):  # a file descriptor: its open was seen
        return None
    if event == "open":
        mode, flags = args[1] or "", args[2] or 0
        return args[0] if any(c in mode for c in "wax+") or flags & _WRITES else None
    if event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        return args[0]
    return None


def _hook(event, args):
    path = _written(event, args)
    if path is not None and os.path.abspath(os.fspath(path)).startswith(_watch):
        with open(f"{_log}.{os.environ.get('RANK', 'none')}", "a") as f:
            f.write(f"{event} {path}\\n")


if _watch and _log:
    sys.addaudithook(_hook)
'''


def test_torchrun_rows_and_tuned_schedule_equal_one_process(one_process, tmp_path):
    """Two gloo ranks run the tune job and both rows: the same rows, fingerprints and schedule as one
    process, and only rank 0 wrote into the output folder (an audit hook records every write)."""
    suite, single = one_process
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(AUDIT)
    out = tmp_path / "two"
    env = clean_env(PYTHONPATH=str(tmp_path / "hook"), AUDIT_WATCH=str(out), AUDIT_LOG=str(tmp_path / "writes"))
    proc = torchrun(["run", str(suite), "--out", str(out), "--threads", "1", "--quiet"], tmp_path, env=env)
    same_rows(rows_of(out), rows_of(single))
    assert [r["world_size"] for r in rows_of(out)] == [2, 2]
    assert all(r["gathered_bytes"] > 0 for r in rows_of(out)) and all(r["gathered_bytes"] == 0 for r in rows_of(single))
    tuned = [json.loads((folder / "schedules" / "cd.json").read_text()) for folder in (out, single)]
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in document["trace"]] for document in tuned]
    assert tuned[0]["schedules"] == tuned[1]["schedules"] and untimed[0] == untimed[1]
    assert tuned[0]["validation"] == tuned[1]["validation"]
    assert (tmp_path / "writes.0").read_text().count("results.jsonl") >= 2  # the hook saw rank 0 write
    assert not (tmp_path / "writes.1").exists()
    assert not (out / "shards").exists()  # stored rows leave no shards behind
    assert proc.stdout.count("results:") == 1  # rank 0 alone prints


def test_shard_jobs_then_merge_equal_one_process(one_process, tmp_path, capsys):
    """Tune once, then shard jobs 0/3 and 1/3 side by side (separate processes); a merge names the
    positions still missing; shard 2/3, then the merge scores both rows as one process would."""
    suite, single = one_process
    out = tmp_path / "out"
    run = ["run", str(suite), "--out", str(out), "--threads", "1", "--quiet"]
    assert main([*run, "--shard", "0/3"]) == 2
    assert "tune.cd: no schedule" in capsys.readouterr().err
    assert main(["tune", str(suite), "--out", str(out), "--threads", "1", "--quiet"]) == 0
    jobs = [cmbench_process([*run, "--shard", f"{i}/3"], tmp_path) for i in (0, 1)]
    for job in jobs:
        assert job.wait(timeout=120) == 0, job.stderr.read()
    capsys.readouterr()
    assert main([*run, "--merge"]) == 2
    err = capsys.readouterr().err
    assert "2 row group(s) still miss shards" in err and "samples 100–199" in err  # shard 2/3 holds batches 2 and 3 of 4
    assert not (out / "results.jsonl").exists()
    last = cmbench_process([*run, "--shard", "2/3"], tmp_path)
    assert last.wait(timeout=120) == 0, last.stderr.read()
    assert main([*run, "--merge"]) == 0
    same_rows(rows_of(out), rows_of(single))
    assert [r["shards_made"] for r in rows_of(out)] == [0, 0]  # the merge sampled nothing
    assert not (out / "shards").exists()


# --- a rank killed mid-row -------------------------------------------------------------------------------------

NETS = '''
import os
import signal

import torch
from torch import nn


class Shrink(nn.Module):
    """f(x, sigma) = clamp(0.9 x); on rank 1 its KILL_AT-th call kills its own process (once: a marker file)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.9))
        self.calls = 0

    def forward(self, x, noise_labels, class_labels=None):
        self.calls += 1
        marker = os.environ.get("KILL_MARKER", "")
        if os.environ.get("RANK") == "1" and self.calls == int(os.environ["KILL_AT"]) and os.path.exists(marker):
            os.remove(marker)
            os.kill(os.getpid(), signal.SIGKILL)
        return (x * self.scale).clamp(-1, 1)


def build():
    return Shrink()
'''


def test_a_killed_rank_stops_the_job_and_the_rerun_keeps_every_finished_shard(tmp_path):
    """8 batches per row, 2 ranks: rank 1 makes units 1, 3, 5, 7 of each row, one model call per
    batch at NFE 1 and two at NFE 2. Killed at its 9th call (its third unit of the NFE-2 row), the
    job exits non-zero at once; the NFE-1 row and the NFE-2 row's first two rounds (4 units) are on
    disk, and the rerun (one process) makes the 4 other units only."""
    (tmp_path / "nets.py").write_text(NETS)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "kill", "num_samples": 400, "batch_size": 50, "profile": "toy", "reference": {"path": str(REFERENCE)},
        "uncertainty": {"bootstrap": 0},
        "models": {"net": {"family": "cd", "entry_point": "nets.py:build", "image_shape": [1, 8, 8],
                           "preconditioning": "none"}},
        "runs": [{"model": "net", "sampler": "cm_multistep", "nfe": [1, 2]}],
    }))
    args = ["run", str(suite), "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    out = tmp_path / "out"
    (tmp_path / "marker").touch()
    started = time.monotonic()
    proc = torchrun([*args, "--out", str(out)], tmp_path, check=False,
                    env=clean_env(KILL_MARKER=str(tmp_path / "marker"), KILL_AT="9"))
    assert proc.returncode != 0 and time.monotonic() - started < 120
    assert "rank      : 1" in proc.stderr and "Signal 9" in proc.stderr
    assert not (tmp_path / "marker").exists()  # it was rank 1's 9th call that stopped the job
    assert [r["row_id"] for r in rows_of(out)] == ["net.cm_multistep.nfe1"]
    pieces = sorted(path.name for path in out.glob("shards/net.cm_multistep.nfe2/*/*.npz"))
    assert pieces == [f"{a:09d}-{a + 50:09d}.npz" for a in range(0, 200, 50)]
    first_row = rows_of(out)[0]
    assert main([*args, "--out", str(out)]) == 0
    rows = rows_of(out)
    assert rows[0] == first_row and rows[1]["shards_made"] == 4
    same_rows(rows, rows_of(tmp_path / "one"))
