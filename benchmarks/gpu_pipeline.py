"""How busy the real sampling pipeline keeps the device: images/s, the device's busy share and the
share of wall time outside the network and the extractor, per way of running the network.

Samples with EDM's CIFAR-10 DDPM++ network (the ``edm-cifar10-32x32-uncond-vp`` preset, 56M
parameters, random weights) as a consistency model (``cm_multistep``) or a diffusion model
(``heun``), through :func:`cmbench.generate.generate_views` into a random-weights TF-Inception
(:class:`cmbench.features.inception.InceptionExtractor`, ``pool``), on CUDA when present, else the
CPU. Every combination of

- overlap on (the pipeline's one batch ahead) or off (each batch waited for before the next is
  sampled: ``cmbench.generate.one_ahead`` replaced by a step-by-step loop for the run),
- precision fp32 / bf16 (the network's autocast; the extractor stays float32),
- channels_last off / on,
- compile off / on (``torch.compile``; skipped on the CPU, and skipped with its error where it fails),

is run once to warm up (compilation, cuDNN's choice of algorithms), then ``--repeats`` times.
Printed per combination: images/s (median and best), ``busy``: the time the device spent inside
the network and the extractor (CUDA events around each call; on the CPU the calls' wall time)
over the wall time, and ``outside``: 1 − busy, the wall-time share of everything else (noise,
sampler arithmetic, quantisation, copies, the host's bookkeeping and the device waiting for it),
each the median over the repetitions.

    python benchmarks/gpu_pipeline.py                  # the full net, 4096 images in batches of 512
    python benchmarks/gpu_pipeline.py --quick          # a small net and 8 images: a few minutes on a CPU

Arguments: ``--quick`` (a 2-level, 32-channel DDPM++ and 8 images in batches of 4, 2 repeats, NFE 1);
``--sampler cm_multistep|heun`` (a CD or an EDM model; default cm_multistep); ``--nfe N`` (default 2);
``--num-samples N`` (default 4096); ``--batch-size N`` (default 512); ``--repeats N`` (default 3);
``--precisions fp32,bf16``; ``--no-compile``; ``--device cuda|cpu`` (default: cuda when present).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import cmbench.generate as generate
from cmbench.checkpoints.official import official_arch
from cmbench.features.inception import InceptionExtractor
from cmbench.models.adapters import network_adapter
from cmbench.nets import build_network
from cmbench.nets.inception_tf import InceptionV3TF
from cmbench.samplers import get_sampler

PRESET = "edm-cifar10-32x32-uncond-vp"
QUICK_NET = {"model_channels": 32, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [16]}
FAMILIES = {"cm_multistep": "cd", "heun": "edm"}


class CallTimer:
    """The time spent inside wrapped calls: on CUDA from an event pair around each call (the
    device's time, read at the end), on the CPU the calls' wall time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.wall = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if not self.cuda:
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                self.wall += time.perf_counter() - start
                return out
            pair = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            pair[0].record()
            out = fn(*args, **kwargs)
            pair[1].record()
            self.events.append(pair)
            return out
        return timed

    def take(self) -> float:
        """The seconds counted since the last take."""
        if self.cuda:
            torch.cuda.synchronize()
        seconds = self.wall + sum(start.elapsed_time(end) for start, end in self.events) / 1000.0
        self.events, self.wall = [], 0.0
        return seconds


@contextlib.contextmanager
def overlap(on: bool):
    """The pipeline as it is (one batch ahead), or with each batch handed on as soon as it is launched."""
    original = generate.one_ahead
    if not on:
        generate.one_ahead = lambda batches, launch: (launch(batch) for batch in batches)
    try:
        yield
    finally:
        generate.one_ahead = original


def random_network(quick: bool, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The preset's network with random weights (default init, perturbed so no layer is zero)."""
    preset = official_arch(PRESET)
    torch.manual_seed(0)
    net = build_network(preset.arch, {**preset.kwargs, **(QUICK_NET if quick else {})})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.to(device), preset.model_options


def random_inception(folder: Path, device: torch.device) -> InceptionExtractor:
    torch.manual_seed(1)
    path = folder / "inception-random.pt"
    torch.save(InceptionV3TF().state_dict(), path)
    return InceptionExtractor(path, expected_sha256=None).to(device)


def run_once(model, sampler, sigmas, extractor, count: int, batch_size: int, device) -> float:
    start = time.perf_counter()
    generate.generate_views(model, sampler, sigmas, {}, range(count), batch_size=batch_size, device=device,
                            views=[("round", extractor, ("pool",))])
    return time.perf_counter() - start


def measure(args, net, options, extractor, device, precision: str, channels_last: bool, compiled: bool,
            overlapped: bool) -> str:
    """One combination's line of the table (or why it was skipped)."""
    model = network_adapter(FAMILIES[args.sampler], net, options, sha256=None, precision=precision,
                            compile=compiled, channels_last=channels_last).to(device)
    sampler = get_sampler(args.sampler)
    sigmas = sampler.schedule(model.noise_range, args.nfe, {})
    timer = CallTimer(device)
    model._forward = timer.wrap(model._forward)
    extractor.extract_on_device = timer.wrap(partial(InceptionExtractor.extract_on_device, extractor))
    try:
        with overlap(overlapped):
            run_once(model, sampler, sigmas, extractor, args.batch_size, args.batch_size, device)  # warm-up
            timer.take()
            walls, busy = [], []
            for _ in range(args.repeats):
                walls.append(run_once(model, sampler, sigmas, extractor, args.num_samples, args.batch_size, device))
                busy.append(timer.take() / walls[-1])
    except Exception as err:  # noqa: BLE001 - a combination that fails (compile) is reported, not fatal
        if not compiled:
            raise
        return f"compile failed, skipped: {type(err).__name__}: {str(err).splitlines()[0][:100]}"
    finally:
        net.to(memory_format=torch.contiguous_format)
    rate = [args.num_samples / w for w in walls]
    share = statistics.median(busy)
    return f"{statistics.median(rate):>10.1f} {max(rate):>8.1f} {share:>7.1%} {1 - share:>8.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sampler", choices=tuple(FAMILIES), default="cm_multistep")
    parser.add_argument("--nfe", type=int)
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    small = {"nfe": 1, "num_samples": 8, "batch_size": 4, "repeats": 2}
    full = {"nfe": 2, "num_samples": 4096, "batch_size": 512, "repeats": 3}
    for key, value in (small if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    compiles = [False] if args.no_compile or device.type == "cpu" else [False, True]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as folder:
        extractor = random_inception(Path(folder), device)
        net, options = random_network(args.quick, device)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{PRESET}{' (quick: small)' if args.quick else ''}, {params:.1f}M parameters, {args.sampler} NFE "
              f"{args.nfe}, {args.num_samples} images in batches of {args.batch_size}, {args.repeats} repeats; "
              f"{where}; torch {torch.__version__}")
        if device.type == "cpu" and not args.no_compile:
            print("compile: skipped on the CPU")
        print(f"{'overlap':<8}{'precision':<10}{'chan_last':<10}{'compile':<8} {'images/s':>10} {'best':>8} "
              f"{'busy':>7} {'outside':>8}")
        for compiled, precision, channels_last, overlapped in itertools.product(
                compiles, args.precisions.split(","), (False, True), (True, False)):
            line = measure(args, net, options, extractor, device, precision, channels_last, compiled, overlapped)
            print(f"{'on' if overlapped else 'off':<8}{precision:<10}{'on' if channels_last else 'off':<10}"
                  f"{'on' if compiled else 'off':<8} {line}", flush=True)


if __name__ == "__main__":
    main()
