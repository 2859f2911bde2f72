"""The shared atomic writer: old file or new file, never half, and no silent overwrite."""

from __future__ import annotations

import os

import pytest

from cmbench import atomic
from cmbench.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(tmp_path) == ["out.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_failure_in_writer_keeps_old_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    def broken(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    def failing_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_no_overwrite_refuses_existing_file(tmp_path):
    target = tmp_path / "keep.bin"
    atomic_write_bytes(target, b"precious", overwrite=False)
    with pytest.raises(FileExistsError, match="keep.bin"):
        atomic_write_bytes(target, b"other", overwrite=False)
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["keep.bin"]
