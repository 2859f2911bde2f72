"""PF-ODE likelihood against the analytic mixture's exact density."""

from __future__ import annotations

import math

import pytest
import torch

from cmbench.likelihood import dequantise, pf_ode_log_likelihood
from cmbench.models import GaussianMixture, GaussianMixtureModel, MissingMapError, NoiseRange
from cmbench.models.networks import ConsistencyModel
from cmbench.nets import build_network

SHAPE, DIM, SIGMA_MIN = (2, 4, 4), 32, 0.01


@pytest.fixture(scope="module")
def mixture_and_points():
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(3, DIM, generator=g, dtype=torch.float64) * 2 - 1) * 0.6
    mixture = GaussianMixture.create(means, [0.2, 0.3, 0.25], [1, 2, 1])
    model = GaussianMixtureModel(mixture, SHAPE, noise_range=NoiseRange(SIGMA_MIN, 80.0))
    comps = torch.multinomial(mixture.weights, 24, replacement=True, generator=g)
    x = mixture.sample(comps, torch.randn(24, DIM, generator=g, dtype=torch.float64)).reshape(24, *SHAPE)
    exact = mixture.log_prob(x.reshape(24, -1), torch.full((24,), SIGMA_MIN, dtype=torch.float64))
    return model, x, exact


def test_exact_trace_matches_the_mixture_density(mixture_and_points):
    """log p of the mixture convolved with N(0, σ_min²): within 0.01 nats/dim on average."""
    model, x, exact = mixture_and_points
    result = pf_ode_log_likelihood(model, x, divergence="exact")
    error = (result.nats - exact) / DIM
    assert float(error.abs().mean()) < 0.01
    assert result.nfe > 10
    # A wrong prior (σ_max off by 2×) would be caught: it shifts log p by ~D·ln 2.
    assert float((exact / DIM).std()) > 0.01  # the points really differ in density


def test_hutchinson_is_unbiased_within_three_standard_errors(mixture_and_points):
    model, x, exact = mixture_and_points
    result = pf_ode_log_likelihood(model, x, divergence="hutchinson", generator=torch.Generator().manual_seed(1))
    error = (result.nats - exact) / DIM
    standard_error = float(error.std()) / math.sqrt(len(error))
    assert standard_error > 0  # a stochastic estimate
    assert abs(float(error.mean())) < 3 * standard_error
    again = pf_ode_log_likelihood(model, x, divergence="hutchinson", generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.nats, result.nats)  # one fixed probe per datum: reproducible


def test_bits_per_dim_is_the_offset_negative_log_likelihood(mixture_and_points):
    model, x, _ = mixture_and_points
    result = pf_ode_log_likelihood(model, x[:4], divergence="exact")
    independent = [-float(n) / (DIM * math.log(2)) + 7.0 for n in result.nats]
    assert result.bits_per_dim(DIM).tolist() == pytest.approx(independent, rel=1e-12)
    assert result.nats_per_dim(DIM).tolist() == pytest.approx([float(n) / DIM for n in result.nats])


def test_models_without_score_access_are_refused():
    net = build_network("toy_mlp", {"img_resolution": 4, "img_channels": 2, "hidden": 16, "depth": 1, "emb_dim": 8})
    cd = ConsistencyModel(net, SHAPE, family="cd")
    with pytest.raises(MissingMapError, match="cd models have no 'denoise'.*EDM, CTM, PD teachers"):
        pf_ode_log_likelihood(cd, torch.zeros(1, *SHAPE))


def test_unknown_divergence_is_refused(mixture_and_points):
    model, x, _ = mixture_and_points
    with pytest.raises(ValueError, match="exact, hutchinson"):
        pf_ode_log_likelihood(model, x, divergence="trace")


def test_dequantise_fills_each_grey_level_bin():
    images = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).reshape(1, 1, 2, 2).repeat(500, 1, 1, 1)
    x = dequantise(images, torch.Generator().manual_seed(0))
    lower = 2.0 * images.double() / 256 - 1
    assert bool(((x >= lower) & (x < lower + 2.0 / 256)).all())
    assert float(x[:, 0, 0, 0].mean()) == pytest.approx(-1 + 1 / 256, abs=2e-4)  # bin centre on average
    with pytest.raises(ValueError, match="uint8"):
        dequantise(images.float())
