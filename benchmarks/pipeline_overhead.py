"""Throughput of the whole sampling + feature + metric pipeline, and the harness's own share.

Runs the analytic mixture under several samplers at a given batch size and splits wall time
into model calls (the adapter's maps), feature-extractor calls, metric computation (FID, IS,
precision/recall: a fixed cost per row, whatever the NFE) and everything else (noise
generation, sampler arithmetic, quantisation, bookkeeping): the last share is the harness
overhead.

    python benchmarks/pipeline_overhead.py --batch-size 256 --num-samples 4096
"""

from __future__ import annotations

import argparse
import time

import torch

from cmbench.features.analytic import MixturePosteriorExtractor
from cmbench.metrics import compute_metrics, layers_for
from cmbench.models import GaussianMixture, GaussianMixtureModel
from cmbench.generate import generate_features
from cmbench.references import analytic_reference
from cmbench.samplers import get_sampler
from cmbench.seeds import seed_range
from cmbench.suite import parse_suite


class Stopwatch:
    """Accumulates time spent inside wrapped calls; nested calls count once (the outermost)."""

    def __init__(self):
        self.seconds, self._depth, self._start = 0.0, 0, 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if self._depth == 0:
                self._start = time.perf_counter()
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - self._start
        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--image-shape", type=int, nargs=3, default=[3, 16, 16])
    parser.add_argument("--components", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    shape = tuple(args.image_shape)
    dim = shape[0] * shape[1] * shape[2]
    gen = torch.Generator().manual_seed(0)
    mixture = GaussianMixture.create((torch.rand(args.components, dim, generator=gen, dtype=torch.float64) * 2 - 1) * 0.7,
                                     [0.15] * args.components)
    model = GaussianMixtureModel(mixture, shape, ode_steps=32)
    extractor = MixturePosteriorExtractor(mixture)
    metrics = ("fid", "inception_score", "precision_recall")
    layers = layers_for(metrics)
    suite = parse_suite({
        "name": "bench", "num_samples": args.num_samples, "batch_size": args.batch_size,
        "models": {"mix": {"family": "gmm", "image_shape": list(shape), "random": {"count": 1, "seed": 0, "mean_scale": 0.5, "std": 0.2}}},
        "runs": [{"model": "mix", "sampler": "euler", "nfe": [1]}],
        "reference": {"model": "mix", "num_images": args.num_samples},
        "features": {"extractor": "pixels"},
    }, "<benchmark>", ".")
    reference = analytic_reference(suite, model, extractor, ("pool",))

    model_clock, extractor_clock = Stopwatch(), Stopwatch()
    for name in ("denoise", "consistency", "jump", "ddim_x0"):
        setattr(model, name, model_clock.wrap(getattr(model, name)))
    extractor.extract = extractor_clock.wrap(extractor.extract)

    print(f"analytic mixture {shape}, {args.components} components, {args.num_samples} samples, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'sampler':<14}{'NFE':>4}{'samples/s':>12}{'model':>9}{'extractor':>11}{'metrics':>9}{'harness':>9}")
    for sampler_name, nfe, options in (("heun", 35, {}), ("euler", 8, {}), ("cm_multistep", 2, {}),
                                       ("ctm_gamma", 2, {"gamma": 0.0}), ("ddim", 8, {})):
        sampler = get_sampler(sampler_name)
        sigmas = sampler.schedule(model.noise_range, nfe, options)
        model_clock.seconds = extractor_clock.seconds = 0.0
        start = time.perf_counter()
        features, _, _, _ = generate_features(
            model, sampler, sigmas, options, seed_range(0, args.num_samples), batch_size=args.batch_size,
            device=torch.device("cpu"), quantisation="round", extractor=extractor, layers=layers,
        )
        metrics_start = time.perf_counter()
        compute_metrics(metrics, features, reference, suite.metric_options)
        metric_seconds = time.perf_counter() - metrics_start
        total = time.perf_counter() - start
        harness = total - model_clock.seconds - extractor_clock.seconds - metric_seconds
        print(f"{sampler_name:<14}{nfe:>4}{args.num_samples / total:>12.1f}{model_clock.seconds / total:>9.1%}"
              f"{extractor_clock.seconds / total:>11.1%}{metric_seconds / total:>9.1%}{harness / total:>9.1%}")


if __name__ == "__main__":
    main()
