"""Likelihood protocols: cmbench's exact bits/dim and CTM's eval_bpd.py estimator (ctm_eval_bpd).

The analytic mixture has an exact density, so both are checked against the exact discrete
bits/dim of its uint8 data: −log₂ P(bin)/D with P(bin) the mixture's mass on each image's
dequantisation box (a product of normal CDF differences per component).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy.integrate import solve_ivp

from cmbench.cli import main
from cmbench.images import to_uint8
from cmbench.likelihood_ctm import CTMEvalBPD, ctm_eval_bpd_log_likelihood, ctm_scale
from cmbench.models import GaussianMixtureModel
from cmbench.models.gmm import mixture_from_spec
from cmbench.nll import ExactProtocol, evaluate_nll, make_protocol
from cmbench.results import read_rows
from cmbench.runner import run_suite
from cmbench.suite import load_suite
from cmbench.validate import ConfigError

SHAPE, DIM = (3, 4, 4), 48
MIXTURE = {"random": {"count": 8, "seed": 0, "mean_scale": 0.7, "std": 0.15}}  # suites/gmm.yaml's, smaller images
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mixture_data():
    """The mixture model (CTM's σ range), 32 uint8 images drawn from it and their exact bits/dim."""
    mixture = mixture_from_spec(MIXTURE, DIM)
    model = GaussianMixtureModel(mixture, SHAPE)
    g = torch.Generator().manual_seed(0)
    components = torch.multinomial(mixture.weights, 32, replacement=True, generator=g)
    x = mixture.sample(components, torch.randn(32, DIM, generator=g, dtype=torch.float64))
    images = to_uint8(x.reshape(-1, *SHAPE))
    return model, images, exact_discrete_bpd(model, images)


def exact_discrete_bpd(model: GaussianMixtureModel, images: torch.Tensor) -> torch.Tensor:
    """−log₂ P(box)/D per image, the box [2v/256 − 1, 2(v + 1)/256 − 1) per value v (the bins the
    dequantiser fills), under the mixture convolved with N(0, σ_min²)."""
    m = model.mixture
    low = (2 * images.double() / 256 - 1).flatten(1)
    stds = (m.stds**2 + model.sigma_min**2).sqrt()
    normal = torch.distributions.Normal(0.0, 1.0)
    log_mass = torch.stack([
        m.weights[k].log() + torch.log(normal.cdf((low + 2 / 256 - m.means[k]) / stds[k])
                                       - normal.cdf((low - m.means[k]) / stds[k])).sum(1)
        for k in range(m.num_components)
    ], 1)
    return -torch.logsumexp(log_mass, 1) / (images[0].numel() * math.log(2))


def ctm_loop(denoise, images: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """sony/ctm code/eval_bpd.py ``likelihood(..., mode='correct')`` step by step, as written there:
    float32 σ range tensors, the schedule s(t) = σ_min^{1/ρ} + t(σ_max^{1/ρ} − σ_min^{1/ρ}) whose
    ρ-th power is the noise level, a drift −½·g²(t)·score with g²(t) = 2ρσ²(σ_max^{1/ρ} −
    σ_min^{1/ρ})/s(t), the divergence recomputed from a second drift call, and the residual at
    σ = s(t_min) (no ** ρ) as q_recon − p_entropy. Draws: probe, start noise, residual noise."""
    lo, hi = torch.tensor([0.002]), torch.tensor([80.0])
    rho, t_min = 7, 1e-3
    batch, n = images.shape[0], images[0].numel()

    def s(t):
        return lo ** (1.0 / rho) + t * (hi ** (1.0 / rho) - lo ** (1.0 / rho))

    def drift(x, t):
        std = s(t) ** rho
        g2 = 2.0 * rho * std**2 * (hi ** (1.0 / rho) - lo ** (1.0 / rho)) / s(t)
        score = (denoise(x, std).to(torch.float64) - x) / (std**2)[:, None, None, None]
        return -g2[:, None, None, None] * score / 2.0

    probe = torch.randint(0, 2, images.shape, generator=generator).float() * 2 - 1.0

    def ode(t, y):
        x = torch.from_numpy(y[:-batch].reshape(images.shape)).type(torch.float32)
        times = torch.ones(batch) * t
        f = drift(x, times).numpy().reshape(-1)
        with torch.enable_grad():
            x.requires_grad_(True)
            grad = torch.autograd.grad(torch.sum(drift(x, times) * probe), x)[0]
        return np.concatenate([f, torch.sum(grad * probe, dim=(1, 2, 3)).numpy()])

    start = images + (s(t_min) ** rho)[:, None, None, None] * torch.randn(images.shape, generator=generator)
    y = solve_ivp(ode, (t_min, 1.0), np.concatenate([start.numpy().reshape(-1), np.zeros(batch)]),
                  rtol=1e-3, atol=1e-3, method="RK45").y[:, -1]
    z_end = torch.from_numpy(y[:-batch].reshape(images.shape)).type(torch.float32)
    delta = torch.from_numpy(y[-batch:]).type(torch.float32)
    prior = -n / 2.0 * torch.log(2 * np.pi * hi**2) - torch.sum(z_end**2, dim=(1, 2, 3)) / (2 * hi**2)

    std = s(t_min)
    noisy = images + std[:, None, None, None] * torch.randn(images.shape, generator=generator)
    q_mean = noisy + std**2 * (denoise(noisy, std).to(torch.float64) - noisy) / std**2
    p_entropy = n / 2.0 * (np.log(2 * np.pi) + 2 * torch.log(std) + 1.0)
    q_recon = n / 2.0 * (np.log(2 * np.pi) + 2 * torch.log(std)) + 0.5 / std**2 * torch.square(images - q_mean).sum((1, 2, 3))
    log_p = prior + delta - (q_recon - p_entropy)
    return (-log_p / np.log(2) / n + 7.0).numpy()


def test_ctm_eval_bpd_matches_a_transcription_of_ctms_loop(mixture_data):
    model, images, _ = mixture_data
    x = ctm_scale(images[:8])
    ours = ctm_eval_bpd_log_likelihood(model, x, generator=torch.Generator().manual_seed(4))
    theirs = ctm_loop(lambda xs, sigma: model.denoise(xs, sigma), x, torch.Generator().manual_seed(4))
    assert ours.bits_per_dim(DIM).numpy() == pytest.approx(theirs, abs=2e-5)
    assert float(np.std(theirs)) > 0.01  # the images really differ: a constant shift would show
    assert 20 < ours.nfe < 500


def test_ctm_constants_are_the_official_ones():
    protocol = CTMEvalBPD()
    t = torch.tensor([1e-3, 1.0])
    assert (protocol.root(t) ** 7).tolist() == pytest.approx([0.00205, 80.0], rel=2e-3)  # the ODE's σ range
    assert float(protocol.root(t[:1])) == pytest.approx(0.413, abs=1e-3)  # the residual's σ (no ** ρ)
    assert (protocol.rtol, protocol.atol) == (1e-3, 1e-3)
    assert ctm_scale(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]  # v/127.5 − 1, no noise


def test_exact_protocol_agrees_with_the_analytic_value_and_ctm_eval_bpd_is_below(mixture_data):
    """On a mixture of 8 Gaussians (std 0.15, means in [−0.7, 0.7]^48; suites/gmm.yaml's recipe),
    exact is within 0.02 bits/dim of the analytic bits/dim; ctm_eval_bpd is ≈ 0.63 below it:
    σ²/(0.15² + σ²)/(2 ln 2) = 0.637 from the residual's σ = 0.413, less 0.005 from scoring
    v/127.5 − 1 instead of the dequantised box (docs/likelihood.md: −0.631 ± 0.001 on 1024 images
    of suites/gmm.yaml's 3×8×8 mixture)."""
    model, images, analytic = mixture_data
    common = {"continuous": False, "passes": 1, "batch_size": 32, "seed": 0, "device": CPU, "progress": False}
    exact = evaluate_nll(model, images[:16], ExactProtocol(divergence="exact"), **common)
    assert exact["bpd"] == pytest.approx(float(analytic[:16].mean()), abs=0.02)
    ctm = evaluate_nll(model, images, CTMEvalBPD(), **common)
    offset = ctm["bpd"] - float(analytic.mean())
    assert offset == pytest.approx(-0.632, abs=0.05)
    assert offset < -10 * ctm["stderr"]  # more than ten standard errors of the mean below
    assert ctm["protocol"] == "ctm_eval_bpd" and exact["protocol"] == "exact"


def test_ctm_eval_bpd_refuses_continuous_data_and_solver_settings(mixture_data):
    model, images, _ = mixture_data
    with pytest.raises(ValueError, match="uint8"):
        evaluate_nll(model, ctm_scale(images).double(), CTMEvalBPD(), continuous=True, passes=1, batch_size=8, seed=0,
                     device=CPU, progress=False)
    with pytest.raises(ValueError, match="fixes rtol.*leave it out"):
        make_protocol("ctm_eval_bpd", rtol=1e-5)
    with pytest.raises(ValueError, match="accepted: exact, ctm_eval_bpd"):
        make_protocol("score_sde")


def write_suite(tmp_path, likelihood: dict):
    mixture = mixture_from_spec(MIXTURE, DIM)
    g = torch.Generator().manual_seed(2)
    x = mixture.sample(torch.randint(0, 8, (6,), generator=g), torch.randn(6, DIM, generator=g, dtype=torch.float64))
    np.savez(tmp_path / "data.npz", to_uint8(x.reshape(-1, *SHAPE)).permute(0, 2, 3, 1).numpy())
    suite = {"name": "protocols", "num_samples": 8, "metrics": ["fid"], "features": {"extractor": "pixels"},
             "reference": {"model": "mix", "num_images": 16},
             "models": {"mix": {"family": "gmm", "image_shape": list(SHAPE), **MIXTURE}},
             "runs": [{"model": "mix", "sampler": "euler", "nfe": [1]}], "likelihood": {"data": "data.npz", **likelihood}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_unknown_protocol_is_a_config_error_naming_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_suite(write_suite(tmp_path, {"protocol": "score_sde"}))
    message = str(err.value)
    assert "likelihood.protocol" in message and "'score_sde'" in message and "exact, ctm_eval_bpd" in message
    with pytest.raises(ConfigError, match="likelihood.rtol.*protocol ctm_eval_bpd fixes rtol"):
        load_suite(write_suite(tmp_path, {"protocol": "ctm_eval_bpd", "rtol": 1e-5}))


def test_the_default_protocol_leaves_the_parsed_block_and_fingerprints_as_before(tmp_path):
    plain = load_suite(write_suite(tmp_path, {}))
    named = load_suite(write_suite(tmp_path, {"protocol": "exact"}))
    ctm = load_suite(write_suite(tmp_path, {"protocol": "ctm_eval_bpd"}))
    assert set(plain.likelihood) == {"data", "passes", "divergence", "seed", "rtol", "atol", "batch_size"}
    assert named.likelihood == plain.likelihood
    assert ctm.likelihood == {"data": "data.npz", "passes": 1, "seed": 0, "batch_size": 256, "protocol": "ctm_eval_bpd"}
    row = plain.rows[0]
    assert named.row_fingerprint(row) == plain.row_fingerprint(row) != ctm.row_fingerprint(row)


def test_rows_record_the_protocol_beside_bpd(tmp_path):
    run_suite(load_suite(write_suite(tmp_path, {"protocol": "ctm_eval_bpd"})), tmp_path / "out", device="cpu",
              progress=False)
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert row["bpd_protocol"] == "ctm_eval_bpd" and math.isfinite(row["bpd"]) and row["bpd_nfe"] > 10
    assert "NLL (bits/dim) [ctm_eval_bpd]" in (tmp_path / "out" / "report.html").read_text()


def test_nll_json_records_the_protocol_and_refuses_its_fixed_settings(tmp_path, capsys):
    path = write_suite(tmp_path, {})
    argv = ["nll", str(path), "--model", "mix", "--data", str(tmp_path / "data.npz"), "--passes", "1", "--quiet"]
    assert main(argv + ["--protocol", "ctm_eval_bpd"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "ctm_eval_bpd" and result["rtol"] == 1e-3 and result["rho"] == 7
    assert result["num_images"] == 6 and math.isfinite(result["bpd"])
    assert main(argv + ["--protocol", "ctm_eval_bpd", "--divergence", "exact"]) == 2
    assert "fixes divergence" in capsys.readouterr().err
