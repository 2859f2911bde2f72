"""Entry-point models: a suite names the user's own builder; its code and checkpoint are hashed into the rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cmbench.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "reference_stats" / "toy-digits-all.npz"
NETS = '''
import torch
from torch import nn


class TeamNet(nn.Module):
    """A team's own consistency network: called as net(x_in, noise_labels, class_labels)."""

    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(65, hidden), nn.SiLU(), nn.Linear(hidden, 64))

    def forward(self, x, noise_labels, class_labels=None):
        flat = torch.cat([x.flatten(1), noise_labels.reshape(-1, 1)], dim=1)
        return self.body(flat).reshape(x.shape)


def build(hidden=16):
    return TeamNet(hidden)
'''


def _write_suite(folder: Path, entry: str, extra: str = "") -> Path:
    suite = folder / "suite.yaml"
    suite.write_text(
        f"name: team\nnum_samples: 60\nbatch_size: 30\nprofile: toy\nreference: {{path: {REFERENCE}}}\n"
        f"models:\n  team: {{family: cd, entry_point: '{entry}', kwargs: {{hidden: 16}}, checkpoint: ckpt.pt,"
        f" image_shape: [1, 8, 8]{extra}}}\n"
        "runs:\n  - {model: team, sampler: cm_multistep, nfe: [1, 2]}\n")
    return suite


@pytest.fixture
def team(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    namespace: dict = {}
    exec(compile(NETS, "nets", "exec"), namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](16).state_dict(), tmp_path / "ckpt.pt")
    return tmp_path


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_entry_point_runs_and_a_changed_module_makes_rows_stale(team, capsys):
    suite = _write_suite(team, "nets.py:build")
    out = team / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert [r["row_id"] for r in rows] == ["team.cm_multistep.nfe1", "team.cm_multistep.nfe2"]
    assert all(r["model_source"] == "entry_point" and r["fid"] > 0 for r in rows)
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0  # unchanged: resumes, nothing recomputed
    assert _rows(out) == rows
    (team / "nets.py").write_text(NETS + "\n# a changed line\n")
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_entry_point_as_an_importable_module(team, monkeypatch):
    monkeypatch.syspath_prepend(str(team))
    monkeypatch.delitem(sys.modules, "nets", raising=False)
    suite = _write_suite(team, "nets:build")
    assert main(["run", str(suite), "--out", str(team / "out"), "--quiet"]) == 0
    file_run = _rows(team / "out")
    assert file_run[0]["checkpoint_sha256"] and file_run[0]["fid"] > 0


@pytest.mark.parametrize("source, entry, extra, message", [
    ("def build(:\n", "nets.py:build", "", "importing .*nets.py failed: SyntaxError"),
    (NETS, "nets.py:missing", "", "has no function 'missing'"),
    (NETS + "\nCONSTANT = 3\n", "nets.py:CONSTANT", "", "is a int, not a function"),
    (NETS + "\ndef other(hidden=16):\n    return 'a string'\n", "nets.py:other", "", "returned a str; expected a torch.nn.Module"),
    (NETS + "\ndef broken(hidden=16):\n    raise RuntimeError('no GPU here')\n", "nets.py:broken", "", "failed: RuntimeError: no GPU here"),
    (NETS, "absent.py:build", "", "absent.py does not exist"),
    (NETS, "not_a_module_xyz:build", "", "module 'not_a_module_xyz' is not importable"),
    (NETS, "nets.py:build", ", state_dict_key: ema", "has no entry 'ema'"),
    (NETS.replace("nn.Linear(hidden, 64)", "nn.Linear(hidden, 32)"), "nets.py:build", "",
     "state_dict does not fit its architecture; shape mismatches"),
])
def test_entry_point_errors_name_the_key(team, capsys, source, entry, extra, message):
    (team / "nets.py").write_text(source)
    suite = _write_suite(team, entry, extra)
    assert main(["run", str(suite), "--out", str(team / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    if "entry_point" in err or "state_dict_key" not in extra:
        assert "models.team" in err or "entry point" in err or "ckpt.pt" in err


def test_entry_point_suite_validation(team, capsys):
    suite = team / "bad.yaml"
    suite.write_text("name: t\nnum_samples: 4\nmodels:\n  m: {family: cd, entry_point: 'nets.py', image_shape: [1, 8, 8]}\n"
                     "runs:\n  - {model: m, sampler: cm_multistep, nfe: [1]}\n")
    assert main(["run", str(suite), "--out", str(team / "o")]) == 2
    assert "models.m.entry_point: expected 'file.py:function'" in capsys.readouterr().err
    suite.write_text("name: t\nnum_samples: 4\nmodels:\n  m: {family: generator, checkpoint: x.pt}\n"
                     "runs:\n  - {model: m, sampler: onestep, nfe: [1]}\n")
    assert main(["run", str(suite), "--out", str(team / "o")]) == 2
    assert "give entry_point" in capsys.readouterr().err
