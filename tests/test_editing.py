"""Zero-shot editing chains: the tasks' replacement against a transcription of openai's routines,
the algorithms on the analytic mixture (exact posterior, exact consistency function), and seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmbench.editing.tasks import LUMINANCE, make_task
from cmbench.models.base import NoiseRange
from cmbench.models.gmm import GaussianMixture, GaussianMixtureModel
from cmbench.samplers import get_sampler
from cmbench.samplers.schedules import karras_sigmas
from cmbench.seeds import SampleNoise

SHAPE = (3, 8, 8)


# --- a transcription of openai/consistency_models' iterative_* replacement (cm/karras_diffusion.py) ---

def _official_basis(vector: np.ndarray) -> np.ndarray:
    """The orthogonal matrix those routines build: QR of the identity with ``vector`` (normalised)
    as its first column, signs flipped so that the first column sums positive."""
    matrix = np.eye(len(vector))
    matrix[:, 0] = vector / np.linalg.norm(vector)
    q = np.linalg.qr(matrix)[0]
    return -q if q[:, 0].sum() < 0 else q


def _official_colour_mix(known: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Coefficients in the basis; the first (luminance) from ``known``, the rest from ``free``; back."""
    q = _official_basis(np.asarray(LUMINANCE))
    a, b = np.einsum("bchw,cd->bdhw", known, q), np.einsum("bchw,cd->bdhw", free, q)
    mixed = b.copy()
    mixed[:, 0] = a[:, 0]
    return np.einsum("bdhw,cd->bchw", mixed, q)


def _official_patch_mix(known: np.ndarray, free: np.ndarray, patch: int) -> np.ndarray:
    """Per patch (flattened row-major), the first coefficient in the constant-first basis from ``known``."""
    q = _official_basis(np.ones(patch * patch))
    n, c, h, w = known.shape

    def to_patches(x):
        return x.reshape(n, c, h // patch, patch, w // patch, patch).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, -1, patch * patch)

    a, b = to_patches(known) @ q, to_patches(free) @ q
    mixed = b.copy()
    mixed[..., 0] = a[..., 0]
    back = (mixed @ q.T).reshape(n, c, h // patch, w // patch, patch, patch).transpose(0, 1, 2, 4, 3, 5)
    return back.reshape(n, c, h, w)


@pytest.mark.parametrize("kind,params,official", [
    ("colorization", {}, _official_colour_mix),
    ("superres", {"factor": 2}, lambda a, b: _official_patch_mix(a, b, 2)),
    ("superres", {"factor": 4}, lambda a, b: _official_patch_mix(a, b, 4)),
])
def test_replacement_matches_the_official_orthogonal_construction(kind, params, official):
    truth = torch.rand(4, *SHAPE, dtype=torch.float64) * 2 - 1
    free = torch.randn(4, *SHAPE, dtype=torch.float64)
    measurement = make_task("t", kind, params).measure(truth, SampleNoise(range(4)))
    expected_y = official(truth.numpy(), np.zeros_like(truth.numpy()))  # replacement(images, zeros)
    np.testing.assert_allclose(measurement.observed.numpy(), expected_y, atol=1e-12)
    mixed = measurement.replace(free, 0.0, torch.zeros_like(free))
    np.testing.assert_allclose(mixed.numpy(), official(truth.numpy(), free.numpy()), atol=1e-12)
    assert float(measurement.residual(mixed).max()) < 1e-14
    assert float(measurement.residual(free).min()) > 0.01


def test_inpainting_masks():
    truth = torch.rand(3, *SHAPE, dtype=torch.float64) * 2 - 1
    box = make_task("b", "inpainting", {"mask": "box", "size": 0.5}).measure(truth, SampleNoise(range(3)))
    missing = (box.project(torch.ones_like(truth)) == 0)
    assert missing[:, :, 2:6, 2:6].all() and missing.sum() == 3 * 3 * 16  # the centre 4×4 of every channel
    half = make_task("h", "inpainting", {"mask": "half", "side": "bottom"}).measure(truth, SampleNoise(range(3)))
    assert (half.project(torch.ones_like(truth))[:, :, 4:] == 0).all() and (half.observed[:, :, :4] == truth[:, :, :4]).all()
    random = make_task("r", "inpainting", {"mask": "random", "missing": 0.25}).measure(truth, SampleNoise([7, 8, 7]))
    holes = random.project(torch.ones_like(truth))[:, 0] == 0
    assert holes.flatten(1).sum(1).tolist() == [16, 16, 16]  # exactly round(0.25 · 64) per image
    assert torch.equal(holes[0], holes[2]) and not torch.equal(holes[0], holes[1])  # drawn from the image's seed
    shown = make_task("f", "inpainting", {"fill": -1.0}).measure(truth, SampleNoise(range(3))).shown
    assert (shown[:, :, 2:6, 2:6] == -1).all()


def test_colorization_shows_the_luminance():
    truth = torch.rand(2, *SHAPE, dtype=torch.float64) * 2 - 1
    shown = make_task("c", "colorization", {}).measure(truth, SampleNoise(range(2))).shown
    grey = sum(w * truth[:, i] for i, w in enumerate(LUMINANCE))
    for channel in range(3):
        torch.testing.assert_close(shown[:, channel], grey)


# --- the algorithms on the analytic mixture ---

def _two_blobs(std: float = 0.1) -> GaussianMixtureModel:
    """Two well-separated components: every value +0.5, or every value −0.5."""
    dim = math.prod(SHAPE)
    mixture = GaussianMixture.create(torch.stack([torch.full((dim,), 0.5), torch.full((dim,), -0.5)]), [std, std])
    return GaussianMixtureModel(mixture, SHAPE, ode_steps=64)


def _edit(model, task, truth, sampler: str, nfe: int, options=None, seeds=None):
    seeds = list(range(len(truth))) if seeds is None else seeds
    noise = SampleNoise(seeds)
    latents = noise.randn(model.image_shape)
    measurement = task.measure(truth, noise)
    run = get_sampler(sampler)
    sigmas = run.schedule(task.noise_range(model.noise_range), nfe, options or {})
    images, made = run.run(model, latents, sigmas, noise=noise, labels=None, options=options or {}, chain=measurement)
    return images, measurement, made


def _posterior_component(model: GaussianMixtureModel, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """argmax_k p(k | the known values): w_k N(y_K; μ_k,K, s_k² I), computed exactly."""
    mix, keep = model.mixture, known.flatten(1)
    flat = y.flatten(1)
    sq = (((flat[:, None, :] - mix.means[None]) ** 2) * keep[:, None, :]).sum(-1)
    count = keep.sum(1, keepdim=True)
    log_post = mix.weights.log()[None] - count * torch.log(mix.stds)[None] - 0.5 * sq / mix.stds[None] ** 2
    return log_post.argmax(1)


POINTS = {"time_points": {3: [80.0, 1.0, 0.2, 0.002]}}


@pytest.mark.parametrize("sampler,nfe,options", [("cm_multistep", 3, {"clip_denoised": False, **POINTS}),
                                                 ("ctm_gamma", 3, {"gamma": 0.0, **POINTS}), ("heun", 35, {})])
def test_inpainting_keeps_the_known_part_and_lands_in_the_implied_component(sampler, nfe, options):
    model = _two_blobs()
    components = torch.tensor([0, 1, 1, 0, 1, 0])
    truth = model.mixture.sample(components, torch.randn(6, model.mixture.dim, dtype=torch.float64)).reshape(6, *SHAPE)
    task = make_task("box", "inpainting", {"mask": "box", "size": 0.5})
    images, measurement, _ = _edit(model, task, truth, sampler, nfe, options)
    assert float(measurement.residual(images).max()) < 1e-12  # the known part is kept exactly
    known = measurement.project(torch.ones_like(truth))
    implied = _posterior_component(model, measurement.observed, known)
    assert implied.tolist() == components.tolist()
    hole = (images * (1 - known)).flatten(1).sum(1) / (1 - known).flatten(1).sum(1)  # the filled-in values' mean
    landed = (hole < 0).long()  # component 1 is the −0.5 one
    assert landed.tolist() == implied.tolist()
    # The component is what the exact posterior pins down; within it the replacement chains are
    # approximate samplers (the filled-in values' mean is μ_k = ±0.5 under the exact posterior).
    assert float((hole.abs() - 0.5).abs().max()) < 0.15


def test_colorization_keeps_the_luminance_exactly():
    model = _two_blobs()
    truth = model.mixture.sample(torch.tensor([0, 1]), torch.randn(2, model.mixture.dim, dtype=torch.float64))
    task = make_task("c", "colorization", {})
    images, measurement, nfe = _edit(model, task, truth.reshape(2, *SHAPE), "cm_multistep", 3, {"clip_denoised": False})
    assert nfe == 3 and float(measurement.residual(images).max()) < 1e-12


def test_denoising_with_the_exact_consistency_function_is_the_ode_solution():
    model = _two_blobs(std=0.2)
    truth = model.mixture.sample(torch.tensor([0, 1, 0]), torch.randn(3, model.mixture.dim, dtype=torch.float64))
    task = make_task("d", "denoising", {"sigma": 0.8})
    images, measurement, nfe = _edit(model, task, truth.reshape(3, *SHAPE), "cm_multistep", 1, {"clip_denoised": False})
    sigma = torch.full((3,), 0.8, dtype=torch.float64)
    ode = model.jump(measurement.observed, sigma, torch.full_like(sigma, model.sigma_min))
    assert nfe == 1 and torch.equal(images, ode)  # one f evaluation from y at its own σ
    heun, _, _ = _edit(model, task, truth.reshape(3, *SHAPE), "heun", 399)  # the same ODE, 200 Heun steps to 0
    torch.testing.assert_close(images, heun, atol=2e-3, rtol=0)


def test_ctm_with_gamma_one_is_cm_algorithm_4():
    model = _two_blobs()
    truth = model.mixture.sample(torch.tensor([0, 1]), torch.randn(2, model.mixture.dim, dtype=torch.float64)).reshape(2, *SHAPE)
    task = make_task("h", "inpainting", {"mask": "half"})
    cm, _, _ = _edit(model, task, truth, "cm_multistep", 3, {"clip_denoised": False})
    ctm, _, _ = _edit(model, task, truth, "ctm_gamma", 3, {"gamma": 1.0})
    torch.testing.assert_close(cm, ctm, atol=1e-12, rtol=0)


def test_cm_editing_matches_a_transcription_of_the_official_loop():
    """openai's iterative_inpainting with ts as Karras indices: x0 = clamp(f(x, t)); known part put
    back; x = x0 + √(next_t² − t_min²)·z, next_t clipped to [t_min, t_max]; starting (Algorithm 4) at
    y + t_0·z."""
    model = _two_blobs()
    truth = model.mixture.sample(torch.tensor([0, 1]), torch.randn(2, model.mixture.dim, dtype=torch.float64)).reshape(2, *SHAPE)
    task = make_task("h", "inpainting", {"mask": "half", "side": "left"})
    ts, steps, t_min, t_max = [0, 17, 30, 39], 40, model.sigma_min, model.sigma_max
    images, measurement, nfe = _edit(model, task, truth, "cm_multistep", 3,
                                     {"time_points": {3: ts}, "time_point_units": "karras_index", "karras_steps": steps})
    noise = SampleNoise(range(2))
    z = noise.randn(SHAPE).to(torch.float64)
    mask = measurement.project(torch.ones_like(truth))
    grid = karras_sigmas(steps, t_min, t_max)
    x = measurement.observed + float(grid[ts[0]]) * z
    for i in range(len(ts) - 1):
        t = float(grid[ts[i]])
        x0 = model.consistency(x, torch.full((2,), t, dtype=torch.float64)).clamp(-1, 1)
        x0 = measurement.observed * mask + x0 * (1 - mask)
        next_t = min(max(float(grid[ts[i + 1]]), t_min), t_max)
        x = x0 + noise.randn(SHAPE, dtype=torch.float64) * math.sqrt(next_t**2 - t_min**2)
    assert nfe == 3
    torch.testing.assert_close(images, x, atol=1e-12, rtol=0)


def test_an_edit_depends_on_its_seed_alone():
    model = _two_blobs()
    truth = model.mixture.sample(torch.tensor([0, 1, 0, 1]), torch.randn(4, model.mixture.dim, dtype=torch.float64)).reshape(4, *SHAPE)
    task = make_task("r", "inpainting", {"mask": "random", "missing": 0.4})
    together, _, _ = _edit(model, task, truth, "ctm_gamma", 2, {"gamma": 0.5}, seeds=[10, 11, 12, 13])
    alone, _, _ = _edit(model, task, truth[2:3], "ctm_gamma", 2, {"gamma": 0.5}, seeds=[12])
    torch.testing.assert_close(together[2:3], alone, atol=1e-12, rtol=0)


def test_start_sigma_tasks_span_their_own_grid():
    task = make_task("s", "stroke", {"sigma": 3.0, "patch": 2})
    grid = get_sampler("heun").schedule(task.noise_range(NoiseRange()), 5, {})
    assert float(grid[0]) == 3.0 and float(grid[-1]) == 0.0
    with pytest.raises(ValueError, match="outside the model's noise range"):
        make_task("d", "denoising", {"sigma": 100.0}).check(SHAPE, NoiseRange())


@pytest.mark.parametrize("kind,params,shape,message", [
    ("colorization", {}, (1, 8, 8), "needs RGB images"),
    ("superres", {"factor": 3}, (3, 8, 8), "does not divide 8×8"),
    ("stroke", {"patch": 5}, (3, 8, 8), "does not divide"),
    ("inpainting", {"mask": "box", "size": 0.05}, (3, 8, 8), "is empty"),
])
def test_a_task_the_images_cannot_take_is_refused(kind, params, shape, message):
    with pytest.raises(ValueError, match=message):
        make_task("t", kind, params).check(shape, NoiseRange())


@pytest.mark.parametrize("kind,params,message", [
    ("inpainting", {"mask": "circle"}, "box or random or half"),
    ("inpainting", {"mask": "box", "missing": 0.3}, "do nothing with mask: box"),
    ("superres", {"factor": 1}, "an integer ≥ 2"),
    ("superres", {"factor": 2.0}, "an integer ≥ 2"),
    ("denoising", {"sigma": -1}, "a positive number"),
    ("deblur", {}, "unknown task 'deblur'"),
    ("colorization", {"weights": [1, 1, 1]}, "no parameter"),
])
def test_bad_task_parameters_are_named(kind, params, message):
    with pytest.raises(ValueError, match=message):
        make_task("t", kind, params)


def test_samplers_without_a_replacement_step_refuse_a_chain():
    model = _two_blobs()
    task = make_task("b", "inpainting", {})
    with pytest.raises(ValueError, match="no replacement step for editing; editing samplers: heun, euler, cm_multistep, ctm_gamma"):
        _edit(model, task, torch.zeros(1, *SHAPE, dtype=torch.float64), "ddim", 2)
