"""Train a toy EDM teacher under one recipe and print its Heun FID / precision / recall per NFE.

This is how the recipes in ``toy_teacher_variants.md`` were measured, in search of a teacher
whose Heun FID is lowest at its highest NFE (5–20 min per recipe on one core):

    python benchmarks/toy_teacher_variants.py shipped '{}'
    python benchmarks/toy_teacher_variants.py first '{"steps": 20000, "decay": "none"}'
    python benchmarks/toy_teacher_variants.py wide '{"steps": 20000, "net": {"hidden": 512}}'
    python benchmarks/toy_teacher_variants.py shipped --load zoo:toy/edm --samples 10000 --seed-starts 0

Recipe keys, defaulting to the shipped zoo's teacher (``ToyZooConfig``): steps (80000), lr
(1e-3), decay (cosine | none), net (overrides of the zoo's ToyMLP arguments: hidden 256, depth 3),
p_mean / p_std (EDM's ln σ distribution, -1.2 / 1.2), sigma_data (0.5), dequant (half-width of
uniform noise added to the training images, in [-1, 1] units).
Scores use 2000 samples with seeds 1000000.. (see --samples, --seed-starts), the toy classifier and
the all-digits reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cmbench.checkpoints import save_native
from cmbench.features.toy import ToyClassifierExtractor
from cmbench.generate import sample_and_score
from cmbench.images import from_uint8
from cmbench.metrics import MetricOptions
from cmbench.metrics.reference import load_reference
from cmbench.models.base import NoiseRange, per_sample
from cmbench.models.loading import build_network_model
from cmbench.models.networks import EDMModel
from cmbench.nets import build_network
from cmbench.samplers import get_sampler
from cmbench.seeds import seed_range
from cmbench.zoo.toy.classifier import DEFAULT_CLASSIFIER
from cmbench.zoo.toy.data import IMAGE_SHAPE, load_toy
from cmbench.zoo.toy.train import NET_ARCH, ToyZooConfig, ema_update, frozen_copy, learning_rate, trainable

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
        optimiser.param_groups[0]["lr"] = learning_rate(lr, step, steps, recipe.get("decay", config.edm_lr_decay))
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a label for the printout")
    parser.add_argument("recipe", nargs="?", default="{}", help="JSON recipe (keys above); ignored with --load")
    parser.add_argument("--load", help="score this EDM checkpoint (e.g. zoo:toy/edm) instead of training one")
    parser.add_argument("--save", type=Path, help="also save the trained teacher here (a cmbench native checkpoint)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed-starts", default="1000000", help="comma-separated first seeds, one block of --samples each")
    parser.add_argument("--nfe", default=",".join(map(str, NFES)), help="comma-separated Heun NFEs")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.load:
        teacher = build_network_model("edm", {"checkpoint": args.load}, Path.cwd(), "cpu")
        print(f"{args.name}: {args.load}")
    else:
        recipe, start = json.loads(args.recipe), time.perf_counter()
        teacher = train_teacher(recipe)
        print(f"{args.name} {recipe}: trained in {time.perf_counter() - start:.0f} s")
        if args.save:
            save_native(args.save, teacher.net, arch=NET_ARCH, arch_kwargs={**ToyZooConfig().net, **recipe.get("net", {})},
                        family="edm", model_options={"image_shape": list(IMAGE_SHAPE), "sigma_data": teacher.sigma_data},
                        meta={"recipe": json.dumps(recipe)})
    extractor, reference = ToyClassifierExtractor(DEFAULT_CLASSIFIER), load_reference(REFERENCE)
    heun = get_sampler("heun")
    for first in (int(v) for v in args.seed_starts.split(",")):
        for nfe in (int(v) for v in args.nfe.split(",")):
            metrics, *_ = sample_and_score(
                teacher, heun, nfe, {}, seed_range(first, args.samples), metrics=("fid", "precision_recall"),
                metric_options=MetricOptions(pr_k=3), reference=reference, batch_size=500,
                device=torch.device("cpu"), quantisation="round", extractor=extractor,
            )
            print(f"  seeds {first}+{args.samples} Heun NFE {nfe:>2}: FID {metrics['fid']:.2f}  "
                  f"precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}", flush=True)


if __name__ == "__main__":
    main()
