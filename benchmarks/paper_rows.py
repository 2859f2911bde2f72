"""Expected run time of each paper-suite row on one GPU.

    python benchmarks/paper_rows.py                 # estimate from FLOPs (any machine)
    python benchmarks/paper_rows.py --measure       # time real batches on this machine's GPU

Estimate: the network's FLOPs per forward are counted on the meta device (torch's
FlopCounterMode, so nothing is allocated), times the row's NFE and 50,000 samples, plus the
Inception forward per sample, divided by ``--tflops`` (sustained throughput; the default 100 is
an assumption for an A100-class GPU in fp16, not a measurement). Measured: random weights in the
suite's precision, ``--batches`` timed batches after one warm-up, extrapolated to the suite's
sample count (sampling only; feature extraction and metrics come on top).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmbench.checkpoints.official import official_arch
from cmbench.models.networks import PRECISIONS
from cmbench.nets import build_network
from cmbench.nets.inception_tf import InceptionV3TF
from cmbench.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"
PAPER_SUITES = ("cm_imagenet64", "cm_lsun_bedroom256", "cm_lsun_cat256", "ctm_imagenet64", "edm_cifar10", "edm_imagenet64")


def network_of(options: dict) -> tuple[str, dict, list[int], int]:
    """(architecture, kwargs, image shape, label count) of a paper suite's model entry; a released
    EDM snapshot's preset has the file's name."""
    name = options["arch"] if options["format"] == "state_dict" else Path(options["checkpoint"]).stem
    preset = official_arch(name)
    return preset.arch, preset.kwargs, preset.model_options["image_shape"], preset.model_options.get("label_dim", 0)


def call_args(shape, labels: int, s_branch: bool, batch: int, device) -> tuple:
    x = torch.randn(batch, *shape, device=device)
    t = torch.full((batch,), 1.0, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if labels else None
    return (x, t, y, t if s_branch else None)


def forward_gflops(arch: str, kwargs: dict, shape, labels: int) -> float:
    with torch.device("meta"):
        net = build_network(arch, kwargs)
        counter = FlopCounterMode(display=False)
        with counter:
            net(*call_args(shape, labels, kwargs.get("s_embedding", False), 1, "meta"))
    return counter.get_total_flops() / 1e9


def inception_gflops() -> float:
    with torch.device("meta"):
        net = InceptionV3TF()
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.zeros(1, 3, 299, 299))
    return counter.get_total_flops() / 1e9


def measured_seconds_per_sample(arch, kwargs, shape, labels, precision, nfe, batch, batches) -> float:
    with torch.device("meta"):
        net = build_network(arch, kwargs)
    net = net.to_empty(device="cuda").eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02)
    args = call_args(shape, labels, kwargs.get("s_embedding", False), batch, "cuda")
    dtype = PRECISIONS[precision]
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        net(*args)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            net(*args)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (batches * batch) * nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s for the estimate")
    parser.add_argument("--measure", action="store_true", help="time real batches on the GPU")
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    if args.measure and not torch.cuda.is_available():
        raise SystemExit("--measure needs a CUDA device")
    inception = inception_gflops()
    print(f"Inception forward: {inception:.1f} GFLOPs per image (299x299)")
    mode = f"measured on {torch.cuda.get_device_name()}" if args.measure else f"ESTIMATED at {args.tflops:g} TFLOP/s"
    print(f"| suite | row | NFE | GFLOPs / forward | hours for all samples ({mode}) |")
    print("| --- | --- | --- | --- | --- |")
    for name in PAPER_SUITES:
        suite = load_suite(SUITES / f"{name}.yaml")
        for row in suite.rows:
            options = suite.models[row.model].options
            arch, kwargs, shape, labels = network_of(options)
            gflops = forward_gflops(arch, kwargs, shape, labels)
            if args.measure:
                seconds = measured_seconds_per_sample(arch, kwargs, shape, labels, options.get("precision", "fp32"),
                                                      row.nfe, suite.batch_size, args.batches)
            else:
                seconds = (gflops * row.nfe + inception) / (args.tflops * 1e3)
            print(f"| {name} | {row.row_id} | {row.nfe} | {gflops:.1f} | {seconds * suite.num_samples / 3600:.2f} |")


if __name__ == "__main__":
    main()
