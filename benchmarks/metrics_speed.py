"""Every metric on the same features, cmbench beside torch-fidelity, clean-fid and prdc, against
the machine's own limit measured in the same run.

Features are random, shaped like Inception's: ``N`` real and ``N`` generated rows of pool3
(2048-d, non-negative like post-ReLU activations) and 1008 logits. For each size the tasks run
in turn, ``--repeats`` times round (interleaved, so a change in the machine's load falls on all
alike; the order is shuffled each round, as a call runs slower right after another library's
BLAS threads were busy); a task whose first run took over ``--slow`` seconds gets at most two. Per task: min and
median seconds, the ratio of the medians to the fastest peer's, and the multiple of its FLOP
bound: the floating-point work of cmbench's algorithm at the matrix-product rate measured at the
start (float32 for k-NN and KID products, float64 for FID statistics; FID's square root: a
Cholesky factorisation and two triangular products at the float64 rate, and the measured
``eigvalsh``). The values are printed with their largest relative
difference from cmbench's, so the comparison is of equal work.

Equal work: torch-fidelity's IS shuffles its rows with RandomState(2020) and cmbench's runs with
the same ``shuffle_seed``; KID is torch-fidelity's 100 × 1000 subsets for both (clean-fid draws its
own from the global RNG, so its value differs by sampling noise); prdc computes precision, recall,
density and coverage in one call, so it stands beside cmbench computing all four with k = 5. prdc
holds three N × N distance matrices (30 GB at 50k) and is left out above 10k. torch-fidelity and
clean-fid are imported without torchvision (:mod:`cmbench.reference_impls`).

    python benchmarks/metrics_speed.py                        # 10k and 50k, 3 repetitions
    python benchmarks/metrics_speed.py --sizes 10000 --repeats 5
    python benchmarks/metrics_speed.py --sizes 2000 --repeats 2 --dim 256   # a quick look
    python benchmarks/metrics_speed.py --only KID FID                      # some metrics
"""

from __future__ import annotations

import os

# As the command line does (cmbench.threads.prefer_passive_waiting), before torch and numpy load:
# idle OpenMP threads sleep rather than spin, so one library's idle threads do not slow the next
# call, of any library.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cmbench.metrics import MetricOptions, ReferenceStats, compute_metrics  # noqa: E402
from cmbench.metrics import fid as cm_fid  # noqa: E402
from cmbench.metrics.inception_score import inception_score  # noqa: E402
from cmbench.metrics.kid import kernel_inception_distance  # noqa: E402
from cmbench.metrics.prdc import density_coverage  # noqa: E402
from cmbench.metrics.precision_recall import precision_recall  # noqa: E402
from cmbench.reference_impls import import_reference  # noqa: E402

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PRDC_MAX_ROWS = 10_000


@dataclass
class Task:
    metric: str
    who: str
    run: Callable[[], object]
    bound: float | None = None  # seconds of the FLOP bound (cmbench's algorithm at the measured rate)
    times: list[float] = field(default_factory=list)
    value: object = None


def best_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_limits(dim: int) -> dict[str, float]:
    """Matrix-product rates (flop/s) in float32 and float64 and the seconds of eigh / eigvalsh of a
    ``dim`` × ``dim`` symmetric matrix, best of three, measured with the libraries cmbench uses."""
    rng = np.random.default_rng(0)
    n = 4096
    a32 = torch.from_numpy(rng.random((n, dim), dtype=np.float32))
    b32 = torch.from_numpy(rng.random((dim, n), dtype=np.float32))
    a64, b64 = a32.double().numpy(), b32.double().numpy()
    flops = 2.0 * n * n * dim
    sym = np.cov(rng.normal(size=(2 * dim, dim)), rowvar=False)
    return {
        "float32": flops / best_seconds(lambda: a32 @ b32),
        "float64": flops / max(1e-9, min(best_seconds(lambda: a64 @ b64), best_seconds(lambda: torch.from_numpy(a64) @ torch.from_numpy(b64)))),
        "eigh": best_seconds(lambda: np.linalg.eigh(sym)),
        "eigvalsh": best_seconds(lambda: np.linalg.eigvalsh(sym)),
    }


def features(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = np.abs(rng.normal(size=(n, dim))).astype(np.float32) * 0.4
    fake = (np.abs(rng.normal(size=(n, dim))) * 0.42 + 0.01).astype(np.float32)
    logits = rng.normal(0, 3, size=(n, 1008)).astype(np.float32)
    return real, fake, logits


def reference_of(real: np.ndarray) -> ReferenceStats:
    """A fresh reference holding ``real`` (so nothing is cached between timings)."""
    meta = {"extractor": "random", "extractor_sha256": "0", "num_images": len(real), "resolution": 0, "source": "random"}
    return ReferenceStats(mu={}, sigma={}, features={"pool": real}, meta=meta)


def cmbench_tasks(real, fake, logits, limits) -> list[Task]:
    n, d = real.shape
    r32, r64 = limits["float32"], limits["float64"]
    stats = {}

    def both_statistics():
        stats["fake"], stats["real"] = cm_fid.feature_statistics(fake), cm_fid.feature_statistics(real)

    both_statistics()
    fid_bound = limits["eigvalsh"] + (d**3 / 3 + 2 * d**3) / r64  # Cholesky, two triangular products, eigvalsh
    cached = reference_of(real)
    run_options = MetricOptions(pr_k=3)
    compute_metrics(["precision_recall"], {"pool": fake}, cached, run_options)  # the run has the reference's neighbours
    five = MetricOptions(pr_k=5, dc_k=5)
    return [
        Task("FID statistics (both sets)", "cmbench", both_statistics, bound=2 * n * d * d / r64),
        Task("FID from statistics", "cmbench eigh", lambda: cm_fid.frechet_distance(*stats["fake"], *stats["real"], "eigh"),
             bound=fid_bound),
        Task("FID from statistics", "cmbench sqrtm", lambda: cm_fid.frechet_distance(*stats["fake"], *stats["real"], "sqrtm")),
        Task("IS (10 splits, RandomState(2020) shuffle)", "cmbench", lambda: inception_score(logits, 10, shuffle_seed=2020)),
        Task(f"KID ({KID_SUBSETS} × {KID_SUBSET_SIZE})", "cmbench", lambda: kernel_inception_distance(real, fake),
             bound=KID_SUBSETS * 4 * KID_SUBSET_SIZE**2 * d / r32),
        Task("precision/recall (k = 3)", "cmbench", lambda: precision_recall(real, fake, k=3), bound=4 * n * n * d / r32),
        Task("precision/recall (k = 3)", "cmbench, in a run (reference neighbours known)",
             lambda: tuple(compute_metrics(["precision_recall"], {"pool": fake}, cached, run_options).values()),
             bound=3 * n * n * d / r32),
        Task("density/coverage (k = 5)", "cmbench", lambda: density_coverage(real, fake, k=5), bound=3 * n * n * d / r32),
        Task("precision/recall + density/coverage (k = 5)", "cmbench",
             lambda: tuple(compute_metrics(["precision_recall", "density_coverage"], {"pool": fake}, reference_of(real), five).values()),
             bound=4 * n * n * d / r32),
    ]


def peer_tasks(real, fake, logits) -> list[Task]:
    n = len(real)
    tf_fid, tf_isc, tf_kid, tf_prc = (import_reference(f"torch_fidelity.metric_{m}") for m in ("fid", "isc", "kid", "prc"))
    cleanfid = import_reference("cleanfid.fid")
    fake_t, real_t = torch.from_numpy(fake), torch.from_numpy(real)
    stats = {side: tf_fid.fid_features_to_statistics(x) for side, x in (("fake", fake_t), ("real", real_t))}
    np_stats = {side: (np.mean(x, axis=0), np.cov(x, rowvar=False)) for side, x in (("fake", fake), ("real", real))}
    kid_options = {"kid_subsets": KID_SUBSETS, "kid_subset_size": KID_SUBSET_SIZE, "kid_kernel": "poly",
                   "kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1,
                   "rng_seed": 2020, "verbose": False}
    # save_cpu_ram: without it torch-fidelity holds the whole N × N distance matrix (10 GB at 50k).
    prc_options = {"prc_neighborhood": 3, "prc_batch_size": 10000, "save_cpu_ram": n > PRDC_MAX_ROWS, "verbose": False}

    def clean_fid_kid():
        np.random.seed(0)
        return cleanfid.kernel_distance(fake, real, num_subsets=KID_SUBSETS, max_subset_size=KID_SUBSET_SIZE)

    tasks = [
        Task("FID statistics (both sets)", "numpy mean + cov (clean-fid)",
             lambda: [(np.mean(x, axis=0), np.cov(x, rowvar=False)) for x in (fake, real)]),
        Task("FID statistics (both sets)", "torch-fidelity", lambda: [tf_fid.fid_features_to_statistics(x) for x in (fake_t, real_t)]),
        Task("FID from statistics", "torch-fidelity",
             lambda: tf_fid.fid_statistics_to_metric(stats["fake"], stats["real"], False)["frechet_inception_distance"]),
        Task("FID from statistics", "clean-fid", lambda: cleanfid.frechet_distance(*np_stats["fake"], *np_stats["real"])),
        Task("IS (10 splits, RandomState(2020) shuffle)", "torch-fidelity",
             lambda: tuple(tf_isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020).values())),
        Task(f"KID ({KID_SUBSETS} × {KID_SUBSET_SIZE})", "torch-fidelity",
             lambda: tuple(tf_kid.kid_features_to_metric(fake_t, real_t, **kid_options).values())),
        Task(f"KID ({KID_SUBSETS} × {KID_SUBSET_SIZE})", "clean-fid (own subsets)", clean_fid_kid),
        Task("precision/recall (k = 3)", "torch-fidelity",
             lambda: _precision_recall_of(tf_prc.prc_features_to_metric(fake_t, real_t, **prc_options))),
    ]
    if n <= PRDC_MAX_ROWS:
        try:
            import prdc
        except ImportError:
            print("prdc is not installed: its rows are left out (pip install prdc)")
        else:
            tasks += [
                Task("density/coverage (k = 5)", "prdc's functions", lambda: _prdc_density_coverage(prdc, real, fake, 5)),
                Task("precision/recall + density/coverage (k = 5)", "prdc",
                     lambda: tuple(prdc.compute_prdc(real, fake, 5).values())),
            ]
    return tasks


def _precision_recall_of(metrics: dict) -> tuple[float, float]:
    return metrics["precision"], metrics["recall"]


def _prdc_density_coverage(prdc, real, fake, k):
    """Density and coverage from prdc's own building blocks (its compute_prdc also makes P/R)."""
    radii = prdc.prdc.compute_nearest_neighbour_distances(real, k)
    distances = prdc.prdc.compute_pairwise_distance(real, fake)
    density = (1.0 / k) * (distances < radii[:, None]).sum(axis=0).mean()
    coverage = (distances.min(axis=1) < radii).mean()
    return density, coverage


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float, np.floating, np.integer, torch.Tensor)) else []


def _difference(value, ours) -> str:
    a, b = _numbers(value), _numbers(ours)
    if not a or len(a) != len(b):
        return ""
    worst = max(abs(x - y) / max(abs(y), 1e-300) for x, y in zip(a, b))
    return f"{worst:.1e}"


def _shown(value) -> str:
    numbers = _numbers(value)
    return ", ".join(f"{x:.6g}" for x in numbers[:4]) if numbers else "(statistics)"


def run_size(n: int, dim: int, repeats: int, slow: float, limits: dict[str, float], only: list[str] | None = None) -> None:
    real, fake, logits = features(n, dim)
    tasks = cmbench_tasks(real, fake, logits, limits) + peer_tasks(real, fake, logits)
    tasks = [t for t in tasks if only is None or t.metric.startswith(tuple(only))]
    for rep in range(repeats):
        for task in random.Random(rep).sample(tasks, len(tasks)):  # no task always follows the same one
            if rep >= 2 and task.times and task.times[0] > slow:
                continue
            start = time.perf_counter()
            task.value = task.run()
            task.times.append(time.perf_counter() - start)
    print(f"\n## {n:,} real and {n:,} generated rows × {dim}, {torch.get_num_threads()} torch threads")
    print(f"{'metric':<44} {'implementation':<48} {'runs':>4} {'min s':>8} {'median s':>9} "
          f"{'× fastest peer':>14} {'× bound':>8}  value (largest relative difference from cmbench)")
    for metric in dict.fromkeys(t.metric for t in tasks):
        group = [t for t in tasks if t.metric == metric]
        ours = next(t for t in group if t.who.startswith("cmbench"))
        peers = [statistics.median(t.times) for t in group if not t.who.startswith("cmbench")]
        fastest = min(peers) if peers else None
        for t in group:
            median = statistics.median(t.times)
            ratio = f"{median / fastest:.2f}" if fastest and t.who.startswith("cmbench") else ""
            bound = f"{median / t.bound:.2f}" if t.bound else ""
            difference = "" if t is ours else _difference(t.value, ours.value)
            print(f"{metric:<44} {t.who:<48} {len(t.times):>4} {min(t.times):>8.3f} {median:>9.3f} {ratio:>14} {bound:>8}  "
                  f"{_shown(t.value)}{f' ({difference})' if difference else ''}")
    three = 3 * 2.0 * n * n * dim / limits["float32"]
    pr_tasks = [t for t in tasks if t.metric.startswith("precision/recall (k") and t.who == "cmbench"]
    if not pr_tasks:
        return
    pr = statistics.median(pr_tasks[0].times)
    print(f"precision/recall: {pr:.1f} s = {pr / three:.2f} × the time of three {n:,} × {n:,} × {dim} float32 products "
          f"({three:.1f} s at the measured rate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="rows per set (default 10000 50000)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", type=float, default=100.0, help="a task over this many seconds runs at most twice")
    parser.add_argument("--only", nargs="+", help="the metrics whose names start with these, e.g. KID FID")
    args = parser.parse_args()
    limits = machine_limits(args.dim)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"measured: float32 products {limits['float32'] / 1e9:.0f} GFLOP/s, float64 {limits['float64'] / 1e9:.0f} GFLOP/s, "
          f"eigh({args.dim}) {limits['eigh']:.2f} s, eigvalsh {limits['eigvalsh']:.2f} s")
    for n in args.sizes:
        run_size(n, args.dim, args.repeats, args.slow, limits, args.only)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
