"""CPU threads: the ``threads`` suite key, ``--threads`` on every command, auto's choice, run.json."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from cmbench import threads
from cmbench.cli import build_parser, main
from cmbench.suite import parse_suite
from cmbench.threads import choose_threads, parse_threads, process_threads, using_threads
from cmbench.validate import ConfigError

from test_cli import rows, tiny_raw, write_suite


@pytest.mark.parametrize("text, value", [("auto", "auto"), ("AUTO", "auto"), ("1", 1), (" 16 ", 16), (3, 3)])
def test_parse_threads_accepts_auto_and_positive_integers(text, value):
    assert parse_threads(text) == value


@pytest.mark.parametrize("text", ["0", "-2", "1.5", "all", "", "true"])
def test_parse_threads_refuses_anything_else(text):
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        parse_threads(text)


def test_a_number_is_taken_as_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    choice = choose_threads(3)
    assert (choice.count, choice.setting, choice.idle_cores) == (3, "3", None)


def test_auto_respects_omp_num_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.setattr(threads, "idle_cores", lambda: pytest.fail("no probe when the user chose"))
    assert (choose_threads("auto").count, choose_threads(None).setting) == (5, "OMP_NUM_THREADS")


@pytest.mark.parametrize("idle, cores, expected", [(0.0, 2, 1), (0.4, 2, 1), (1.6, 2, 2), (7.8, 8, 8),
                                                   (30.0, 8, 8), (3.2, 16, 3), (None, 4, 4)])
def test_auto_takes_the_idle_cores_at_least_one_at_most_usable(monkeypatch, idle, cores, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "idle_cores", lambda: idle)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    choice = choose_threads("auto")
    assert (choice.count, choice.setting, choice.cores) == (expected, "auto", cores)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="measures /proc/stat (Linux)")
def test_idle_cores_is_a_measurement_within_the_machine():
    idle = threads.idle_cores(0.05)
    assert idle is not None and 0.0 <= idle <= os.cpu_count() + 1e-9


def test_using_threads_sets_and_restores_torch_threads():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with using_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before


def test_process_threads_sets_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with process_threads(1):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
        assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ


def test_suite_key_threads(tmp_path):
    assert parse_suite(tiny_raw(), "s.yaml", tmp_path).threads == "auto"
    assert parse_suite({**tiny_raw(), "threads": 2}, "s.yaml", tmp_path).threads == 2
    with pytest.raises(ConfigError, match=r"threads.*positive integer or 'auto', not 0"):
        parse_suite({**tiny_raw(), "threads": 0}, "s.yaml", tmp_path)


def _leaf_parsers(parser: argparse.ArgumentParser, path=()):
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not commands:
        yield path, parser
    for action in commands:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def test_every_command_takes_threads():
    leaves = dict(_leaf_parsers(build_parser()))
    assert {("run",), ("score",), ("tune",), ("nll",), ("compare",), ("report",), ("zoo", "list")} <= set(leaves)
    for path, parser in leaves.items():
        assert "--threads" in parser._option_string_actions, " ".join(path)


def test_threads_option_reaches_run_json(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "suite", tiny_raw())
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet", "--set", "num_samples=16", "--threads", "1"]) == 0
    assert json.loads((out / "run.json").read_text())["threads"] == {
        "count": 1, "setting": "1", "cores": threads.usable_cores(), "idle_cores": None}
    assert rows(out)


def test_bad_threads_option_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "toy", "--out", str(tmp_path / "out"), "--threads", "many"])
    assert exit_info.value.code == 2
    assert "--threads: threads must be a positive integer or 'auto', not 'many'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
