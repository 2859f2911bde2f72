"""`cmbench score` under several Inception profiles: a reference per profile when profiles read different formats.

The README's ADM-evaluator one-liner is run, with every other README command, by tests/test_readme.py."""

from __future__ import annotations

import numpy as np
import pytest


def _images(seed: int, count: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8)


def test_each_profile_takes_its_own_reference(tmp_path):
    """Profiles that read different reference formats get one file each (PROFILE=FILE)."""
    from cmbench.sample_sets import score_suite

    np.savez(tmp_path / "s.npz", arr_0=_images(0))
    for name in ("adm.npz", "edm.npz"):
        (tmp_path / name).write_bytes(b"")
    suite = score_suite([str(tmp_path / "s.npz")], profiles=["adm", "edm"],
                        reference=[f"adm={tmp_path / 'adm.npz'}", f"edm={tmp_path / 'edm.npz'}"])
    assert {p: suite.scorings[p]["reference"]["path"] for p in ("adm", "edm")} == {
        "adm": str(tmp_path / "adm.npz"), "edm": str(tmp_path / "edm.npz")}
    with pytest.raises(ValueError, match="'clean-fid' is not one of the profiles given"):
        score_suite([str(tmp_path / "s.npz")], profiles=["adm"], reference=[f"clean-fid={tmp_path / 'edm.npz'}"])
