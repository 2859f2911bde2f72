"""Train a toy EDM teacher under one recipe and print its Heun FID / precision / recall per NFE.

The toy zoo's teacher scores its best FID at Heun NFE 17, not at its highest NFE; this script is
how the recipes in ``toy_teacher_variants.md`` were measured (about 5 min per recipe on one core):

    python benchmarks/toy_teacher_variants.py cosine '{"decay": "cosine"}'
    python benchmarks/toy_teacher_variants.py dropout '{"decay": "cosine", "net": {"dropout": 0.1}}'

Recipe keys: steps (20000), lr (1e-3), decay (none | cosine), net (overrides of the zoo's
ToyMLP arguments), p_mean / p_std (EDM's ln σ distribution, -1.2 / 1.2), sigma_data (0.5),
dequant (half-width of uniform noise added to the training images, in [-1, 1] units).
Scores use 2000 samples with seeds 1000000.., the toy classifier and the all-digits reference.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from cmbench.features.toy import ToyClassifierExtractor
from cmbench.generate import sample_and_score
from cmbench.images import from_uint8
from cmbench.metrics import MetricOptions
from cmbench.metrics.reference import load_reference
from cmbench.models.base import NoiseRange, per_sample
from cmbench.models.networks import EDMModel
from cmbench.nets import build_network
from cmbench.samplers import get_sampler
from cmbench.seeds import seed_range
from cmbench.zoo.toy.classifier import DEFAULT_CLASSIFIER
from cmbench.zoo.toy.data import IMAGE_SHAPE, load_toy
from cmbench.zoo.toy.train import NET_ARCH, ToyZooConfig, ema_update, frozen_copy, trainable

REFERENCE = Path(__file__).resolve().parent.parent / "reference_stats" / "toy-digits-all.npz"
NFES = (9, 17, 35, 79)


def train_teacher(recipe: dict, seed: int = 0) -> EDMModel:
    """EDM denoising score matching on the toy training digits under ``recipe``; returns the EMA model."""
    config = ToyZooConfig()
    steps, lr = recipe.get("steps", config.edm_steps), recipe.get("lr", config.edm_lr)
    p_mean, p_std = recipe.get("p_mean", -1.2), recipe.get("p_std", 1.2)
    sigma_data, dequant = recipe.get("sigma_data", 0.5), recipe.get("dequant", 0.0)
    images = from_uint8(load_toy("train")[0])
    torch.manual_seed(seed)
    net = build_network(NET_ARCH, {**config.net, **recipe.get("net", {})})
    model = trainable(EDMModel(net, IMAGE_SHAPE, noise_range=NoiseRange(0.002, 80.0, sigma_data)))
    ema = frozen_copy(model)
    optimiser = torch.optim.Adam(model.net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        scale = 0.5 * (1 + math.cos(math.pi * step / steps)) if recipe.get("decay") == "cosine" else 1.0
        for group in optimiser.param_groups:
            group["lr"] = lr * scale
        x0 = images[torch.randint(0, len(images), (config.batch_size,), generator=generator)]
        if dequant:
            x0 = x0 + (torch.rand(x0.shape, generator=generator) * 2 - 1) * dequant
        sigma = torch.exp(torch.randn(len(x0), generator=generator) * p_std + p_mean)
        noisy = x0 + per_sample(sigma, x0) * torch.randn(x0.shape, generator=generator)
        weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        loss = (per_sample(weight, x0) * (model.denoise(noisy, sigma) - x0) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema_update(ema, model, config.eval_ema)
    return ema


def main() -> None:
    name, recipe = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    start = time.perf_counter()
    teacher = train_teacher(recipe)
    seconds = time.perf_counter() - start
    extractor, reference = ToyClassifierExtractor(DEFAULT_CLASSIFIER), load_reference(REFERENCE)
    heun = get_sampler("heun")
    print(f"{name} {recipe}: trained in {seconds:.0f} s")
    for nfe in NFES:
        metrics, *_ = sample_and_score(
            teacher, heun, nfe, {}, seed_range(1_000_000, 2000), metrics=("fid", "precision_recall"),
            metric_options=MetricOptions(pr_k=3), reference=reference, batch_size=500,
            device=torch.device("cpu"), quantisation="round", extractor=extractor,
        )
        print(f"  Heun NFE {nfe:>2}: FID {metrics['fid']:.2f}  precision {metrics['precision']:.3f}  "
              f"recall {metrics['recall']:.3f}")


if __name__ == "__main__":
    main()
