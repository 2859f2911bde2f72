"""Time FID, IS, KID and precision/recall from features, cmbench against torch-fidelity and clean-fid.

All three libraries get the same random features, shaped like Inception's: ``--n`` real and
``--n`` generated rows of pool3 (2048-d) and 1008 logits. Each prints its seconds per metric, and
the values, so the comparison is of equal work. torch-fidelity and clean-fid are imported
without torchvision (:mod:`cmbench.reference_impls`).

    python benchmarks/metrics_speed.py              # 50,000 × 2,048, as the papers' protocols
    python benchmarks/metrics_speed.py --n 10000    # a quicker look

Precision/recall at 50k × 50k is the slow part on a CPU; ``--skip-pr`` leaves it out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from cmbench.metrics import fid as cm_fid
from cmbench.metrics.inception_score import inception_score
from cmbench.metrics.kid import kernel_inception_distance
from cmbench.metrics.precision_recall import precision_recall
from cmbench.reference_impls import import_reference


def timed(label: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    value = fn()
    print(f"  {label:<34} {time.perf_counter() - start:8.2f} s   {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="rows per set (default 50000)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--skip-pr", action="store_true", help="leave out precision/recall")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    real = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    fake = (rng.normal(size=(args.n, args.dim)) * 1.05 + 0.02).astype(np.float32)
    logits = rng.normal(0, 3, size=(args.n, 1008)).astype(np.float32)
    print(f"{args.n} × {args.dim} features, {torch.get_num_threads()} torch threads")

    stats = {}
    print("cmbench")
    timed("statistics (float64 mean, cov)", lambda: stats.update(
        fake=cm_fid.feature_statistics(fake), real=cm_fid.feature_statistics(real)) or "")
    for method in cm_fid.FID_SQRT_METHODS:
        timed(f"FID ({method})", lambda m=method: round(cm_fid.frechet_distance(*stats["fake"], *stats["real"], m), 6))
    timed("IS (10 contiguous splits)", lambda: tuple(round(v, 6) for v in inception_score(logits, 10)))
    timed("KID (100 × 1000, float64)", lambda: tuple(f"{v:.6g}" for v in kernel_inception_distance(real, fake)))
    if not args.skip_pr:
        timed("precision/recall (k = 3)", lambda: tuple(round(v, 4) for v in precision_recall(real, fake, k=3)))

    tf_fid, tf_isc, tf_kid, tf_prc = (import_reference(f"torch_fidelity.metric_{m}") for m in ("fid", "isc", "kid", "prc"))
    print("torch-fidelity")
    tf_stats = {}
    timed("statistics", lambda: tf_stats.update(fake=tf_fid.fid_features_to_statistics(torch.from_numpy(fake).double()),
                                                 real=tf_fid.fid_features_to_statistics(torch.from_numpy(real).double())) or "")
    timed("FID", lambda: round(tf_fid.fid_statistics_to_metric(tf_stats["fake"], tf_stats["real"], False)["frechet_inception_distance"], 6))
    timed("IS (10 splits, shuffled)", lambda: tf_isc.isc_features_to_metric(torch.from_numpy(logits)))
    kid_kwargs = {"kid_subsets": 100, "kid_subset_size": 1000, "kid_kernel": "poly", "kid_kernel_poly_degree": 3,
                  "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1, "rng_seed": 2020, "verbose": False}
    timed("KID (100 × 1000, float32)", lambda: tf_kid.kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), **kid_kwargs))
    if not args.skip_pr:
        prc_kwargs = {"prc_neighborhood": 3, "prc_batch_size": 10000, "save_cpu_ram": False, "verbose": False}
        # torch-fidelity's convention: features_1 generated, features_2 real.
        timed("precision/recall (k = 3)", lambda: tf_prc.prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), **prc_kwargs))

    cleanfid = import_reference("cleanfid.fid")
    print("clean-fid")
    timed("FID (from features)", lambda: round(float(cleanfid.fid_from_feats(fake, real)), 6))
    np.random.seed(0)
    timed("KID (100 × 1000, own subsets)", lambda: f"{cleanfid.kernel_distance(fake, real):.6g}")


if __name__ == "__main__":
    main()
