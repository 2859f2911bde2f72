"""Family adapters: preconditioning by hand, boundary conditions, missing maps, checkpoints.

Formulas from shared/reference/facts.md §1. The networks are random SmallUNets (weights moved
off their initialisation), in float64 where outputs are compared with hand computations.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from cmbench.checkpoints import save_native
from cmbench.models import (
    GaussianMixture,
    GaussianMixtureModel,
    MissingMapError,
    NoiseRange,
    build_model,
    family_maps,
)
from cmbench.models.base import MAPS
from cmbench.models.networks import ConsistencyModel, CTMModel, EDMModel, GeneratorModel
from cmbench.models.pd import ProgressiveDistillationModel
from cmbench.models.preconditioning import TimeInput
from cmbench.models.trigflow import TrigFlowModel
from cmbench.nets import build_network

RES = 4
SHAPE = (1, RES, RES)
SIGMA_DATA = 0.5
SIGMA_MIN = 0.002


def random_net(seed: int = 0, double: bool = True, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    config = {"img_resolution": RES, "img_channels": 1, "model_channels": 8}
    config.update(kwargs)
    net = build_network("small_unet", config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net = net.eval()
    return net.double() if double else net


def inputs(batch: int = 3, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *SHAPE), generator=gen, dtype=dtype)
    sigma = torch.tensor([0.02, 0.7, 30.0][:batch], dtype=dtype)
    return x, sigma


def col(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


def edm_coefficients(sigma):
    s = col(sigma)
    total = s**2 + SIGMA_DATA**2
    return SIGMA_DATA**2 / total, s * SIGMA_DATA / total.sqrt(), 1 / total.sqrt()


# ----------------------------------------------------------------------------- EDM


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_edm_denoiser_matches_preconditioning_by_hand(scale):
    net = random_net()
    model = EDMModel(net, SHAPE, noise_range=NoiseRange(), time_input=TimeInput(scale=scale))
    x, sigma = inputs()
    c_skip, c_out, c_in = edm_coefficients(sigma)
    with torch.no_grad():
        raw = net(c_in * x, scale * torch.log(sigma) / 4)
    assert raw.abs().max() > 1e-3  # the network term is not trivially zero
    want = c_skip * x + c_out * raw
    got = model.denoise(x, sigma)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and the network term matters: the skip path alone is something else
    assert (got - c_skip * x).abs().max() > 1e-3
    # ddim_x0 of a denoiser is the denoiser
    torch.testing.assert_close(model.ddim_x0(x, sigma), got, rtol=0, atol=0)


def test_edm_denoiser_with_class_labels_and_float32_net():
    net = random_net(seed=2, double=False, label_dim=3)
    model = EDMModel(net, SHAPE, label_dim=3)
    x, sigma = inputs(dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    c_skip, c_out, c_in = edm_coefficients(sigma)
    with torch.no_grad():
        raw = net((c_in * x).float(), (torch.log(sigma) / 4).float(), labels).double()
    got = model.denoise(x, sigma, labels)
    assert got.dtype == torch.float64  # the caller's dtype comes back
    torch.testing.assert_close(got, c_skip * x + c_out * raw, rtol=1e-6, atol=1e-6)
    other = model.denoise(x, sigma, torch.tensor([1, 0, 2]))
    assert (other - got).abs().max() > 1e-4


def test_edm_scalar_sigma_broadcasts():
    model = EDMModel(random_net(), SHAPE)
    x, _ = inputs()
    torch.testing.assert_close(model.denoise(x, 0.7), model.denoise(x, torch.full((3,), 0.7, dtype=torch.float64)), rtol=0, atol=0)


# ----------------------------------------------------------------------------- CD / CT


@pytest.mark.parametrize("family", ["cd", "ct"])
def test_consistency_boundary_condition_is_exact(family):
    for seed in range(3):
        model = ConsistencyModel(random_net(seed=seed), SHAPE, family=family)
        assert model.family == family
        x, _ = inputs(seed=seed)
        at_min = model.consistency(x, torch.full((3,), SIGMA_MIN, dtype=torch.float64))
        assert torch.equal(at_min, x)
        x32 = x.float()
        assert torch.equal(model.consistency(x32, torch.full((3,), SIGMA_MIN)), x32)
        # away from σ_min the network contributes
        away = model.consistency(x, torch.full((3,), 1.0, dtype=torch.float64))
        assert (away - x).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["cd", "ct"])
def test_consistency_matches_preconditioning_by_hand(family):
    net = random_net(seed=4)
    model = ConsistencyModel(net, SHAPE, family=family, time_input=TimeInput(scale=1000.0))
    x, sigma = inputs()
    s = col(sigma)
    c_skip = SIGMA_DATA**2 / ((s - SIGMA_MIN) ** 2 + SIGMA_DATA**2)
    c_out = (s - SIGMA_MIN) * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
    c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
    with torch.no_grad():
        raw = net(c_in * x, 250.0 * torch.log(sigma))  # openai's 1000 · 0.25 · ln σ
    torch.testing.assert_close(model.consistency(x, sigma), c_skip * x + c_out * raw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["edm", "ctm", "CD", ""])
def test_consistency_family_must_be_cd_or_ct(family):
    with pytest.raises(ValueError, match="'cd' or 'ct'"):
        ConsistencyModel(random_net(), SHAPE, family=family)


# ----------------------------------------------------------------------------- CTM


def ctm_model(seed: int = 5) -> tuple[CTMModel, nn.Module]:
    net = random_net(seed=seed, s_embedding=True)
    return CTMModel(net, SHAPE), net


def ctm_g_by_hand(net, x, t, s):
    c_skip, c_out, c_in = edm_coefficients(t)
    with torch.no_grad():
        raw = net(c_in * x, torch.log(t) / 4, None, torch.log(s) / 4)
    return c_skip * x + c_out * raw


def test_ctm_jump_to_same_time_is_identity():
    model, _ = ctm_model()
    x, sigma = inputs()
    assert torch.equal(model.jump(x, sigma, sigma), x)


def test_ctm_denoise_and_jump_match_definition_by_hand():
    model, net = ctm_model()
    x, t = inputs()
    s = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
    g_tt = ctm_g_by_hand(net, x, t, t)
    torch.testing.assert_close(model.denoise(x, t), g_tt, rtol=1e-12, atol=1e-12)
    g_ts = ctm_g_by_hand(net, x, t, s)
    assert (g_ts - g_tt).abs().max() > 1e-4  # the s input matters
    ratio = col(s / t)
    torch.testing.assert_close(model.jump(x, t, s), ratio * x + (1 - ratio) * g_ts, rtol=1e-12, atol=1e-12)
    # ddim_x0 goes through the denoiser
    torch.testing.assert_close(model.ddim_x0(x, t), g_tt, rtol=0, atol=0)


def test_ctm_consistency_is_jump_to_sigma_min():
    model, _ = ctm_model()
    x, t = inputs()
    want = model.jump(x, t, torch.full((3,), SIGMA_MIN, dtype=torch.float64))
    torch.testing.assert_close(model.consistency(x, t), want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- PD


class FixedNet(nn.Module):
    """A 'network' that returns a fixed tensor and records what it was given."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.register_buffer("out", out)
        self.dummy = nn.Parameter(torch.zeros((), dtype=out.dtype))  # gives the adapter a dtype
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, noise_labels, class_labels=None, s_noise_labels=None):
        self.seen.append((x.clone(), noise_labels.clone()))
        return self.out.clone()


@pytest.mark.parametrize("prediction", ["v", "x", "eps"])
def test_pd_ddim_x0_recovers_clean_image_from_true_prediction(prediction):
    gen = torch.Generator().manual_seed(6)
    x0 = torch.rand((3, *SHAPE), generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn((3, *SHAPE), generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.05, 1.0, 12.0], dtype=torch.float64)  # VE levels
    alpha = col(1 / (1 + sigma**2).sqrt())
    sigma_vp = col(sigma) * alpha
    z = alpha * x0 + sigma_vp * eps  # the VP sample the network sees
    x_ve = z / alpha  # = x0 + σ ε, what the sampler holds
    target = {"v": alpha * eps - sigma_vp * x0, "x": x0, "eps": eps}[prediction]
    net = FixedNet(target)
    model = ProgressiveDistillationModel(net, SHAPE, prediction=prediction, role="student")
    got = model.ddim_x0(x_ve, sigma)
    torch.testing.assert_close(got, x0, rtol=1e-10, atol=1e-10)
    seen_x, _ = net.seen[-1]
    torch.testing.assert_close(seen_x, z, rtol=1e-12, atol=1e-12)
    # a wrong prediction type reads the same output differently
    for other in {"v", "x", "eps"} - {prediction}:
        wrong = ProgressiveDistillationModel(FixedNet(target), SHAPE, prediction=other, role="student")
        assert (wrong.ddim_x0(x_ve, sigma) - x0).abs().max() > 1e-2


def test_pd_student_has_no_denoiser_and_teacher_has():
    net = random_net(seed=7)
    student = ProgressiveDistillationModel(net, SHAPE, prediction="v", role="student")
    teacher = ProgressiveDistillationModel(net, SHAPE, prediction="v", role="teacher")
    x, sigma = inputs()
    with pytest.raises(MissingMapError) as err:
        student.denoise(x, sigma)
    message = str(err.value)
    for name in ("'denoise'", "pd", "EDM", "CTM", "PD teachers", "gmm"):
        assert name in message, message
    assert not student.has("denoise") and student.has("ddim_x0")
    assert teacher.has("denoise") and teacher.has("ddim_x0")
    torch.testing.assert_close(teacher.denoise(x, sigma), student.ddim_x0(x, sigma), rtol=0, atol=0)


def test_pd_rejects_unknown_prediction_and_role():
    with pytest.raises(ValueError, match="v, x, eps"):
        ProgressiveDistillationModel(random_net(), SHAPE, prediction="score")
    with pytest.raises(ValueError, match="student, teacher"):
        ProgressiveDistillationModel(random_net(), SHAPE, role="distilled")


# ----------------------------------------------------------------------------- missing maps


def test_cd_denoise_and_jump_raise_missing_map_error():
    model = ConsistencyModel(random_net(), SHAPE, family="cd")
    x, sigma = inputs()
    with pytest.raises(MissingMapError, match=r"cd models have no 'denoise' map \(they have: consistency\)") as err:
        model.denoise(x, sigma)
    assert "score access" in str(err.value) and "EDM" in str(err.value)
    with pytest.raises(MissingMapError, match=r"cd models have no 'jump' map \(they have: consistency\)"):
        model.jump(x, sigma, sigma / 2)
    with pytest.raises(MissingMapError, match="'ddim_x0'"):
        model.ddim_x0(x, sigma)
    assert issubclass(MissingMapError, RuntimeError)


def all_models():
    mixture = GaussianMixture.create(torch.zeros(1, RES * RES), [0.3])
    return [
        ("edm", {}, EDMModel(random_net(), SHAPE)),
        ("cd", {}, ConsistencyModel(random_net(), SHAPE, family="cd")),
        ("ct", {}, ConsistencyModel(random_net(), SHAPE, family="ct")),
        ("ctm", {}, CTMModel(random_net(s_embedding=True), SHAPE)),
        ("pd", {"role": "student"}, ProgressiveDistillationModel(random_net(), SHAPE, role="student")),
        ("pd", {"role": "teacher"}, ProgressiveDistillationModel(random_net(), SHAPE, role="teacher")),
        ("gmm", {}, GaussianMixtureModel(mixture, SHAPE, ode_steps=2)),
        ("generator", {}, GeneratorModel(_Generator().double(), SHAPE)),
        ("edm", {"preconditioning": "trigflow"}, TrigFlowModel(random_net(), SHAPE, family="edm")),
        ("ct", {"preconditioning": "trigflow"}, TrigFlowModel(random_net(), SHAPE, family="ct")),
    ]


class _Generator(nn.Module):
    """A one-step generator net(z, labels) for the map checks."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, z, labels=None):
        return torch.tanh(self.scale * z)


def test_has_agrees_with_maps_and_with_what_works():
    x, sigma = inputs()
    calls = {
        "denoise": lambda m: m.denoise(x, sigma),
        "consistency": lambda m: m.consistency(x, sigma),
        "jump": lambda m: m.jump(x, sigma, sigma / 2),
        "ddim_x0": lambda m: m.ddim_x0(x, sigma),
        "generate": lambda m: m.generate(x),
        "trig_consistency": lambda m: m.trig_consistency(x, torch.atan(sigma / 0.5)),
    }
    assert set(calls) == set(MAPS) - {"images"}  # a stored sample set is read, not called
    for family, options, model in all_models():
        assert model.family == family
        assert set(model.maps) <= set(MAPS)
        assert set(model.maps) == family_maps(family, options), family
        for name in calls:
            assert model.has(name) == (name in model.maps)
            if model.has(name):
                out = calls[name](model)
                assert out.shape == x.shape and torch.isfinite(out).all()
            else:
                with pytest.raises(MissingMapError, match=repr(name)):
                    calls[name](model)


# ----------------------------------------------------------------------------- native checkpoints

ARCH_KWARGS = {"img_resolution": 8, "img_channels": 1, "model_channels": 8}


def saved_edm(tmp_path):
    torch.manual_seed(8)
    net = build_network("small_unet", ARCH_KWARGS)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    path = tmp_path / "edm.pt"
    digest = save_native(
        path, net, arch="small_unet", arch_kwargs=ARCH_KWARGS, family="edm",
        model_options={"image_shape": [1, 8, 8]},
    )
    return net, path, digest


def test_model_from_native_checkpoint(tmp_path):
    net, path, digest = saved_edm(tmp_path)
    model = build_model("edm", {"checkpoint": "edm.pt"}, tmp_path, "cpu")  # relative to base_dir
    assert isinstance(model, EDMModel)
    assert model.checkpoint_sha256 == digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.image_shape == (1, 8, 8) and model.label_dim == 0
    assert model.noise_range == NoiseRange(0.002, 80.0, 0.5)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn((4, 1, 8, 8), generator=gen)
    sigma = torch.tensor([0.01, 0.5, 3.0, 70.0])
    reference = EDMModel(net, (1, 8, 8))
    torch.testing.assert_close(model.denoise(x, sigma), reference.denoise(x, sigma), rtol=0, atol=0)
    # an absolute path works too, and suite options override the checkpoint's
    other = build_model("edm", {"checkpoint": str(path), "sigma_data": 0.7}, tmp_path / "elsewhere", "cpu")
    assert other.noise_range.sigma_data == 0.7
    assert (other.denoise(x, sigma) - model.denoise(x, sigma)).abs().max() > 1e-4


def test_family_mismatch_between_suite_and_checkpoint(tmp_path):
    _, path, _ = saved_edm(tmp_path)
    with pytest.raises(ValueError) as err:
        build_model("cd", {"checkpoint": str(path)}, tmp_path, "cpu")
    message = str(err.value)
    assert "'edm'" in message and "'cd'" in message and str(path) in message


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_model("edm", {"checkpoint": "nope.pt"}, tmp_path, "cpu")


def test_gmm_model_from_spec():
    model = build_model(
        "gmm",
        {"image_shape": [1, 2, 2], "components": [{"mean": 0.5, "std": 0.1, "weight": 1.0}, {"mean": [0, 1, 0, 1], "std": 0.2}],
         "class_conditional": True, "sigma_max": 40.0, "ode_steps": 8},
        None, "cpu",
    )
    assert isinstance(model, GaussianMixtureModel)
    assert model.label_dim == 2 and model.sigma_max == 40.0 and model.ode_steps == 8
    torch.testing.assert_close(model.mixture.means[0], torch.full((4,), 0.5, dtype=torch.float64))
    # the exact denoiser of a single component: μ + s²/(s² + σ²)(x − μ)
    x = torch.ones((1, 1, 2, 2), dtype=torch.float64)
    got = model.denoise(x, torch.tensor([0.3], dtype=torch.float64), torch.tensor([0]))
    want = 0.5 + 0.01 / (0.01 + 0.09) * (1 - 0.5)
    torch.testing.assert_close(got, torch.full_like(x, want), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="4 values"):
        GaussianMixtureModel(GaussianMixture.create(torch.zeros(1, 3), [1.0]), (1, 2, 2))


# ----------------------------------------------------------------------------- time inputs


def official_vp_label(sigma: torch.Tensor) -> torch.Tensor:
    """NVlabs/edm VPPrecond's c_noise: σ cast to float32 in forward, then (M − 1)·sigma_inv(σ)
    with ln(1 + σ²) (training/networks.py), β_d = 19.9, β_min = 0.1, M = 1000."""
    s = sigma.to(torch.float32)
    t = ((0.1**2 + 2 * 19.9 * (1 + s**2).log()).sqrt() - 0.1) / 19.9
    return (999 * t).to(sigma.dtype)


def test_vp_time_input_is_the_official_float32_label():
    """At σ = 0.0064, float32's 1 + σ² keeps too few digits of σ²: the official label sits 1.1e-3
    (relative) off the exact log1p one, and the network was trained on the official one."""
    sigma = torch.tensor([0.0064, 0.002, 0.0045], dtype=torch.float64)
    got = TimeInput("vp")(sigma)
    exact = 999 * ((0.1**2 + 2 * 19.9 * torch.log1p(sigma**2)).sqrt() - 0.1) / 19.9
    torch.testing.assert_close(got, official_vp_label(sigma), rtol=0, atol=0)
    assert 1.0e-3 < float(got[0] / exact[0] - 1) < 1.2e-3
    assert got.dtype == torch.float64
    torch.testing.assert_close(TimeInput("vp")(sigma.float()), official_vp_label(sigma).float(), rtol=0, atol=0)


def test_time_inputs_follow_their_definitions():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    torch.testing.assert_close(TimeInput("log_sigma", 1000.0)(sigma), 250 * sigma.log())
    torch.testing.assert_close(TimeInput("ve")(sigma), (0.5 * sigma).log())
    torch.testing.assert_close(TimeInput("vp")(sigma), official_vp_label(sigma), rtol=0, atol=0)
    logsnr = -2 * sigma.log()  # α = 1/√(1+σ²), σ_vp = σα: logsnr = −2 ln σ
    torch.testing.assert_close(TimeInput("inv_cos")(sigma), torch.atan(torch.exp(-0.5 * logsnr)) / (0.5 * torch.pi))
    torch.testing.assert_close(TimeInput("sigmoid_logsnr")(sigma), torch.sigmoid(logsnr))
    huge = torch.tensor([1e6], dtype=torch.float64)  # logsnr clipped at −20, as the PD nets clip it
    torch.testing.assert_close(TimeInput("inv_cos")(huge), torch.atan(torch.tensor([math.exp(10.0)], dtype=torch.float64)) / (0.5 * math.pi))
    with pytest.raises(ValueError, match="time input 't' is not one of log_sigma, vp, ve, inv_cos, sigmoid_logsnr"):
        TimeInput("t")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_on_cuda_stays_close_to_fp32(precision):
    net = random_net(seed=5, double=False).cuda()
    x, sigma = (t.cuda() for t in inputs())
    exact = EDMModel(net, SHAPE).denoise(x, sigma)
    fast = EDMModel(net, SHAPE, precision=precision).denoise(x, sigma)
    assert fast.dtype == torch.float64
    assert 0 < float((fast - exact).abs().max()) < 0.05 * float(exact.abs().max())
