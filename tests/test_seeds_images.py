"""Per-sample seeds (EDM's convention) and the uint8 quantisation (shared/reference/facts.md §2)."""

from __future__ import annotations

import pytest
import torch

from cmbench.images import from_uint8, to_uint8
from cmbench.models import GaussianMixture, GaussianMixtureModel
from cmbench.generate import generate_features
from cmbench.samplers import get_sampler
from cmbench.seeds import SampleNoise, seed_range

SHAPE = (1, 2, 2)


def conditional_mixture() -> GaussianMixtureModel:
    """Three equally weighted classes; the label picks the component."""
    means = [[-0.6, 0.4, -0.2, 0.5], [0.5, -0.3, 0.6, -0.1], [0.0, 0.8, -0.7, 0.2]]
    mixture = GaussianMixture.create(means, [0.2, 0.3, 0.25])
    return GaussianMixtureModel(mixture, SHAPE, class_conditional=True, ode_steps=16)


RUNS = {
    "cm_multistep": (3, {"clip_denoised": False}),
    "ctm_gamma": (3, {"gamma": 0.7}),
    "heun": (5, {"s_churn": 20.0}),
}


def generate(model, name: str, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch the way the runner draws it: latent, then label, then the sampler's noise."""
    nfe, options = RUNS[name]
    sampler = get_sampler(name)
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    noise = SampleNoise(seeds)
    latents = noise.randn(model.image_shape)
    labels = noise.randint(model.label_dim)
    images, _ = sampler.run(model, latents, sigmas, noise=noise, labels=labels, options=options)
    return images, labels


@pytest.mark.parametrize("name", sorted(RUNS))
def test_images_and_labels_do_not_depend_on_batching(name):
    model = conditional_mixture()
    seeds = seed_range(0, 10)
    full_images, full_labels = generate(model, name, seeds)
    assert full_labels.dtype == torch.int64 and set(full_labels.tolist()) == {0, 1, 2}
    parts = [generate(model, name, seeds[a:b]) for a, b in ((0, 3), (3, 6), (6, 10))]
    assert torch.equal(torch.cat([p[0] for p in parts]), full_images)
    assert torch.equal(torch.cat([p[1] for p in parts]), full_labels)
    # resuming at seed 5 reproduces rows 5..9
    tail_images, tail_labels = generate(model, name, seed_range(5, 5))
    assert torch.equal(tail_images, full_images[5:])
    assert torch.equal(tail_labels, full_labels[5:])
    # the images do depend on the seeds (and the sampler's noise on them)
    other, _ = generate(model, name, seed_range(100, 10))
    assert (other - full_images).abs().max() > 1e-3


def test_sampler_noise_depends_on_the_seed_not_only_the_latent():
    """With identical latents and labels, the stochastic steps still follow each sample's seed."""
    model = conditional_mixture()
    nfe, options = RUNS["cm_multistep"]
    sampler = get_sampler("cm_multistep")
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    latents = torch.zeros((4, *SHAPE))
    labels = torch.tensor([0, 1, 2, 0])
    a, _ = sampler.run(model, latents, sigmas, noise=SampleNoise([1, 2, 3, 4]), labels=labels, options=options)
    b, _ = sampler.run(model, latents, sigmas, noise=SampleNoise([1, 2, 3, 5]), labels=labels, options=options)
    assert torch.equal(a[:3], b[:3])
    assert (a[3] - b[3]).abs().max() > 1e-3


def test_runner_generate_features_is_batch_size_independent():
    model = conditional_mixture()
    sampler = get_sampler("cm_multistep")
    nfe, options = RUNS["cm_multistep"]
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    common = dict(device=torch.device("cpu"), quantisation="round", extractor=None, layers=(), keep_images=10)
    _, grid_full, nfe_full, _ = generate_features(model, sampler, sigmas, options, seed_range(0, 10), batch_size=10, **common)
    _, grid_split, nfe_split, _ = generate_features(model, sampler, sigmas, options, seed_range(0, 10), batch_size=3, **common)
    assert nfe_full == nfe_split == nfe
    assert grid_full.dtype == torch.uint8 and grid_full.shape == (10, *SHAPE)
    assert torch.equal(grid_full, grid_split)
    images, _ = generate(model, "cm_multistep", seed_range(0, 10))
    assert torch.equal(grid_full, to_uint8(images, "round"))


@pytest.mark.parametrize("seed", [0, 1, 7, 123456])
def test_sample_noise_matches_a_generator_per_seed(seed):
    shape = (3, 4, 4)
    noise = SampleNoise([seed, seed + 1])
    draws = noise.randn(shape)
    assert draws.shape == (2, *shape) and draws.dtype == torch.float32
    for row, s in enumerate((seed, seed + 1)):
        assert torch.equal(draws[row], torch.randn(shape, generator=torch.Generator().manual_seed(s)))
    # draw order per sample: latent, then label, then sampler noise, each from the same stream
    gen = torch.Generator().manual_seed(seed)
    torch.randn(shape, generator=gen)
    label = torch.randint(10, size=(), generator=gen)
    later = torch.randn(shape, dtype=torch.float64, generator=gen)
    assert int(noise.randint(10)[0]) == int(label)
    x = torch.zeros((2, *shape), dtype=torch.float64)
    like = noise.randn_like(x)
    assert like.dtype == torch.float64
    assert torch.equal(like[0], later)


def test_sample_noise_rows_do_not_depend_on_neighbours():
    alone = SampleNoise([42]).randn((5,))
    together = SampleNoise([7, 42, 9]).randn((5,))
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])
    assert list(seed_range(5, 3)) == [5, 6, 7]
    assert len(SampleNoise(seed_range(0, 4))) == 4


# ----------------------------------------------------------------------------- quantisation


def test_to_uint8_hand_picked_values():
    x = torch.tensor([-1.0, 1.0, 21 / 255 - 1, 0.0, -1.5, 1.5, -1.0 + 1e-9, 1.0 - 1e-9], dtype=torch.float64)
    # 127.5(x + 1) = 0, 255, 10.5, 127.5, (clamped), (clamped), just above 0, just below 255
    assert to_uint8(x, "round").tolist() == [0, 255, 11, 128, 0, 255, 0, 255]
    assert to_uint8(x, "truncate").tolist() == [0, 255, 10, 127, 0, 255, 0, 254]
    assert to_uint8(x).tolist() == to_uint8(x, "round").tolist()  # round is the default
    assert to_uint8(x.float(), "round").dtype == torch.uint8
    with pytest.raises(ValueError, match="round, truncate"):
        to_uint8(x, "nearest")


def test_to_uint8_matches_edm_and_cm_formulas():
    x = torch.rand(10**5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2.4 - 1.2
    x = x.reshape(-1, 1, 10, 10)
    edm = (x * 127.5 + 128).clip(0, 255).to(torch.uint8)  # NVlabs/edm generate.py
    cm = ((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)  # openai/consistency_models
    assert torch.equal(to_uint8(x, "round"), edm)
    assert torch.equal(to_uint8(x, "truncate"), cm)
    # the two conventions really differ (half a grey level: about half the values move by one)
    diff = to_uint8(x, "round").int() - to_uint8(x, "truncate").int()
    assert set(diff.unique().tolist()) == {0, 1}
    assert 0.4 < float(diff.float().mean()) < 0.6


@pytest.mark.parametrize("quantisation", ["round", "truncate"])
def test_from_uint8_inverts_to_within_one_level(quantisation):
    x = torch.rand(10**5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2.4 - 1.2
    back = from_uint8(to_uint8(x, quantisation))
    assert back.dtype == torch.float32
    err = (back.double() - x.clamp(-1, 1)).abs()
    assert float(err.max()) <= 1 / 127.5 + 1e-6
    if quantisation == "round":  # rounding is within half a level
        assert float(err.max()) <= 0.5 / 127.5 + 1e-6
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(levels).double(), "round"), levels)
