"""``cmbench nll`` end to end on the analytic mixture and the toy zoo."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from cmbench.cli import main
from cmbench.images import to_uint8
from cmbench.models import GaussianMixture

SUITE = {
    "name": "nll", "num_samples": 8, "metrics": ["fid"], "features": {"extractor": "pixels"},
    "reference": {"model": "mix", "num_images": 16},
    "models": {"mix": {"family": "gmm", "image_shape": [1, 2, 2], "sigma_min": 0.01,
                       "components": [{"mean": -0.4, "std": 0.2}, {"mean": 0.5, "std": 0.3, "weight": 2}]},
               "cd": {"family": "cd", "checkpoint": "cd.pt"}},
    "runs": [{"model": "mix", "sampler": "euler", "nfe": [1]}],
}


@pytest.fixture
def suite_path(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def mixture_points(n=12):
    mixture = GaussianMixture.create(torch.tensor([[-0.4] * 4, [0.5] * 4], dtype=torch.float64), [0.2, 0.3], [1, 2])
    g = torch.Generator().manual_seed(3)
    comps = torch.multinomial(mixture.weights, n, replacement=True, generator=g)
    return mixture, mixture.sample(comps, torch.randn(n, 4, generator=g, dtype=torch.float64))


def test_continuous_nats_per_dim_match_the_exact_density(suite_path, tmp_path, capsys):
    mixture, x = mixture_points()
    np.savez(tmp_path / "x.npz", x.reshape(-1, 1, 2, 2).permute(0, 2, 3, 1).numpy())
    out = tmp_path / "nll.json"
    assert main(["nll", str(suite_path), "--model", "mix", "--data", str(tmp_path / "x.npz"),
                 "--continuous", "--divergence", "exact", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    exact = mixture.log_prob(x, torch.full((len(x),), 0.01, dtype=torch.float64)) / 4
    assert result["nats_per_dim"] == pytest.approx(float(exact.mean()), abs=0.01)
    assert result["num_images"] == 12 and result["nfe_mean"] > 10 and result["stderr"] > 0
    assert result["protocol"] == "exact" and result["divergence"] == "exact" and result["rtol"] == 1e-5
    assert json.loads(capsys.readouterr().out)["nats_per_dim"] == result["nats_per_dim"]
    assert main(["nll", str(suite_path), "--model", "mix", "--data", str(tmp_path / "x.npz"),
                 "--continuous", "--out", str(out), "--quiet"]) == 2  # no silent overwrite


def test_uint8_data_gives_bits_per_dim_averaged_over_passes(suite_path, tmp_path):
    _, x = mixture_points()
    images = to_uint8(x.reshape(-1, 1, 2, 2)).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "u.npz", images)
    out = tmp_path / "bpd.json"
    assert main(["nll", str(suite_path), "--model", "mix", "--data", str(tmp_path / "u.npz"), "--passes", "3",
                 "--divergence", "exact", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["passes"] == 3 and result["num_images"] == 12
    assert math.isfinite(result["bpd"]) and 0 < result["bpd"] < 16


def test_bad_inputs_exit_2_with_the_reason(suite_path, tmp_path, capsys):
    np.savez(tmp_path / "f.npz", np.zeros((2, 2, 2, 1), dtype=np.float32))
    assert main(["nll", str(suite_path), "--model", "mix", "--data", str(tmp_path / "f.npz"), "--quiet"]) == 2
    assert "--continuous" in capsys.readouterr().err
    assert main(["nll", str(suite_path), "--model", "nope", "--data", "toy:test", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "has no model 'nope'; it has:" in err and "mix" in err and "cd" in err


def test_cd_has_no_likelihood(tmp_path, capsys):
    """The shipped toy CD: refused with the families that do have score access."""
    assert main(["nll", "toy", "--model", "cd", "--data", "toy:test", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cd models have no 'denoise' map" in err and "EDM, CTM, PD teachers" in err


def test_toy_edm_on_the_test_split_runs(capsys):
    assert main(["nll", "toy", "--model", "edm", "--data", "toy:test", "--limit", "8", "--passes", "1", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["family"] == "edm" and result["num_images"] == 8 and math.isfinite(result["bpd"])
