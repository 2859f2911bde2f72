"""TrigFlow models (sCM, Lu & Song 2024) and sCM's sampler against the analytic mixture.

A TrigFlow network built from the mixture's exact denoiser,
F(x_t/σ_d, t) = (cos t·x_t − D(x_t/cos t; σ_d·tan t)) / (sin t·σ_d), makes the TrigFlow adapter's
maps equal to the exact EDM-form maps up to rounding, so every sampler must give the same images
from the same seeds through either; sCM's sampler is checked against a transcription of the
paper's procedure written here in TrigFlow time. Everything runs in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cmbench
from cmbench.models import GaussianMixture, GaussianMixtureModel, MissingMapError, NoiseRange, build_model
from cmbench.models.adapters import network_adapter
from cmbench.samplers import get_sampler
from cmbench.seeds import SampleNoise
from cmbench.suite import load_suite, parse_suite
from cmbench.validate import ConfigError

SHAPE = (1, 2, 2)
SIGMA_DATA = 0.5
SEEDS = list(range(7))
TOL = 1e-10
SUITES = Path(__file__).resolve().parent.parent / "suites"
REFERENCE = SUITES.parent / "reference_stats" / "toy-digits-all.npz"
MIXTURE = GaussianMixture.create([[-0.6, 0.4, -0.2, 0.5], [0.5, -0.3, 0.6, -0.1]], [0.2, 0.3], [0.3, 0.7])


class ExactTrigFlowNet(nn.Module):
    """F_θ of the mixture's exact denoiser D: F(x_t/σ_d, t) = (cos t·x_t − D(x_t/cos t; σ_d tan t))/(sin t·σ_d).
    Its float64 parameter makes the adapter run it in float64; it counts its calls."""

    def __init__(self):
        super().__init__()
        self.zero = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.calls = 0

    def forward(self, x_in, noise_labels, class_labels=None):
        self.calls += 1
        t = noise_labels.reshape(-1, 1, 1, 1)
        x_t = x_in * SIGMA_DATA
        x_edm, sigma = x_t / torch.cos(t), SIGMA_DATA * torch.tan(t)
        denoised = MIXTURE.posterior_mean(x_edm.flatten(1), sigma.flatten()).reshape(x_t.shape)
        return (torch.cos(t) * x_t - denoised) / (torch.sin(t) * SIGMA_DATA) + self.zero


class RandomTrigFlowNet(nn.Module):
    """A small random float64 network F(x_in, t): finite at every t, so f(x, 0) = x can be checked,
    and far from constant in x, so a slip in the noise or the time shows in the output."""

    def __init__(self, seed: int = 0, gain: float = 1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 4)).double()
        self.gain, self.calls = gain, 0

    def forward(self, x_in, noise_labels, class_labels=None):
        self.calls += 1
        out = self.body(torch.cat([x_in.flatten(1), noise_labels.reshape(-1, 1)], 1)).reshape(x_in.shape)
        return self.gain * out


class EDMFormConsistencyNet(nn.Module):
    """The same f written in EDM's coefficients, for ``preconditioning: none`` (called with σ):
    f(x, σ) = σ_d²/(σ² + σ_d²)·x − σ·σ_d/√(σ² + σ_d²)·F(x/√(σ² + σ_d²), arctan(σ/σ_d))."""

    def __init__(self, trigflow_net: nn.Module):
        super().__init__()
        self.net = trigflow_net

    def forward(self, x, sigma, class_labels=None):
        s = sigma.reshape(-1, 1, 1, 1)
        total = s**2 + SIGMA_DATA**2
        return (SIGMA_DATA**2 / total * x
                - s * SIGMA_DATA / total.sqrt() * self.net(x / total.sqrt(), torch.atan(s / SIGMA_DATA).flatten()))


def trigflow(family: str, net: nn.Module, **options):
    return network_adapter(family, net, {"image_shape": SHAPE, "preconditioning": "trigflow", **options}, sha256=None)


def sample(model, sampler: str, nfe: int, seeds=SEEDS, options=None) -> tuple[torch.Tensor, int]:
    """As cmbench samples a batch: each seed's latent, then its sampler noise (cmbench.generate)."""
    spec = get_sampler(sampler)
    noise = SampleNoise(seeds)
    latents = noise.randn(model.image_shape)
    return spec.run(model, latents, spec.schedule(model.noise_range, nfe, options or {}), noise=noise,
                    labels=None, options=options or {})


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ----------------------------------------------------------------------------- (a) diffusion model


def test_trigflow_denoiser_is_the_exact_edm_denoiser():
    model, exact = trigflow("edm", ExactTrigFlowNet()), GaussianMixtureModel(MIXTURE, SHAPE)
    assert (model.family, model.maps) == ("edm", {"denoise", "ddim_x0"})
    x = torch.randn(len(SEEDS), *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for sigma in (0.002, 0.05, 0.5, 3.0, 80.0):
        s = torch.full((len(SEEDS),), sigma, dtype=torch.float64)
        assert max_diff(model.denoise(x * (1 + sigma), s), exact.denoise(x * (1 + sigma), s)) < TOL, sigma


@pytest.mark.parametrize("sampler, nfes, options", [
    ("heun", [1, 5, 35], {}), ("heun", [9], {"s_churn": 5.0}), ("euler", [1, 4, 18], {}), ("ddim", [3], {}),
])
def test_edm_samplers_through_trigflow_reproduce_the_edm_form(sampler, nfes, options):
    model, exact = trigflow("edm", ExactTrigFlowNet()), GaussianMixtureModel(MIXTURE, SHAPE)
    for nfe in nfes:
        (ours, n), (reference, _) = sample(model, sampler, nfe, options=options), sample(exact, sampler, nfe, options=options)
        assert n == nfe and max_diff(ours, reference) < TOL, (sampler, nfe)


# ----------------------------------------------------------------------------- (b) consistency model


@pytest.mark.parametrize("family", ["cd", "ct"])
def test_cm_multistep_through_trigflow_equals_the_edm_form_consistency_map(family):
    net = ExactTrigFlowNet()
    model = trigflow(family, net)
    edm_form = network_adapter(family, EDMFormConsistencyNet(net), {"image_shape": SHAPE, "preconditioning": "none"},
                               sha256=None)
    assert model.maps == {"consistency", "trig_consistency"} and model.family == family
    for nfe, options in ((1, {}), (2, {}), (3, {"time_points": {3: [80.0, 2.0, 0.3, 0.002]}})):
        (ours, n), (reference, _) = sample(model, "cm_multistep", nfe, options=options), \
            sample(edm_form, "cm_multistep", nfe, options=options)
        assert n == nfe and max_diff(ours, reference) < TOL, nfe


def test_boundary_condition_holds_at_t_zero_and_the_edm_sigma_maps_are_cos_t_rescalings():
    model = trigflow("ct", RandomTrigFlowNet())
    x = torch.randn(4, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    zero = torch.zeros(4, dtype=torch.float64)
    assert torch.equal(model.consistency(x, zero), x) and torch.equal(model.trig_consistency(x, zero), x)
    sigma = torch.tensor([0.002, 0.3, 1.0, 80.0], dtype=torch.float64)
    t = torch.atan(sigma / SIGMA_DATA)
    x_t = torch.cos(t).reshape(-1, 1, 1, 1) * x
    assert max_diff(model.consistency(x, sigma), model.trig_consistency(x_t, t)) == 0.0


def test_noise_label_scale_feeds_1000_t_and_other_time_inputs_see_sigma():
    seen = []

    class Recording(RandomTrigFlowNet):
        def forward(self, x_in, noise_labels, class_labels=None):
            seen.append(noise_labels.clone())
            return super().forward(x_in, noise_labels, class_labels)

    t = torch.tensor([0.3, 1.1], dtype=torch.float64)
    x = torch.ones(2, *SHAPE, dtype=torch.float64)
    trigflow("ct", Recording(), noise_label_scale=1000.0).trig_consistency(x, t)
    trigflow("ct", Recording(), time_input="log_sigma").trig_consistency(x, t)
    assert max_diff(seen[0], 1000 * t) == 0.0
    assert max_diff(seen[1], 0.25 * torch.log(SIGMA_DATA * torch.tan(t))) < 1e-15


# ----------------------------------------------------------------------------- (c) sCM's sampler


def scm_by_hand(net: nn.Module, seeds, t_max: float, t_mid: float | None) -> torch.Tensor:
    """sCM sampling transcribed in TrigFlow time, one seed at a time: z ~ N(0, σ_d² I) is σ_d times
    the seed's latent (its first float32 draw), z' its next draw (float64, as cmbench's later noise);
    x = f(sin(t_max)·z, t_max); two steps: x_t = cos(t_mid)·x + sin(t_mid)·z', x = f(x_t, t_mid);
    f(x_t, t) = cos(t)·x_t − sin(t)·σ_d·F(x_t/σ_d, t)."""

    def f(x_t, t):
        label = torch.full((1,), t, dtype=torch.float64)
        return math.cos(t) * x_t - math.sin(t) * SIGMA_DATA * net(x_t / SIGMA_DATA, label)

    images = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        z = SIGMA_DATA * torch.randn(SHAPE, generator=g).to(torch.float64)[None]
        x = f(math.sin(t_max) * z, t_max)
        if t_mid is not None:
            z_mid = SIGMA_DATA * torch.randn(SHAPE, generator=g, dtype=torch.float64)[None]
            x = f(math.cos(t_mid) * x + math.sin(t_mid) * z_mid, t_mid)
        images.append(x)
    return torch.cat(images)


@pytest.mark.parametrize("t_max_option, t_max", [("sigma_max", math.atan(80.0 / SIGMA_DATA)), ("pi/2", math.pi / 2)])
@pytest.mark.parametrize("nfe", [1, 2])
def test_scm_sampler_is_the_papers_procedure(t_max_option, t_max, nfe):
    net = RandomTrigFlowNet()
    model = trigflow("ct", net)
    options = {"t_max": t_max_option}
    grid = get_sampler("scm").schedule(model.noise_range, nfe, options)
    assert grid.tolist() == ([t_max, 0.0] if nfe == 1 else [t_max, 1.1, 0.0])
    images, returned = sample(model, "scm", nfe, options=options)
    assert returned == nfe and net.calls == nfe  # one batch: one network call per evaluation
    expected = scm_by_hand(net, SEEDS, t_max, 1.1 if nfe == 2 else None)
    assert max_diff(images, expected) < TOL


def test_scm_at_pi_over_2_starts_from_pure_noise_and_more_steps_follow_intermediate_t():
    net = RandomTrigFlowNet()
    model = trigflow("cd", net)
    t_max = get_sampler("scm").schedule(model.noise_range, 1, {"t_max": "pi/2"})[0]
    assert float(t_max) == math.pi / 2 and math.sin(float(t_max)) == 1.0  # x_T = σ_d·z exactly
    options = {"intermediate_t": {3: [1.3, 0.6]}}
    assert get_sampler("scm").schedule(model.noise_range, 3, options).tolist() == [math.atan(160.0), 1.3, 0.6, 0.0]
    _, returned = sample(model, "scm", 3, options=options)
    assert returned == 3 and net.calls == 3


def test_clip_denoised_clamps_every_evaluation():
    model = trigflow("ct", RandomTrigFlowNet(gain=20.0))
    clipped, _ = sample(model, "scm", 2, options={"clip_denoised": True})
    free, _ = sample(model, "scm", 2)
    assert float(clipped.abs().max()) <= 1.0 and float(free.abs().max()) > 1.0


# ----------------------------------------------------------------------------- (d) per-sample seeds


def test_each_sample_depends_only_on_its_seed():
    model = trigflow("ct", RandomTrigFlowNet())
    whole, _ = sample(model, "scm", 2)
    parts = torch.cat([sample(model, "scm", 2, seeds=SEEDS[:3])[0], sample(model, "scm", 2, seeds=SEEDS[3:])[0]])
    single = torch.cat([sample(model, "scm", 2, seeds=[s])[0] for s in SEEDS])
    assert max_diff(whole, parts) < 1e-14 and max_diff(whole, single) < 1e-14


# ----------------------------------------------------------------------------- (e) bad input


@pytest.mark.parametrize("nfe, options, message", [
    (2, {"t_mid": 1.1}, r"has no option\(s\) t_mid; accepted: clip_denoised, intermediate_t, t_max"),
    (1, {"t_max": 1.57}, r"option t_max = 1.57 is not accepted; expected sigma_max .* or pi/2"),
    (1, {"t_max": "pi"}, r"option t_max = 'pi' is not accepted; expected sigma_max"),
    (2, {"intermediate_t": [1.1]}, r"option intermediate_t = \[1.1\] is not accepted; expected a mapping"),
    (2, {"intermediate_t": {2: [1.7]}}, r"intermediate_t\[2\] = \[1.7\]: 1.7 lies outside \(0, π/2\)"),
    (2, {"intermediate_t": {2: [0.0]}}, r"intermediate_t\[2\] = \[0.0\]: 0.0 lies outside \(0, π/2\)"),
    (2, {"intermediate_t": {2: [1.568]}}, r"intermediate_t\[2\] = \[1.568\]: expected strictly decreasing times below "
                                          r"t_max = 1.56455"),
    (3, {"intermediate_t": {3: [0.5, 1.0]}}, r"intermediate_t\[3\] = \[0.5, 1.0\]: expected strictly decreasing"),
    (3, {"intermediate_t": {3: [1.0]}}, r"intermediate_t\[3\] = \[1.0\]: expected a list of 2 TrigFlow time"),
    (3, {}, r"intermediate_t\[3\] is missing: NFE 3 needs 2 intermediate TrigFlow time\(s\) in \(0, π/2\)"),
    (2, {"intermediate_t": {3: [1.0, 0.5]}}, r"intermediate_t\[2\] is missing"),
    (0, {}, r"cannot make NFE 0"),
])
def test_bad_sampler_options_are_refused_by_name(nfe, options, message):
    with pytest.raises(ValueError, match=message):
        get_sampler("scm").schedule(NoiseRange(), nfe, options)


def test_models_without_trigflow_time_are_refused_by_the_sampler_and_the_suite(tmp_path):
    plain_cm = network_adapter("ct", RandomTrigFlowNet(), {"image_shape": SHAPE}, sha256=None)
    for model in (plain_cm, trigflow("edm", RandomTrigFlowNet()), GaussianMixtureModel(MIXTURE, SHAPE)):
        with pytest.raises(MissingMapError, match=r"no 'trig_consistency' map .*; TrigFlow time \(the scm sampler\) "
                                                  r"needs a cd or ct model with preconditioning: trigflow"):
            sample(model, "scm", 1)
    raw = {"name": "t", "num_samples": 4, "reference": {"path": "unused.npz"},
           "models": {"m": {"family": "ct", "entry_point": "nets.py:build", "image_shape": list(SHAPE)}},
           "runs": [{"model": "m", "sampler": "scm", "nfe": [1]}]}
    with pytest.raises(ConfigError, match=r"runs\[0\]\.sampler: sampler 'scm' needs the 'trig_consistency' map"):
        parse_suite(raw, "t.yaml", tmp_path)
    raw["models"]["m"]["preconditioning"] = "trigflow"
    assert parse_suite(raw, "t.yaml", tmp_path).rows[0].row_id == "m.scm.nfe1"


@pytest.mark.parametrize("entry, where, message", [
    ({"family": "ctm", "entry_point": "nets.py:build", "preconditioning": "trigflow"}, r"models\.m\.preconditioning",
     "'trigflow' is not accepted; accepted: edm, none"),
    ({"family": "ct", "entry_point": "nets.py:build", "time_input": "trigflow_t"}, r"models\.m\.time_input",
     r"'trigflow_t' is TrigFlow time .* needs preconditioning: trigflow \(this model's is cm\)"),
    ({"family": "ctm", "checkpoint": "m.pt", "preconditioning": "trigflow"}, r"models\.m\.preconditioning",
     "only EDM, CD and CT models"),
    ({"family": "edm", "checkpoint": "m.pt", "preconditioning": "edm", "time_input": "trigflow_t"},
     r"models\.m\.time_input", "needs preconditioning: trigflow"),
])
def test_bad_trigflow_model_entries_are_refused_by_name(tmp_path, entry, where, message):
    entry = {**entry, "image_shape": list(SHAPE)} if "entry_point" in entry else entry
    raw = {"name": "t", "num_samples": 4, "reference": {"path": "unused.npz"}, "models": {"m": entry},
           "runs": [{"model": "m", "sampler": "euler" if entry["family"] == "edm" else "cm_multistep", "nfe": [1]}]}
    with pytest.raises(ConfigError, match=rf"{where}: .*{message}"):
        parse_suite(raw, "t.yaml", tmp_path)


def test_a_chain_is_refused_and_the_time_input_refuses_sigma():
    from cmbench.models.preconditioning import TimeInput

    model = trigflow("ct", RandomTrigFlowNet())
    spec = get_sampler("scm")
    with pytest.raises(ValueError, match="sampler 'scm' has no replacement step for editing"):
        spec.run(model, torch.zeros(1, *SHAPE), spec.schedule(model.noise_range, 1, {}), noise=SampleNoise([0]),
                 labels=None, options={}, chain=object())
    with pytest.raises(ValueError, match="only models with preconditioning: trigflow take it"):
        TimeInput("trigflow_t")(torch.ones(2))
    with pytest.raises(ValueError, match="preconditioning 'trigflow' is for families edm, cd, ct, not 'ctm'"):
        network_adapter("ctm", RandomTrigFlowNet(), {"image_shape": SHAPE, "preconditioning": "trigflow"}, sha256=None)


# ----------------------------------------------------------------------------- the three ways in


def test_native_checkpoints_and_the_python_api_take_trigflow(tmp_path):
    from cmbench.checkpoints.native import save_native
    from cmbench.nets import build_network

    arch = {"img_resolution": 8, "img_channels": 1, "hidden": 16, "depth": 1, "emb_dim": 8, "s_embedding": False}
    torch.manual_seed(0)
    net = build_network("toy_mlp", arch)
    save_native(tmp_path / "m.pt", net, arch="toy_mlp", arch_kwargs=arch, family="ct",
                model_options={"image_shape": [1, 8, 8], "preconditioning": "trigflow"})
    raw = {"name": "t", "num_samples": 4, "reference": {"path": "unused.npz"},
           "models": {"m": {"family": "ct", "checkpoint": "m.pt", "preconditioning": "trigflow"}},
           "runs": [{"model": "m", "sampler": "scm", "nfe": [1, 2]}]}
    spec = parse_suite(raw, "t.yaml", tmp_path).models["m"]
    model = build_model(spec.family, spec.options, tmp_path, name="m")
    assert model.has("trig_consistency") and model.preconditioning == "trigflow"
    assert model.time_input.time_input.kind == "trigflow_t"

    rows = cmbench.evaluate(cmbench.Model(net, family="ct", image_shape=(1, 8, 8), preconditioning="trigflow"),
                            [cmbench.Run("scm", [1, 2], options={"t_max": "pi/2"})], profile="toy",
                            reference=REFERENCE, num_samples=20, batch_size=20)
    assert list(rows["nfe"]) == [1, 2] and list(rows["schedule"])[1] == [math.pi / 2, 1.1, 0.0]
    assert rows["fid"].notna().all()


# ----------------------------------------------------------------------------- the paper suites


@pytest.mark.parametrize("name, shape, labels", [("scm_cifar10", [3, 32, 32], 0), ("scm_imagenet64", [3, 64, 64], 1000)])
def test_scm_suites_validate_with_the_papers_sampler_and_numbers(name, shape, labels):
    suite = load_suite(SUITES / f"{name}.yaml")
    assert suite.num_samples == 50_000 and suite.profile == "edm" and "2410.11081" in suite.paper_source
    for spec in suite.models.values():
        assert spec.family in ("cd", "ct") and spec.options["preconditioning"] == "trigflow"
        assert "entry_point" in spec.options and spec.options["image_shape"] == shape
        assert spec.options.get("label_dim", 0) == labels
    assert {row.sampler for row in suite.rows} == {"scm"} and {row.nfe for row in suite.rows} == {1, 2}
    assert all(row.options == {"t_max": "sigma_max", "intermediate_t": {2: [1.1]}} for row in suite.rows)
    two_step = {row.model: row.paper["fid"] for row in suite.rows if row.nfe == 2}
    assert two_step["sct"] == {"scm_cifar10": 2.06, "scm_imagenet64": 1.48}[name]


NETS = '''
import torch
from torch import nn


class TinyTrigFlowNet(nn.Module):
    """A user's network F(x_t / sigma_d, c_noise(t), class_labels), here a random 3x3 conv."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, x, noise_labels, class_labels=None):
        t = noise_labels.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]).to(x.dtype)
        return self.conv(torch.cat([x, t], dim=1))


def build(channels=3):
    return TinyTrigFlowNet(channels)
'''


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 samples in 2048-d
def test_scm_cifar10_first_row_runs_end_to_end_on_cpu(tmp_path, official_inception, monkeypatch):
    """The suite's first row with the user's kind of model: an entry point building a small random
    network and its state dict, 4 samples, the EDM profile against random reference statistics."""
    from dataclasses import replace

    from test_paper_suites import write_reference
    from test_readme import low_rank_trace_sqrt

    from cmbench.checkpoints.hashing import sha256_file
    from cmbench.metrics import fid as fid_module
    from cmbench.results import read_rows
    from cmbench.runner import run_suite

    monkeypatch.setattr(fid_module, "_trace_sqrt_sqrtm", low_rank_trace_sqrt)
    (tmp_path / "nets.py").write_text(NETS)
    overrides = [f"checkpoints_dir={tmp_path}", f"reference.dir={tmp_path}", "num_samples=4", "batch_size=4",
                 "grid_images=2", "uncertainty={bootstrap: 0}", f"models.sct.entry_point={tmp_path / 'nets.py'}:build"]
    suite = load_suite(SUITES / "scm_cifar10.yaml", overrides)
    row = suite.rows[0]
    assert (row.model, row.sampler, row.nfe) == ("sct", "scm", 1)
    namespace: dict = {}
    exec(compile(NETS, "nets", "exec"), namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"]().state_dict(), tmp_path / suite.models["sct"].options["checkpoint"])
    suite = replace(suite, rows=[row], models={"sct": suite.models["sct"]})
    write_reference(suite, tmp_path, official_inception)
    run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    (result,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert result["row_id"] == "sct.scm.nfe1" and result["nfe"] == 1 and result["status"] == "ok"
    assert result["model_source"] == "entry_point" and result["family"] == "ct"
    assert result["checkpoint_sha256"] == sha256_file(tmp_path / "sct_cifar10_ema.pt")
    assert result["schedule"] == [math.atan(80.0 / 0.5), 0.0]  # TrigFlow times: t_max, then 0
    assert result["options"] == {"t_max": "sigma_max", "intermediate_t": {"2": [1.1]}}  # JSON keys
    assert np.isfinite(result["fid"])
