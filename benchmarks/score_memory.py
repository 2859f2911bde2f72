"""Peak memory while scoring a large sample batch: `cmbench score`'s streamed path against loading it whole.

Writes a synthetic ADM-style ``.npz`` (``arr_0``: N × 256 × 256 × 3 uint8, ≥ 2 GB by default) with
cmbench's streaming writer, then, each in a fresh process, measures peak RSS of

- ``cmbench``: the stored-sample path ``cmbench score`` runs (``SampleSetModel`` →
  ``generate_views`` → ``compute_metrics``: FID, bootstrap standard error), with a cheap
  extractor standing in for Inception (8 × 8 average-pooled pixels, 192-d; Inception's weights
  are not downloadable here, and the extractor's own memory is a constant either way);
- ``np.load``: ``np.load(path)["arr_0"]``, what an evaluator that reads the batch whole needs.

    python benchmarks/score_memory.py --gigabytes 2 --repeat 2
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_batch(path: Path, count: int, resolution: int) -> None:
    from cmbench.sample_files import NpzSampleWriter

    rng = np.random.default_rng(0)
    with NpzSampleWriter(path, count, (3, resolution, resolution), labels=False) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.write(torch.from_numpy(rng.integers(0, 256, (n, 3, resolution, resolution), dtype=np.uint8)), None)


def child_cmbench(path: str) -> str:
    from cmbench.features.base import FeatureExtractor
    from cmbench.generate import generate_views
    from cmbench.metrics import MetricOptions, ReferenceStats, compute_metrics
    from cmbench.metrics.bootstrap import bootstrap_standard_errors
    from cmbench.models import SampleSetModel
    from cmbench.samplers import get_sampler

    class PooledPixels(FeatureExtractor):
        name, layers = "pooled-pixels-8x8", ("pool",)
        weights_sha256 = "none"

        def extract(self, images, layers):
            return {"pool": torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)}

    model = SampleSetModel(Path(path))
    seeds = range(model.source.count)
    (features,), _, _, _ = generate_views(model, get_sampler("stored"), torch.zeros(0), {}, seeds, batch_size=256,
                                          device=torch.device("cpu"), views=[("round", PooledPixels(), ("pool",))])
    pool = features["pool"].astype(np.float64)
    meta = {"extractor": "pooled-pixels-8x8", "extractor_sha256": "none", "num_images": len(pool),
            "resolution": list(model.image_shape[1:]), "source": "the batch itself"}
    half = pool[: len(pool) // 2]  # reference: the first half of the batch
    reference = ReferenceStats(mu={"pool": half.mean(0)}, sigma={"pool": np.cov(half, rowvar=False)}, features={},
                               meta=meta)
    values = compute_metrics(("fid",), features, reference, MetricOptions(), device=torch.device("cpu"))
    values.update(bootstrap_standard_errors(("fid",), features, reference, MetricOptions(), resamples=20, seed=0))
    return f"fid {values['fid']:.3g} ± {values['fid_se']:.2g} over {len(pool)} images"


def child_np_load(path: str) -> str:
    with np.load(path) as data:
        images = data["arr_0"]
    return f"arr_0 {images.shape} {images.dtype}"


def measure(kind: str, path: Path) -> tuple[float, float, str]:
    """(peak RSS in MiB, seconds, what the child computed) of one fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True,
                          check=True)
    seconds = time.perf_counter() - start
    peak_kib, summary = done.stdout.strip().split("\t")
    return int(peak_kib) / 1024, seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of arr_0 (default 2 GB)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--folder", type=Path, help="where to write the batch (default: a temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(1)
        summary = {"cmbench": child_cmbench, "np.load": child_np_load}[args.child[0]](args.child[1])
        print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\t{summary}")
        return
    count = int(args.gigabytes * 1e9 // (3 * args.resolution**2)) + 1
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / f"samples_{count}x{args.resolution}x{args.resolution}x3.npz"
        start = time.perf_counter()
        write_batch(path, count, args.resolution)
        print(f"wrote {path.name}: {path.stat().st_size / 1e9:.2f} GB ({count} images) in {time.perf_counter() - start:.1f} s")
        print(f"{'reader':<10} {'peak RSS min':>13} {'median':>9} {'time min':>9}  result")
        for kind in ("cmbench", "np.load"):
            runs = [measure(kind, path) for _ in range(args.repeat)]
            peaks, times = [r[0] for r in runs], [r[1] for r in runs]
            print(f"{kind:<10} {min(peaks):>9.0f} MiB {statistics.median(peaks):>5.0f} MiB {min(times):>8.1f}s  {runs[0][2]}")


if __name__ == "__main__":
    main()
