"""The one-batch-ahead pipeline (cmbench.generate), channels_last networks and ``batch_size: auto``:
the same features, images, callbacks and rows as sampling and extracting batch by batch; a
non-finite batch still refused by its seeds with nothing after it kept."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cmbench.batch_size as batch_size_module
import cmbench.generate as generate_module
from cmbench.batch_size import MAX_AUTO, resolve_batch_size
from cmbench.features import build_extractor
from cmbench.finite import NonFiniteSamples
from cmbench.generate import generate_views, sample_batch
from cmbench.images import to_uint8
from cmbench.models import build_model
from cmbench.models.networks import EDMModel
from cmbench.nets.song_unet import SongUNet
from cmbench.runner import run_suite
from cmbench.samplers import get_sampler
from cmbench.shard_part import ShardPart
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError

SEEDS = range(100, 110)  # batches of 4: 100–103, 104–107, 108–109
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy():
    """The toy CD model, cm_multistep at NFE 2 and the toy classifier."""
    model = build_model("cd", {"checkpoint": "zoo:toy/cd"}, Path("."))
    sampler = get_sampler("cm_multistep")
    sigmas = sampler.schedule(model.noise_range, 2, {})
    extractor = build_extractor({"extractor": "toy-classifier"}, {})
    return model, sampler, sigmas, extractor


def batch_by_batch(model, sampler, sigmas, extractor, seeds, batch_size, quantisation):
    """The sequential reference: each batch sampled, quantised and extracted before the next."""
    pools, images = [], []
    for i in range(0, len(seeds), batch_size):
        made, _, _ = sample_batch(model, sampler, sigmas, {}, seeds[i : i + batch_size], CPU)
        uint8 = to_uint8(made, quantisation)
        pools.append(extractor.extract(uint8, ["pool"])["pool"])
        images.append(uint8)
    return torch.cat(pools).numpy(), torch.cat(images)


def test_overlapped_views_equal_batch_by_batch_features_images_and_saved_order(toy):
    model, sampler, sigmas, extractor = toy
    saved = []
    features, grid, nfe, seconds = generate_views(
        model, sampler, sigmas, {}, SEEDS, batch_size=4, device=CPU, keep_images=6,
        views=[("round", extractor, ("pool",)), ("truncate", extractor, ("pool", "logits")),
               ("round", extractor, ("logits",))],
        save=lambda images, labels, seeds: saved.append((images, labels, list(seeds))),
    )
    rounded, round_images = batch_by_batch(model, sampler, sigmas, extractor, SEEDS, 4, "round")
    truncated, _ = batch_by_batch(model, sampler, sigmas, extractor, SEEDS, 4, "truncate")
    np.testing.assert_array_equal(features[0]["pool"], rounded)
    np.testing.assert_array_equal(features[1]["pool"], truncated)
    assert set(features[2]) == {"logits"} and features[2]["logits"].shape == (10, 10)
    assert torch.equal(grid, round_images[:6])
    assert [seeds for _, _, seeds in saved] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    assert torch.equal(torch.cat([images for images, _, _ in saved]), round_images)
    assert nfe == 2 and seconds > 0


def test_the_next_batch_is_sampled_before_the_host_takes_a_batch(toy, monkeypatch):
    model, sampler, sigmas, extractor = toy
    real, events = generate_module.sample_batch, []

    def logged(model, sampler, sigmas, options, seeds, device):
        events.append(f"sample {seeds[0]}")
        return real(model, sampler, sigmas, options, seeds, device)

    monkeypatch.setattr(generate_module, "sample_batch", logged)
    generate_views(model, sampler, sigmas, {}, SEEDS, batch_size=4, device=CPU, views=[("round", extractor, ("pool",))],
                   save=lambda images, labels, seeds: events.append(f"save {seeds[0]}"))
    assert events == ["sample 100", "sample 104", "save 100", "sample 108", "save 104", "save 108"]


def test_features_do_not_depend_on_the_batch_size(toy):
    model, sampler, sigmas, extractor = toy
    views = [("round", extractor, ("pool",))]
    (one,), *_ = generate_views(model, sampler, sigmas, {}, SEEDS, batch_size=10, device=CPU, views=views)
    (three,), *_ = generate_views(model, sampler, sigmas, {}, SEEDS, batch_size=3, device=CPU, views=views)
    np.testing.assert_allclose(one["pool"], three["pool"], rtol=1e-5, atol=1e-6)


def test_a_non_finite_middle_batch_is_refused_by_its_seeds_and_nothing_after_it_is_kept(toy, monkeypatch):
    model, sampler, sigmas, extractor = toy
    real = generate_module.sample_batch

    def poisoned(model, sampler, sigmas, options, seeds, device):
        images, labels, nfe = real(model, sampler, sigmas, options, seeds, device)
        bad = torch.tensor([seed == 105 for seed in seeds])
        return torch.where(bad[:, None, None, None], torch.nan, images), labels, nfe

    monkeypatch.setattr(generate_module, "sample_batch", poisoned)
    saved = []
    with pytest.raises(NonFiniteSamples, match=r"row: non-finite samples for seed 105 \(1 of 4\); every model "
                                               r"evaluation was finite.*nothing was scored"):
        generate_views(model, sampler, sigmas, {}, SEEDS, batch_size=4, device=CPU, desc="row",
                       views=[("round", extractor, ("pool",))], save=lambda i, lab, seeds: saved.append(list(seeds)))
    assert saved == [[100, 101, 102, 103]]


def test_channels_last_gives_the_same_samples_to_float_tolerance():
    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=3, out_channels=3, model_channels=16, channel_mult=[1, 2],
                   num_blocks=1, attn_resolutions=[4], dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    plain = EDMModel(net, (3, 8, 8))
    nhwc = EDMModel(copy.deepcopy(net), (3, 8, 8), channels_last=True)
    kernel = next(p for p in nhwc.net.parameters() if p.ndim == 4 and p.shape[-1] > 1)
    assert kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()
    sampler = get_sampler("heun")
    sigmas = sampler.schedule(plain.noise_range, 3, {})
    a, _, _ = sample_batch(plain, sampler, sigmas, {}, range(4), CPU)
    b, _, _ = sample_batch(nhwc, sampler, sigmas, {}, range(4), CPU)
    assert b.is_contiguous()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def auto_suite(**changes) -> dict:
    raw = {
        "name": "auto", "num_samples": 40, "batch_size": "auto", "grid_images": 4,
        "features": {"extractor": "gmm-posterior", "model": "mix"}, "metrics": ["fid"],
        "reference": {"model": "mix", "num_images": 50, "seed": 1000}, "uncertainty": {"bootstrap": 0},
        "models": {"mix": {"family": "gmm", "image_shape": [1, 4, 4], "ode_steps": 8,
                           "random": {"count": 3, "seed": 0, "mean_scale": 0.7, "std": 0.15}}},
        "runs": [{"model": "mix", "sampler": "heun", "nfe": [3]}],
    }
    raw.update(changes)
    return raw


def test_batch_size_auto_runs_on_the_cpu_and_records_the_size_with_the_same_numbers(tmp_path):
    suite = parse_suite(auto_suite(), "auto.yaml", tmp_path)
    assert suite.batch_size == "auto"
    run_suite(suite, tmp_path / "auto", device="cpu")
    run_suite(parse_suite(auto_suite(batch_size=40), "fixed.yaml", tmp_path), tmp_path / "fixed", device="cpu")
    auto, fixed = ([json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
                   for name in ("auto", "fixed"))
    assert auto[0]["batch_size"] == fixed[0]["batch_size"] == 40  # min(256, num_samples)
    assert auto[0]["fid"] == fixed[0]["fid"]
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["batch_size"] == "auto"


def test_shard_jobs_and_the_merge_refuse_auto(tmp_path):
    suite = parse_suite(auto_suite(), "auto.yaml", tmp_path)
    with pytest.raises(ValueError, match=r"auto.yaml: batch_size: auto may choose another size in each shard job"):
        run_suite(suite, tmp_path / "out", device="cpu", shard=ShardPart(0, 2))
    with pytest.raises(ValueError, match=r"give --shard and --merge a number"):
        run_suite(suite, tmp_path / "out", device="cpu", merge=True)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "big", None, [8]])
def test_bad_batch_sizes_are_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r'batch_size: batch_size must be a positive integer or "auto", got'):
        parse_suite(auto_suite(batch_size=value), "bad.yaml", tmp_path)


def test_auto_on_a_gpu_takes_the_largest_power_of_two_that_fits_capped(monkeypatch):
    cuda = torch.device("cuda")
    peaks = {4: 10_000_000 + 4 * 1_000_000, 16: 10_000_000 + 16 * 1_000_000}  # 10 MB fixed, 1 MB per image
    monkeypatch.setattr(batch_size_module, "_peak_bytes", lambda probe, size, device: peaks[size])
    monkeypatch.setattr(batch_size_module, "_free_bytes", lambda device: 400_000_000)
    assert resolve_batch_size("auto", 50_000, cuda, probe=lambda size: None) == 256  # (0.75·400 − 10) MB / 1 MB = 290
    assert resolve_batch_size("auto", 100, cuda, probe=lambda size: None) == 100
    monkeypatch.setattr(batch_size_module, "_free_bytes", lambda device: 10**13)
    assert resolve_batch_size("auto", 50_000, cuda, probe=lambda size: None) == MAX_AUTO
    assert resolve_batch_size(48, 50_000, cuda, probe=None) == 48
    assert resolve_batch_size("auto", 50_000, CPU, probe=lambda size: None) == 256


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
def test_on_a_gpu_the_pipeline_matches_batch_by_batch_and_auto_fits(toy):
    model, sampler, sigmas, extractor = toy
    cuda = torch.device("cuda")
    model.to(cuda)
    extractor.to(cuda)
    try:
        (features,), grid, _, seconds = generate_views(model, sampler, sigmas, {}, SEEDS, batch_size=4, device=cuda,
                                                       views=[("round", extractor, ("pool",))], keep_images=10)
        pools = [extractor.extract(to_uint8(sample_batch(model, sampler, sigmas, {}, SEEDS[i : i + 4], cuda)[0]),
                                   ["pool"])["pool"] for i in range(0, 10, 4)]
        np.testing.assert_array_equal(features["pool"], torch.cat(pools).numpy())
        assert grid.device.type == "cpu" and len(grid) == 10 and seconds > 0
        probe = generate_module.batch_probe(model, sampler, sigmas, {}, [("round", extractor, ("pool",))], cuda)
        size = resolve_batch_size("auto", 50_000, cuda, probe)
        assert 1 <= size <= MAX_AUTO and size & (size - 1) == 0
    finally:
        model.to(CPU)
        extractor.to(CPU)
