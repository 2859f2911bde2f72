"""Metrics: pure functions of feature layers (and reference statistics), numbers out.

The registry tells the runner which feature layers each metric needs (so features are extracted
once, for the union), which result columns it fills and whether it needs reference statistics.
Conventions that change a number (IS splits, precision/recall k and batch size, the FID matrix
square root, KID subsets, density/coverage k) are fields of :class:`MetricOptions`, set by the evaluator profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

# Submodules are bound by module name (cmbench.metrics.precision_recall stays the module, not
# the function of the same name).
from cmbench.metrics import cmmd, fid, inception_score, kid, precision_recall
from cmbench.metrics.neighbours import BallTests, ball_counts, nearest_sq_distances, reference_nearest
from cmbench.metrics.reference import ReferenceStats


@dataclass(frozen=True)
class MetricOptions:
    """Metric conventions; defaults follow the ADM evaluator / EDM (facts.md §4), KID's
    torch-fidelity and density/coverage's prdc (k = 5)."""

    is_splits: int = 10
    pr_k: int = 3
    pr_batch_size: int = 10000
    fid_sqrt: str = "eigh"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    dc_k: int = 5
    kid_capped: bool = False  # clean-fid: subsets of min(kid_subset_size, N_real, N_fake) rows
    kid_products: str = "float32"  # inner products' dtype (as torch-fidelity, clean-fid); float64 exact
    is_split_size: int | None = None  # fixed-size IS splits (ADM: 5000) instead of is_splits parts
    is_shuffle_seed: int | None = None  # permute rows before splitting (torch-fidelity: 2020)

    def __post_init__(self) -> None:
        for name in ("is_splits", "pr_k", "pr_batch_size", "kid_subsets", "kid_subset_size", "dc_k"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"metric option {name} must be a positive integer; got {value!r}")
        if not isinstance(self.kid_capped, bool):
            raise ValueError(f"metric option kid_capped must be true or false; got {self.kid_capped!r}")
        for name in ("is_split_size", "is_shuffle_seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
                raise ValueError(f"metric option {name} must be a non-negative integer or null; got {value!r}")
        if self.kid_subset_size < 2:
            raise ValueError(
                f"metric option kid_subset_size must be at least 2 (the unbiased MMD² divides by "
                f"m(m − 1)); got {self.kid_subset_size}"
            )
        if self.kid_products not in kid.PRODUCTS:
            raise ValueError(
                f"metric option kid_products is {self.kid_products!r}; accepted: {', '.join(kid.PRODUCTS)}"
            )
        if self.fid_sqrt not in fid.FID_SQRT_METHODS:
            raise ValueError(
                f"metric option fid_sqrt is {self.fid_sqrt!r}; accepted: {', '.join(fid.FID_SQRT_METHODS)}"
            )


@dataclass(frozen=True)
class Metric:
    name: str
    layers: tuple[str, ...]
    columns: tuple[str, ...]
    needs_reference: bool
    compute: Callable[..., dict[str, float]]  # (features, reference, options[, device]) -> columns
    uses_device: bool = False  # computes on the run's device (the k-NN metrics, KID)


def _frechet(layer: str, column: str, metric: str, hint: str):
    """The Fréchet distance of one layer's features to the reference's statistics of that layer
    (FID on Inception's ``pool``, sFID on ``spatial``, FD_DINOv2 on ``dinov2``): one code path."""

    def compute(features: dict[str, np.ndarray], reference: ReferenceStats, options: MetricOptions) -> dict[str, float]:
        if layer not in reference.mu:
            raise ValueError(
                f"reference statistics have no {layer!r} layer for {metric} (they have: "
                f"{', '.join(sorted(reference.mu)) or 'none'}); {hint}"
            )
        mu, sigma = fid.feature_statistics(features[layer])
        return {column: fid.frechet_distance(mu, sigma, reference.mu[layer], reference.sigma[layer], options.fid_sqrt)}

    return compute


_fid = _frechet("pool", "fid", "FID", "recompute them with layer 'pool'")
_sfid = _frechet("spatial", "sfid", "sFID",  # Nash et al. 2021, as ADM's evaluator
                 "use an ADM reference batch or recompute them with the spatial layer")
_fd_dinov2 = _frechet("dinov2", "fd_dinov2", "FD_DINOv2",  # Stein et al. 2023, as EDM2's calculate_metrics.py
                      "use EDM2's reference statistics (img64.pkl, img512.pkl) or recompute them with "
                      "`cmbench stats compute --extractor inception-tf --extractor dinov2-vitl14`")


def _inception_score(
    features: dict[str, np.ndarray], reference: ReferenceStats | None, options: MetricOptions
) -> dict[str, float]:
    mean, std = inception_score.inception_score(
        features["logits"], splits=options.is_splits, split_size=options.is_split_size, shuffle_seed=options.is_shuffle_seed
    )
    return {"is_mean": mean, "is_std": std}


def _real_pool_features(reference: ReferenceStats, metric: str) -> np.ndarray:
    if "pool" not in reference.features:
        raise ValueError(
            f"the reference file has no real features for {metric} (array 'features.pool'); "
            "recompute the reference statistics keeping real features, e.g. "
            "ReferenceStats.from_features(..., keep_features={'pool': 10000})"
        )
    return reference.features["pool"]


KNN_METRICS = ("precision_recall", "density_coverage")


def _knn_metrics(
    names: Iterable[str], features: dict[str, np.ndarray], reference: ReferenceStats, options: MetricOptions, device=None
) -> dict[str, float]:
    """Precision/recall and density/coverage (those of ``names``) in one pass over the real × fake
    distances; the real set's neighbours come from the reference, computed once per run."""
    names = set(names)
    k = options.pr_k if "precision_recall" in names else options.dc_k
    real, fake = precision_recall.prepare_pair(
        _real_pool_features(reference, "precision/recall" if "precision_recall" in names else "density/coverage"),
        features["pool"], k, options.pr_batch_size, torch.float32, device,
    )
    if len(fake) < 1:
        raise ValueError("the k-NN metrics need at least one generated feature row; got 0")
    batch = options.pr_batch_size
    depth = max(options.pr_k if "precision_recall" in names else 0, options.dc_k if "density_coverage" in names else 0)
    real_nearest = reference_nearest(reference, "pool", real, depth, batch)
    tests = BallTests(
        precision=(real_nearest[:, options.pr_k], nearest_sq_distances(fake, options.pr_k, batch)[:, options.pr_k])
        if "precision_recall" in names else None,
        density=real_nearest[:, options.dc_k] if "density_coverage" in names else None,
    )
    counts = ball_counts(real, fake, tests, batch)
    out = {}
    if "precision_recall" in names:
        out.update(precision=counts.precision, recall=counts.recall)
    if "density_coverage" in names:
        out.update(density=counts.density_pairs / (options.dc_k * len(fake)), coverage=counts.coverage)
    return out


def _knn_metric(name: str):
    def compute(features, reference, options, device=None) -> dict[str, float]:
        return _knn_metrics((name,), features, reference, options, device)

    return compute


def _kid(features: dict[str, np.ndarray], reference: ReferenceStats, options: MetricOptions, device=None) -> dict[str, float]:
    real = _real_pool_features(reference, "KID")
    size = min(options.kid_subset_size, len(real), len(features["pool"])) if options.kid_capped else options.kid_subset_size
    mean, std = kid.kernel_inception_distance(
        real,
        features["pool"],
        subsets=options.kid_subsets,
        subset_size=size,
        device=device,
        products=options.kid_products,
    )
    return {"kid": mean, "kid_std": std}


def _cmmd(features: dict[str, np.ndarray], reference: ReferenceStats, options: MetricOptions, device=None) -> dict[str, float]:
    """CMMD (Jayasumana et al. 2024): MMD² of CLIP embeddings against the whole reference set."""
    if "clip" not in reference.features:
        raise ValueError(
            "the reference file keeps no real CLIP embeddings for CMMD (array 'features.clip'); compute it with "
            "`cmbench stats compute --extractor ... --extractor clip-vitl14-336`, which keeps every CLIP row"
        )
    return {"cmmd": cmmd.cmmd(reference.features["clip"], features["clip"], device=device)}


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("fid", ("pool",), ("fid",), True, _fid),
        Metric("sfid", ("spatial",), ("sfid",), True, _sfid),
        Metric("fd_dinov2", ("dinov2",), ("fd_dinov2",), True, _fd_dinov2),
        Metric("cmmd", ("clip",), ("cmmd",), True, _cmmd, uses_device=True),
        Metric("inception_score", ("logits",), ("is_mean", "is_std"), False, _inception_score),
        Metric("precision_recall", ("pool",), ("precision", "recall"), True, _knn_metric("precision_recall"), uses_device=True),
        Metric("kid", ("pool",), ("kid", "kid_std"), True, _kid, uses_device=True),
        Metric("density_coverage", ("pool",), ("density", "coverage"), True, _knn_metric("density_coverage"), uses_device=True),
    )
}


DIRECTIONS: dict[str, str] = {
    "fid": "lower", "sfid": "lower", "fd_dinov2": "lower", "cmmd": "lower", "kid": "lower", "is_mean": "higher", "precision": "higher", "recall": "higher",
    "density": "higher", "coverage": "higher", "bpd": "lower",
    "psnr": "higher", "ssim": "higher", "lpips": "lower",  # editing rows, against the ground truth
}
"""The result columns that score a model, each with the direction that is better. Companion
spreads (``is_std`` over IS splits, ``kid_std`` over KID subsets) describe the metric's own
convention, not the model, and are not scored."""


def se_column(column: str) -> str:
    """The result column holding ``column``'s standard error (``bpd`` has ``bpd_stderr`` from the
    likelihood; every other scored column ``<column>_se`` from the bootstrap)."""
    return "bpd_stderr" if column == "bpd" else f"{column}_se"


def scored_columns(metric_names: Iterable[str]) -> tuple[str, ...]:
    """The scored columns (those in :data:`DIRECTIONS`) the named metrics fill, in registry order."""
    return tuple(col for m in _lookup(metric_names) for col in m.columns if col in DIRECTIONS)


def _lookup(names: Iterable[str]) -> list[Metric]:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(METRICS)}")
    return [METRICS[n] for n in names]


def layers_for(metric_names: Iterable[str]) -> tuple[str, ...]:
    """Sorted union of the feature layers the named metrics need."""
    return tuple(sorted({layer for m in _lookup(metric_names) for layer in m.layers}))


def compute_metrics(
    names: Iterable[str],
    features: dict[str, np.ndarray],
    reference: ReferenceStats | None,
    options: MetricOptions,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Run the named metrics on ``features`` (layer → ``[N, ...]``); returns column → value.

    The k-NN metrics and KID compute on ``device`` (CPU when None), in bounded batches; the k-NN
    metrics share one pass over the distances and keep the reference's neighbours for later rows."""
    metrics = _lookup(names)
    knn = [m.name for m in metrics if m.name in KNN_METRICS]
    results: dict[str, float] = {}
    for metric in metrics:
        missing = [layer for layer in metric.layers if layer not in features]
        if missing:
            raise ValueError(
                f"metric {metric.name!r} needs feature layer(s) {', '.join(missing)}; "
                f"got layers: {', '.join(sorted(features)) or 'none'}"
            )
        if metric.needs_reference and reference is None:
            raise ValueError(f"metric {metric.name!r} needs reference statistics; none were given")
        if metric.name in knn[1:]:
            continue  # computed with the first k-NN metric, in the same pass
        if metric.name in knn:
            results.update(_knn_metrics(knn, features, reference, options, device))
        else:
            results.update(metric.compute(features, reference, options, **({"device": device} if metric.uses_device else {})))
    return results


__all__ = [
    "DIRECTIONS",
    "METRICS",
    "Metric",
    "MetricOptions",
    "ReferenceStats",
    "compute_metrics",
    "layers_for",
    "scored_columns",
    "se_column",
]
