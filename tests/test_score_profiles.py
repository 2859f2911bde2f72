"""`cmbench score` under the Inception profiles, on random Inception weights standing in for the official file:
the README's ADM-evaluator one-liner, and a reference per profile when profiles read different formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmbench.cli import main
from cmbench.features.inception import InceptionExtractor
from cmbench.metrics.fid import feature_statistics

README = Path(__file__).resolve().parents[1] / "README.md"


def _images(seed: int, count: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8)


def _adm_reference(folder: Path, weights: Path) -> Path:
    """An ADM reference batch: arr_0 images and their pool / spatial statistics."""
    images = _images(1)
    features = InceptionExtractor(weights).extract(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                                   ["pool", "spatial"])
    (mu, sigma), (mu_s, sigma_s) = (feature_statistics(features[k].numpy()) for k in ("pool", "spatial"))
    path = folder / "VIRTUAL_imagenet64_labeled.npz"
    np.savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return path


def test_readme_adm_one_liner(official_inception, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez("samples_50000x64x64x3.npz", arr_0=_images(0))  # the README's file name, 6 images
    _adm_reference(tmp_path, official_inception)
    line = next(l for l in README.read_text().splitlines() if l.startswith("cmbench score samples_50000x64x64x3.npz"))
    # each bootstrap resample costs two 2048-d sqrtm: minutes on a CPU, so none here
    assert main([*line.split()[1:], "--quiet", "--set", "uncertainty.bootstrap=0"]) == 0
    row = json.loads(Path("reports/score/results.jsonl").read_text().splitlines()[0])
    assert row["profile"] == "adm" and row["quantisation"] == "truncate"
    for column in ("fid", "sfid", "is_mean", "precision", "recall"):
        assert np.isfinite(row[column]), column



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
