"""The Python API (cmbench.evaluate / score / run / results) against the command line on the same weights."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import cmbench
from cmbench.checkpoints import save_native
from cmbench.cli import main
from cmbench.nets import build_network

REFERENCE = Path(__file__).resolve().parents[1] / "reference_stats" / "toy-digits-all.npz"
ARCH_KWARGS = {"img_resolution": 8, "img_channels": 1, "hidden": 32, "depth": 2, "emb_dim": 16, "s_embedding": False}
MODEL_OPTIONS = {"image_shape": [1, 8, 8], "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5}
SCORED = ["fid", "fid_se", "is_mean", "is_std", "precision", "recall", "precision_se", "recall_se"]


def user_network(seed: int = 0) -> nn.Module:
    """What a user's script does: build a small network (here cmbench's toy MLP, so the same weights
    can also be saved in the native format), train nothing."""
    torch.manual_seed(seed)
    net = build_network("toy_mlp", ARCH_KWARGS)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_evaluate_in_memory_equals_cmbench_run_of_the_saved_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = user_network()
    net.train()
    rows = cmbench.evaluate(
        cmbench.Model(net, family="cd", image_shape=(1, 8, 8)),
        {"cm_multistep": [1, 2]}, profile="toy", reference=REFERENCE, num_samples=120, batch_size=50,
    )
    assert list(rows["row_id"]) == ["model.cm_multistep.nfe1", "model.cm_multistep.nfe2"]
    assert set(rows["model_source"]) == {"memory"}
    assert net.training and all(p.requires_grad for p in net.parameters())  # given back as it was

    save_native(tmp_path / "model.pt", net, arch="toy_mlp", arch_kwargs=ARCH_KWARGS, family="cd",
                model_options=MODEL_OPTIONS)
    (tmp_path / "suite.yaml").write_text(
        f"name: api\nnum_samples: 120\nbatch_size: 50\nprofile: toy\nreference: {{path: {REFERENCE}}}\n"
        "models:\n  model: {family: cd, checkpoint: model.pt}\n"
        "runs:\n  - {model: model, sampler: cm_multistep, nfe: [1, 2]}\n")
    assert main(["run", str(tmp_path / "suite.yaml"), "--out", "cli", "--quiet"]) == 0
    native = cmbench.read_results("cli")
    assert list(native["row_id"]) == list(rows["row_id"])
    for column in SCORED + ["nfe", "schedule"]:
        assert list(rows[column]) == list(native[column]), column
    assert rows["fid"].notna().all() and (rows["fid"] > 0).all()


def test_in_memory_state_hash_follows_the_weights(tmp_path):
    net = user_network()
    kwargs = dict(profile="toy", reference=REFERENCE, num_samples=40, batch_size=40)
    first = cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8)), {"cm_multistep": [1]},
                             out=tmp_path / "run", **kwargs)
    with torch.no_grad():
        next(net.parameters()).add_(0.5)
    with pytest.raises(RuntimeError, match="different configuration"):  # same folder, changed weights: refused
        cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8)), {"cm_multistep": [1]},
                         out=tmp_path / "run", **kwargs)
    again = cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8)), {"cm_multistep": [1]}, **kwargs)
    assert first["checkpoint_sha256"][0] != again["checkpoint_sha256"][0]
    assert (tmp_path / "run" / "report.html").is_file()


class _Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.7))

    def forward(self, z, labels=None):
        return torch.tanh(self.scale * z)


def test_callables_generators_and_preconditioning_none():
    """A plain function as D(x, σ) (preconditioning none) and a one-step generator module."""
    denoiser = lambda x, sigma, labels: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)  # noqa: E731
    rows = cmbench.evaluate(
        {"fn": cmbench.Model(denoiser, family="edm", image_shape=(1, 8, 8), preconditioning="none"),
         "gen": cmbench.Model(_Generator(), family="generator", image_shape=(1, 8, 8))},
        [cmbench.Run("euler", [2], model="fn"), cmbench.Run("onestep", [1], model="gen")],
        profile="toy", reference=REFERENCE, num_samples=40, batch_size=40,
    )
    assert list(rows["row_id"]) == ["fn.euler.nfe2", "gen.onestep.nfe1"]
    assert rows["fid"].notna().all()
    assert pd.isna(rows["checkpoint_sha256"][0]) and isinstance(rows["checkpoint_sha256"][1], str)


def test_api_errors_name_what_is_wrong():
    net = user_network()
    with pytest.raises(ValueError, match="models.model.preconditioning"):
        cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8), preconditioning="edm"),
                         {"cm_multistep": [1]}, profile="toy", reference=REFERENCE, num_samples=40)
    with pytest.raises(ValueError, match="needs the 'denoise' map"):
        cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8)), {"heun": [3]},
                         profile="toy", reference=REFERENCE, num_samples=40)
    with pytest.raises(ValueError, match="returned shape"):
        cmbench.evaluate(cmbench.Model(lambda x, s, y: x[:, :, :4], family="cd", image_shape=(1, 8, 8),
                                       preconditioning="none"),
                         {"cm_multistep": [1]}, profile="toy", reference=REFERENCE, num_samples=40)


def test_readme_api_example_runs(monkeypatch, capsys):
    """The README's Python example, as written, from the repository root."""
    readme = (REFERENCE.parents[1] / "README.md").read_text()
    block = readme.split("<!-- api-example -->")[1].split("<!-- /api-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    monkeypatch.chdir(REFERENCE.parents[1])
    exec(compile(code, "README.md", "exec"), {})
    shown = capsys.readouterr().out
    assert "model.cm_multistep.nfe1" in shown and "model.cm_multistep.nfe2" in shown

