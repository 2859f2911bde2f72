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
        suite={"threads": 1},  # float32 sums follow the thread count: compare like with like
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
    assert main(["run", str(tmp_path / "suite.yaml"), "--out", "cli", "--quiet", "--threads", "1"]) == 0
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


# --- a hostile user: odd networks, wrong arguments --------------------------------------------------

KW = dict(profile="toy", reference=REFERENCE, num_samples=40, batch_size=40)


class _DropoutNet(nn.Module):
    """A consistency network with dropout and a frozen BatchNorm, recording what each call saw."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(65, 64)
        self.drop = nn.Dropout(0.5)
        self.frozen = nn.BatchNorm1d(64)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x, noise_labels, class_labels=None):
        self.seen.append((self.drop.training or self.frozen.training, x.dtype))
        flat = torch.cat([x.flatten(1), noise_labels.reshape(-1, 1)], dim=1)
        return self.frozen(self.drop(self.body(flat))).reshape(x.shape)


def _raised_in_cmbench(info: pytest.ExceptionInfo) -> bool:
    """The exception comes from cmbench's own checks, not from deep inside torch."""
    return "cmbench" in str(info.traceback[-1].path) and "torch" not in str(info.traceback[-1].path)


def test_training_mode_dropout_and_flags_are_borrowed_not_changed():
    """Sampling runs in eval mode (dropout off: two calls agree), and the module comes back as it
    was, submodule by submodule: a frozen BatchNorm in a training network stays frozen."""
    torch.manual_seed(0)
    net = _DropoutNet()
    net.train()
    net.frozen.eval()
    net.body.bias.requires_grad_(False)
    modes = {name: m.training for name, m in net.named_modules()}
    model = cmbench.Model(net, family="cd", image_shape=(1, 8, 8))
    first = cmbench.evaluate(model, {"cm_multistep": [1, 2]}, **KW)
    second = cmbench.evaluate(model, {"cm_multistep": [1, 2]}, **KW)
    assert net.seen and not any(training for training, _ in net.seen), "dropout or batch statistics on while sampling"
    assert list(first["fid"]) == list(second["fid"]) and first["fid"].notna().all()
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert net.body.weight.requires_grad and not net.body.bias.requires_grad


def test_a_float64_module_runs_in_float64_and_stays_so():
    torch.manual_seed(0)
    net = _DropoutNet().double().eval()
    rows = cmbench.evaluate(cmbench.Model(net, family="cd", image_shape=(1, 8, 8)), {"cm_multistep": [1]}, **KW)
    assert rows["fid"].notna().all() and rows["status"][0] == "ok"
    assert {dtype for _, dtype in net.seen} == {torch.float64}
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert isinstance(rows["checkpoint_sha256"][0], str)


def test_module_with_extra_state_is_hashed():
    class WithExtraState(_DropoutNet):
        step = 3

        def get_extra_state(self):
            return {"step": self.step}

        def set_extra_state(self, state):
            self.step = state["step"]

    net = WithExtraState()
    model = cmbench.Model(net, family="cd", image_shape=(1, 8, 8))
    first = model.suite_entry()["state_sha256"]
    net.step = 4
    assert isinstance(first, str) and model.suite_entry()["state_sha256"] != first


@pytest.mark.parametrize("make, error, message", [
    (lambda: cmbench.Model(lambda x, s, y: x.numpy(), family="cd", image_shape=(1, 8, 8), preconditioning="none"),
     TypeError, "the network returned a ndarray; expected a tensor of shape \\[40, 1, 8, 8\\]"),
    (lambda: cmbench.Model(lambda x, s, y: [x], family="cd", image_shape=(1, 8, 8), preconditioning="none"),
     TypeError, "the network returned a list"),
    (lambda: cmbench.Model(5, family="cd", image_shape=(1, 8, 8)), TypeError,
     "models.model: net must be an nn.Module or a callable, got int"),
    (lambda: cmbench.Model(user_network(), family="gmm", image_shape=(1, 8, 8)), ValueError,
     "models.model.family: 'gmm' is not a family of models in memory; accepted: edm, cd, ct, ctm, pd, generator"),
    (lambda: cmbench.Model(user_network(), family="samples", image_shape=(1, 8, 8)), ValueError,
     "models.model.family: 'samples' .* cmbench.score"),
    (lambda: cmbench.Model(user_network(), family="cd", image_shape=(8, 8)), ValueError, "models.model.image_shape"),
    (lambda: cmbench.Model(user_network(), family="pd", image_shape=(1, 8, 8)), ValueError, "models.model.role"),
    (lambda: cmbench.Model(user_network(), family="cd", image_shape=(1, 8, 8), noise_label_scale=float("nan")),
     ValueError, "models.model.noise_label_scale"),
], ids=["numpy output", "list output", "not callable", "gmm", "samples", "2-d shape", "pd without role", "NaN scale"])
def test_bad_models_are_refused_by_name(make, error, message):
    with pytest.raises(error, match=message) as info:
        cmbench.evaluate(make(), {"cm_multistep": [1]}, **KW)
    assert _raised_in_cmbench(info), info.traceback[-1]


MODEL = cmbench.Model(_DropoutNet(), family="cd", image_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    """20 grey 8×8 images as an ADM-style .npz."""
    import numpy as np

    path = tmp_path_factory.mktemp("images") / "set.npz"
    np.savez(path, np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8))
    return path


@pytest.mark.parametrize("call, error, message", [
    (lambda images: cmbench.evaluate(MODEL, [cmbench.Run("cm_multistep", [1], model="nosuch")], **KW),
     ValueError, "runs\\[0\\].model: 'nosuch' is not accepted; accepted: model"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": [1]}, **{**KW, "profile": "nonexistent"}),
     ValueError, "profile: 'nonexistent' is not accepted; accepted: .*toy"),
    (lambda images: cmbench.score(images, profile="nonexistent"), ValueError, "profile: 'nonexistent' is not accepted"),
    (lambda images: cmbench.evaluate(MODEL, {"heun": [3]}, **KW), ValueError, "needs the 'denoise' map"),
    (lambda images: cmbench.evaluate(MODEL, {"onestep": [1]}, **KW), ValueError, "needs the 'generate' map"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": 1}, **KW), TypeError, "nfe must be a list of NFEs"),
    (lambda images: cmbench.evaluate(MODEL, "cm_multistep", **KW),
     TypeError, "runs: expected cmbench.Run .* got 'cm_multistep'"),
    (lambda images: cmbench.evaluate(MODEL, [("cm_multistep", [1])], **KW), TypeError, "runs: expected cmbench.Run"),
    (lambda images: cmbench.evaluate([MODEL], {"cm_multistep": [1]}, **KW),
     TypeError, "models: expected a cmbench.Model .* got a list"),
    (lambda images: cmbench.evaluate({"a": MODEL.net}, {"cm_multistep": [1]}, **KW),
     TypeError, "models: expected a cmbench.Model"),
    (lambda images: cmbench.evaluate({"../a": MODEL}, {"cm_multistep": [1]}, **KW), ValueError, "models.../a"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": [1]}, device="tpu", **KW),
     ValueError, "device: .* got 'tpu'"),
    (lambda images: cmbench.score(images, profile="toy", device="tpu"), ValueError, "device: .* got 'tpu'"),
    (lambda images: cmbench.run("toy", device="gpu"), ValueError, "device: .* got 'gpu'"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": [1]}, suite={"num_samples": 100}, **KW),
     ValueError, "suite: num_samples are evaluate\\(\\)'s own arguments"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": [1]}, suite={"profile": "edm"}, **KW),
     ValueError, "profile given both as an argument and in suite"),
    (lambda images: cmbench.evaluate(MODEL, {"cm_multistep": [1]}, **{**KW, "reference": "nothing.npz"}),
     FileNotFoundError, "nothing.npz do not exist"),
    (lambda images: cmbench.read_results("nowhere"), FileNotFoundError, "nowhere is not a cmbench run folder"),
], ids=["missing model", "unknown profile", "score: unknown profile", "heun for cd", "onestep for cd", "nfe an int",
        "runs a string", "runs of tuples", "models a list", "a module, not a Model", "unsafe model name", "device tpu",
        "score: device", "run: device", "suite key of an argument", "profile twice", "missing reference", "no run folder"])
def test_bad_arguments_are_refused_by_name(call, error, message, image_set, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as info:
        call(image_set)
    assert _raised_in_cmbench(info), info.traceback[-1]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_failed_row_is_returned_and_warned_about():
    nan = cmbench.Model(lambda x, s, y: x * float("nan"), family="cd", image_shape=(1, 8, 8), preconditioning="none")
    with pytest.warns(RuntimeWarning, match="row model.cm_multistep.nfe1 failed: .*non-finite"):
        rows = cmbench.evaluate(nan, {"cm_multistep": [1]}, **KW)
    assert rows["status"][0] == "failed" and pd.isna(rows["fid"][0])


def test_scored_folders_record_their_digest_like_npz_files(tmp_path):
    """A sample set's row names its images: a folder's digest (the one in the fingerprint) as a file's sha256."""
    import numpy as np
    from PIL import Image

    from cmbench.checkpoints.hashing import sha256_file, sha256_path

    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[:, :, 0]).save(tmp_path / "pngs" / f"{i:06d}.png")
    rows = cmbench.score({"npz": tmp_path / "set.npz", "png": tmp_path / "pngs"}, profile="toy", reference=REFERENCE)
    by_name = dict(zip(rows["model"], rows["checkpoint_sha256"]))
    assert by_name == {"npz": sha256_file(tmp_path / "set.npz"), "png": sha256_path(tmp_path / "pngs")}
    assert rows["fid"][0] == rows["fid"][1]  # the same images either way


def test_a_failed_row_leaves_no_partial_sample_folder(tmp_path):
    """save_samples: a row whose second batch is not finite leaves neither an .npz nor a PNG folder
    holding the first batch's images; computed again (it failed), it gets the complete folder."""
    calls = []

    def fails_in_the_second_batch(x, sigma, labels):
        calls.append(len(x))
        return x * float("nan") if len(calls) == 2 else x.clamp(-1, 1)

    model = cmbench.Model(fails_in_the_second_batch, family="cd", image_shape=(1, 8, 8), preconditioning="none")
    options = dict(out=tmp_path / "run", suite={"save_samples": ["npz", "png"]}, **{**KW, "batch_size": 16})
    with pytest.warns(RuntimeWarning, match="model.cm_multistep.nfe1 failed"):
        rows = cmbench.evaluate(model, {"cm_multistep": [1]}, **options)
    assert rows["status"][0] == "failed" and len(calls) >= 2
    assert not any((tmp_path / "run" / "samples").glob("*"))  # nothing saved, not even a part
    rows = cmbench.evaluate(model, {"cm_multistep": [1]}, **options)  # calls go on: no NaN this time
    assert rows["status"][0] == "ok" and rows["samples"][0] == {"npz": "samples/model.cm_multistep.nfe1.npz",
                                                                "png": "samples/model.cm_multistep.nfe1"}
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["model.cm_multistep.nfe1",
                                                                                "model.cm_multistep.nfe1.npz"]
    assert len(list((tmp_path / "run" / "samples" / "model.cm_multistep.nfe1").rglob("*.png"))) == 40
