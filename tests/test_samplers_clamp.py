"""Clamping the denoiser output, as openai/consistency_models' ``karras_sample`` does.

openai's ``karras_sample(clip_denoised=True)`` (cm/karras_diffusion.py) wraps the model in a
denoiser callable that clamps D(x; σ) to [−1, 1] on every call, hands that callable to the
chosen loop (``sample_heun``, ``sample_euler``, ``sample_progdist``), and clamps the loop's
final output to [−1, 1] whatever ``clip_denoised`` says. Below, those loops are restated from
the official code (not copied) and run on a denoiser whose raw output leaves [−1, 1]; cmbench's
samplers with ``clip_denoised`` must agree with them to float64 rounding, and without it must
not. The paper suites whose EDM-teacher rows the openai / sony scripts sample must clamp; the
EDM suites, sampled by NVlabs/edm's ``edm_sampler`` (which never clamps), must not.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cmbench.models import GaussianMixture, GaussianMixtureModel, NoiseRange
from cmbench.models.base import ModelAdapter
from cmbench.rows import sampler_label as _label
from cmbench.samplers import get_sampler
from cmbench.seeds import SampleNoise
from cmbench.suite import load_suite

SHAPE = (1, 2, 2)
B = 64
SUITES = Path(__file__).resolve().parent.parent / "suites"


class OutOfRangeMixture(ModelAdapter):
    """The exact denoiser of a two-component mixture whose means lie partly outside [−1, 1]: at
    small σ its output leaves [−1, 1] (as a trained network's may), at large σ it does not."""

    family = "edm"
    maps = frozenset({"denoise"})

    def __init__(self):
        super().__init__(SHAPE, 0, NoiseRange())
        means = [[-1.4, 0.9, 0.3, 1.2], [1.1, -0.5, -1.3, 0.2]]
        self.inner = GaussianMixtureModel(GaussianMixture.create(means, [0.3, 0.4], [0.4, 0.6]), SHAPE)

    def denoise(self, x, sigma, labels=None):
        return self.inner.denoise(x, sigma, labels)


# ----------------------------------------------------------------------------- the official loops


def official_karras_grid(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``get_sigmas_karras``: n points from σ_max to σ_min evenly spaced in σ^{1/ρ}, then a zero
    (restated in float64; the official code builds it in float32)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def official_denoiser(model, clip: bool, clip_second_stage: bool = True):
    """karras_sample's callable; ``clip_second_stage=False`` is a deliberate mutant (see below)."""
    record = {"calls": 0, "max_abs": 0.0}  # evaluations, and the largest raw |D| seen

    def denoiser(x, sigma, stage: int = 1):
        out = model.denoise(x, torch.full((x.shape[0],), float(sigma), dtype=torch.float64))
        record["calls"] += 1
        record["max_abs"] = max(record["max_abs"], float(out.abs().max()))
        return out.clamp(-1, 1) if clip and (stage == 1 or clip_second_stage) else out

    return denoiser, record


def official_heun(denoiser, x, sigmas, draw, s_churn=0.0, s_min=0.0, s_max=math.inf, s_noise=1.0):
    """``sample_heun`` (its s_tmin / s_tmax are cmbench's s_min / s_max): a noise draw every step
    (used only when γ > 0), Euler on the last step."""
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / steps, 2**0.5 - 1) if s_min <= sigma <= s_max else 0.0
        eps = draw(x) * s_noise
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        slope = (x - denoiser(x, sigma_hat)) / sigma_hat
        step = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + slope * step
        else:
            x_euler = x + slope * step
            slope_next = (x_euler - denoiser(x_euler, sigma_next, stage=2)) / sigma_next
            x = x + (slope + slope_next) / 2 * step
    return x


def official_euler(denoiser, x, sigmas):
    """``sample_euler``: one evaluation per step, down to the trailing zero."""
    for i in range(len(sigmas) - 1):
        sigma = float(sigmas[i])
        x = x + (x - denoiser(x, sigma)) / sigma * (float(sigmas[i + 1]) - sigma)
    return x


def official_progdist(denoiser, x, sigmas):
    """``sample_progdist``: drops the trailing zero, then Euler down to σ_min."""
    sigmas = sigmas[:-1]
    return official_euler(denoiser, x, sigmas)


def official_karras_sample(model, latents, sampler: str, steps: int, *, clip: bool, clip_second_stage=True, **churn):
    """``karras_sample`` for heun / euler / progdist: grid, x_T = σ_max·z, clamped denoiser,
    the loop, and the final clamp. Returns the images and the denoiser's record."""
    n = steps + 1 if sampler == "progdist" else steps
    sigmas = official_karras_grid(n, 0.002, 80.0)
    denoiser, record = official_denoiser(model, clip, clip_second_stage)
    x = latents * 80.0
    if sampler == "heun":
        x = official_heun(denoiser, x, sigmas, SampleNoise(range(B)).randn_like, **churn)
    elif sampler == "euler":
        x = official_euler(denoiser, x, sigmas)
    else:
        x = official_progdist(denoiser, x, sigmas)
    return x.clamp(-1, 1), record


def cmbench_sample(model, latents, sampler: str, nfe: int, options: dict):
    """cmbench's sampler, its noise from the same per-sample streams as the official heun's."""
    chosen = get_sampler(sampler)
    sigmas = chosen.schedule(model.noise_range, nfe, options)
    return chosen.run(model, latents, sigmas, noise=SampleNoise(range(B)), labels=None, options=options)


def latents(seed: int = 3) -> torch.Tensor:
    return torch.randn((B, *SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (sampler, official steps, cmbench NFE, churn options)
CASES = [
    ("heun", 5, 9, {}),
    ("heun", 2, 3, {}),
    ("heun", 6, 11, {"s_churn": 4.0, "s_min": 0.05, "s_max": 50.0, "s_noise": 1.003}),
    ("euler", 6, 6, {}),
    ("progdist", 4, 4, {}),
    ("progdist", 1, 1, {}),
]


@pytest.mark.parametrize("sampler, steps, nfe, churn", CASES)
def test_clip_denoised_matches_the_official_loop(sampler, steps, nfe, churn):
    model, z = OutOfRangeMixture(), latents()
    want, record = official_karras_sample(model, z, sampler, steps, clip=True, **churn)
    got, got_nfe = cmbench_sample(model, z, sampler, nfe, {"clip_denoised": True, **churn})
    assert got_nfe == record["calls"] == nfe
    # karras_sample's final clamp: after a clamped last denoise it changes nothing beyond rounding
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler, steps, nfe, churn", [case for case in CASES if case[1] > 2])
def test_without_clip_denoised_the_outputs_differ_measurably(sampler, steps, nfe, churn):
    """The comparison above can fail: unclamped runs (cmbench's, or the official loop's own) land
    measurably far from the clamped official ones, and match the unclamped official loop up to
    its final clamp (which quantisation applies anyway). With one or two steps the denoiser is
    evaluated only where clamping it equals clamping the output, so those cases are left out."""
    model, z = OutOfRangeMixture(), latents()
    clamped, _ = official_karras_sample(model, z, sampler, steps, clip=True, **churn)
    unclamped, record = official_karras_sample(model, z, sampler, steps, clip=False, **churn)
    free, _ = cmbench_sample(model, z, sampler, nfe, {"clip_denoised": False, **churn})
    assert record["max_abs"] > 1.5  # the raw denoiser output does leave [−1, 1]
    assert float((free.clamp(-1, 1) - clamped).abs().max()) > 0.05
    torch.testing.assert_close(free.clamp(-1, 1), unclamped, rtol=0, atol=1e-12)


@pytest.mark.parametrize("churn", [{}, {"s_churn": 4.0, "s_min": 0.05, "s_max": 50.0}])
def test_heun_clamps_both_stages(churn):
    """A loop that clamps only the first Heun stage is told apart from the official one."""
    model, z = OutOfRangeMixture(), latents()
    both, _ = official_karras_sample(model, z, "heun", 5, clip=True, **churn)
    first_only, _ = official_karras_sample(model, z, "heun", 5, clip=True, clip_second_stage=False, **churn)
    got, _ = cmbench_sample(model, z, "heun", 9, {"clip_denoised": True, **churn})
    assert float((first_only - both).abs().max()) > 0.05
    torch.testing.assert_close(got, both, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler, steps, nfe", [("heun", 5, 9), ("euler", 6, 6), ("progdist", 4, 4)])
def test_grids_are_the_official_ones(sampler, steps, nfe):
    """heun / euler: get_sigmas_karras(steps) with its zero; progdist: steps + 1 points, zero dropped."""
    grid = get_sampler(sampler).schedule(NoiseRange(), nfe, {})
    official = official_karras_grid(steps + 1 if sampler == "progdist" else steps, 0.002, 80.0)
    if sampler == "progdist":
        official = official[:-1]
    torch.testing.assert_close(grid, official, rtol=1e-13, atol=0)


def test_defaults_follow_the_code_each_sampler_comes_from():
    """heun / euler: NVlabs/edm's edm_sampler never clamps; progdist exists only as openai's."""
    assert get_sampler("heun").with_defaults({})["clip_denoised"] is False
    assert get_sampler("euler").with_defaults({})["clip_denoised"] is False
    assert get_sampler("progdist").with_defaults({})["clip_denoised"] is True
    with pytest.raises(ValueError, match="clip_denoised = 1 is not accepted; expected true or false"):
        get_sampler("heun").with_defaults({"clip_denoised": 1})


# ----------------------------------------------------------------------------- the paper suites

CLAMPED_SUITES = ("cm_imagenet64", "cm_lsun_bedroom256", "cm_lsun_cat256", "ctm_imagenet64")
EDM_SUITES = ("edm_cifar10", "edm_imagenet64")


@pytest.mark.parametrize("name", CLAMPED_SUITES + EDM_SUITES)
def test_paper_suites_clamp_as_their_official_scripts_do(name):
    """openai's image_sample.py keeps clip_denoised=True; sony/ctm's image_sample.py forces it for
    --training_mode edm; NVlabs/edm's generate.py never clamps."""
    rows = [row for row in load_suite(SUITES / f"{name}.yaml").rows if row.sampler in ("heun", "euler", "progdist")]
    assert rows, f"{name} has no denoiser-sampled row"
    for row in rows:
        expected = name in CLAMPED_SUITES or row.sampler == "progdist"
        assert get_sampler(row.sampler).with_defaults(row.options)["clip_denoised"] is expected, row.row_id
        assert ("clip_denoised" in row.options) is (name in CLAMPED_SUITES), row.row_id


def test_a_clamped_heun_row_says_so_in_its_label():
    row = next(r for r in load_suite(SUITES / "cm_imagenet64.yaml").rows if r.sampler == "heun")
    assert row.options == {"clip_denoised": True}
    assert _label(row) == "heun clip_denoised=True"
    edm_row = next(r for r in load_suite(SUITES / "edm_cifar10.yaml").rows if r.sampler == "heun")
    assert "clip_denoised" not in _label(edm_row)
