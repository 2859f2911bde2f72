"""Suites with a ``likelihood:`` block: bits/dim rows for score-access models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from cmbench.checkpoints import save_native
from cmbench.images import to_uint8
from cmbench.models import GaussianMixture, GaussianMixtureModel, NoiseRange
from cmbench.nets import build_network
from cmbench.nll import ExactProtocol, evaluate_nll
from cmbench.results import read_rows
from cmbench.runner import run_suite
from cmbench.suite import load_suite
from cmbench.validate import ConfigError

COMPONENTS = [{"mean": -0.4, "std": 0.2}, {"mean": 0.5, "std": 0.3}]


def write(tmp_path, likelihood, with_cd=False):
    mixture = GaussianMixture.create(torch.tensor([[-0.4] * 4, [0.5] * 4], dtype=torch.float64), [0.2, 0.3])
    g = torch.Generator().manual_seed(5)
    x = mixture.sample(torch.randint(0, 2, (10,), generator=g), torch.randn(10, 4, generator=g, dtype=torch.float64))
    np.savez(tmp_path / "data.npz", to_uint8(x.reshape(-1, 1, 2, 2)).permute(0, 2, 3, 1).numpy())
    models = {"mix": {"family": "gmm", "image_shape": [1, 2, 2], "sigma_min": 0.01, "components": COMPONENTS}}
    runs = [{"model": "mix", "sampler": "euler", "nfe": [1, 2]}]
    if with_cd:
        kwargs = {"img_resolution": 2, "img_channels": 1, "hidden": 8, "depth": 1, "emb_dim": 8}
        save_native(tmp_path / "cd.pt", build_network("toy_mlp", kwargs), arch="toy_mlp", arch_kwargs=kwargs,
                    family="cd", model_options={"image_shape": [1, 2, 2]})
        models["cd"] = {"family": "cd", "checkpoint": "cd.pt"}
        runs.append({"model": "cd", "sampler": "cm_multistep", "nfe": [1]})
    suite = {"name": "lik", "num_samples": 16, "metrics": ["fid"], "features": {"extractor": "pixels"},
             "reference": {"model": "mix", "num_images": 32}, "models": models, "runs": runs,
             "likelihood": likelihood}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_score_access_rows_get_bits_per_dim_and_others_none(tmp_path):
    spec = {"data": "data.npz", "passes": 2, "divergence": "exact", "seed": 3}
    suite = load_suite(write(tmp_path, spec, with_cd=True))
    run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    rows = {r["row_id"]: r for r in read_rows(tmp_path / "out" / "results.jsonl")}
    gmm_rows = [rows["mix.euler.nfe1"], rows["mix.euler.nfe2"]]
    assert all(math.isfinite(r["bpd"]) and r["bpd_stderr"] > 0 and r["bpd_nfe"] > 10 for r in gmm_rows)
    assert gmm_rows[0]["bpd"] == gmm_rows[1]["bpd"]  # a property of the model, not the sampler
    assert all(r["bpd_protocol"] == "exact" for r in gmm_rows)
    assert rows["cd.cm_multistep.nfe1"]["bpd"] is None and rows["cd.cm_multistep.nfe1"]["bpd_protocol"] is None
    # Honest number: the same computation done directly.
    model = GaussianMixtureModel(GaussianMixture.create(torch.tensor([[-0.4] * 4, [0.5] * 4], dtype=torch.float64), [0.2, 0.3]),
                                 (1, 2, 2), noise_range=NoiseRange(0.01, 80.0))
    images = torch.from_numpy(np.load(tmp_path / "data.npz")["arr_0"].transpose(0, 3, 1, 2).copy())
    direct = evaluate_nll(model, images, ExactProtocol(divergence="exact"), continuous=False, passes=2, batch_size=256,
                          seed=3, device=torch.device("cpu"), progress=False)
    assert gmm_rows[0]["bpd"] == pytest.approx(direct["bpd"], rel=1e-12)
    assert "NLL (bits/dim) [exact]" in (tmp_path / "out" / "report.html").read_text()


def test_changing_the_likelihood_data_is_a_changed_configuration(tmp_path):
    path = write(tmp_path, {"data": "data.npz", "divergence": "exact"})
    run_suite(load_suite(path), tmp_path / "out", device="cpu", progress=False)
    np.savez(tmp_path / "data.npz", np.zeros((4, 2, 2, 1), dtype=np.uint8))
    with pytest.raises(RuntimeError, match="different configuration"):
        run_suite(load_suite(path), tmp_path / "out", device="cpu", progress=False)


@pytest.mark.parametrize("spec, key", [
    ({"data": "data.npz", "divergence": "trace"}, "likelihood.divergence"),
    ({"data": "data.npz", "passes": 0}, "likelihood.passes"),
    ({"dataset": "data.npz"}, "likelihood.dataset"),
])
def test_likelihood_block_errors_name_the_key(tmp_path, spec, key):
    with pytest.raises(ConfigError) as err:
        load_suite(write(tmp_path, spec))
    assert key in str(err.value) and "suite.yaml" in str(err.value)
