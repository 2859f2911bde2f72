"""The toy classifier: trained on the toy digits' train split, it is the toy world's feature network.

Its penultimate layer is the ``pool`` feature for FID / precision-recall and its logits feed the
Inception Score, as Inception-v3 does for ImageNet-scale models (``cmbench.features.toy``).
Training is light-weight and deterministic given the seed: a fixed ``torch.Generator`` draws the
batches and the augmentation, ``torch.manual_seed(seed)`` fixes the initial weights.

Augmentation (random ±1 pixel shifts, Gaussian pixel noise) makes the features depend on the
digit rather than on exact grey levels, so small generator artefacts move them smoothly.

Run ``python -m cmbench.zoo.toy.classifier --out cmbench/zoo/toy/checkpoints/classifier.pt`` to
(re)train the shipped checkpoint, :data:`DEFAULT_CLASSIFIER`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmbench.checkpoints.native import save_native
from cmbench.console import progress_bar
from cmbench.images import from_uint8
from cmbench.nets import build_network
from cmbench.zoo.toy.data import IMAGE_SHAPE, NUM_CLASSES, load_toy

CLASSIFIER_ARCH = "toy_classifier"
CLASSIFIER_KWARGS = {"img_resolution": 8, "img_channels": 1, "width": 32, "feature_dim": 64, "num_classes": 10, "dropout": 0.1}
DEFAULT_CLASSIFIER = Path(__file__).resolve().parent / "checkpoints" / "classifier.pt"
DEFAULT_STEPS = 2000
DEFAULT_LR = 2e-3
MAX_SHIFT = 1
NOISE_STD = 0.1  # in the [-1, 1] pixel scale, i.e. about 6 grey levels


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random (dy, dx) ∈ {−1, 0, 1}² (background fills in) and add noise."""
    n, _, h, w = x.shape
    padded = F.pad(x, (MAX_SHIFT,) * 4, value=-1.0)
    shifts = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator)
    rows = (shifts[:, 0, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (shifts[:, 1, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    index = (rows * padded.shape[-1] + cols).reshape(n, 1, h * w)
    shifted = padded.flatten(2).gather(2, index).reshape(x.shape)
    return shifted + NOISE_STD * torch.randn(x.shape, generator=generator)


def train_classifier(
    *,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 128,
    lr: float = DEFAULT_LR,
    progress: bool | None = False,
) -> nn.Module:
    """A :data:`CLASSIFIER_ARCH` net trained on the train split (Adam, cosine-decayed lr), in eval mode.

    Deterministic given ``seed`` (on a fixed torch build and thread count).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_classifier needs steps ≥ 1 and batch_size ≥ 1; got steps={steps}, batch_size={batch_size}")
    images, labels = load_toy("train")
    x_all = from_uint8(images)
    torch.manual_seed(seed)
    net = build_network(CLASSIFIER_ARCH, CLASSIFIER_KWARGS)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    net.train()
    order, cursor = torch.randperm(len(x_all), generator=generator), 0
    bar = progress_bar(progress=progress, total=steps, desc="toy classifier", unit="step")
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(x_all), generator=generator), 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        loss = F.cross_entropy(net(augment(x_all[batch], generator)), labels[batch])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_classifier: loss became {loss.item()} at step {step}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return net.eval()


def accuracy(net: nn.Module, split: str = "test") -> float:
    """Fraction of the split's images whose arg-max logit is the true label (net in eval mode)."""
    images, labels = load_toy(split)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        predicted = net(from_uint8(images)).argmax(1)
    net.train(was_training)
    return float((predicted == labels).to(torch.float64).mean())


def save_classifier(
    net: nn.Module, path: str | os.PathLike, *, seed: int, steps: int, seconds: float, overwrite: bool = False
) -> str:
    """Write ``net`` as a native checkpoint (family "classifier") with its provenance; return sha256."""
    meta = {
        "seed": int(seed),
        "steps": int(steps),
        "training_seconds": round(float(seconds), 2),
        "test_accuracy": accuracy(net, "test"),
        "train_split": "train",
        "dataset": "sklearn digits (cmbench.zoo.toy.data)",
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
    }
    return save_native(
        path, net, arch=CLASSIFIER_ARCH, arch_kwargs=dict(CLASSIFIER_KWARGS), family="classifier",
        model_options={"image_shape": list(IMAGE_SHAPE), "num_classes": NUM_CLASSES}, meta=meta,
        overwrite=overwrite,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cmbench.zoo.toy.classifier", description="Train the toy digits classifier and save it as a native checkpoint.")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint path to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest for this tiny net, and far faster on a busy machine)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} already exists; pass --overwrite to replace it")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    net = train_classifier(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr, progress=None)
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sha = save_classifier(net, args.out, seed=args.seed, steps=args.steps, seconds=seconds, overwrite=args.overwrite)
    print(f"trained in {seconds:.1f} s; test accuracy {accuracy(net, 'test'):.4f}; wrote {args.out} (sha256 {sha})")


if __name__ == "__main__":
    main()
