"""The reference statistics a suite names: loaded from a file (any official format) or drawn
exactly from an analytic model, checked against the run's extractor, profile and metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .checkpoints import sha256_file
from .features import FeatureExtractor
from .images import to_uint8
from .batch_size import unsampled_batch_size
from .metrics import METRICS, ReferenceStats
from .metrics.reference import load_reference
from .profiles import PROFILES
from .seeds import seed_range
from .stats import attach_image_features
from .suite import Suite


def analytic_reference(suite: Suite, model, extractor: FeatureExtractor, layers: tuple[str, ...]) -> ReferenceStats:
    """Reference statistics from exact draws of an analytic mixture (seed ``seed + i`` per image)."""
    spec = suite.reference
    mixture = model.mixture
    pool: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    seeds = seed_range(spec["seed"], spec["num_images"])
    batch_size = unsampled_batch_size(suite.batch_size)
    for i in range(0, len(seeds), batch_size):
        gens = [torch.Generator().manual_seed(s % (1 << 32)) for s in seeds[i : i + batch_size]]
        comps = torch.stack([torch.multinomial(mixture.weights.cpu(), 1, generator=g)[0] for g in gens])
        normals = torch.stack([torch.randn(mixture.dim, generator=g, dtype=torch.float64) for g in gens])
        x = mixture.sample(comps.to(mixture.means.device), normals.to(mixture.means.device))
        images = to_uint8(x.reshape(-1, *model.image_shape), suite.quantisation)
        feats = extractor.extract(images, layers)
        for layer in layers:
            pool[layer].append(feats[layer].float().cpu())
    features = {layer: torch.cat(parts).numpy() for layer, parts in pool.items()}
    meta = {
        **extractor.identity, "num_images": spec["num_images"], "resolution": list(model.image_shape[1:]),
        "source": f"exact draws of analytic model {spec['model']!r} (seeds {seeds[0]}..{seeds[-1]})",
        "quantisation": suite.quantisation,
    }
    keep = {layer: rows for layer, rows in (("pool", min(spec["num_images"], 10000)), ("clip", spec["num_images"]))
            if layer in features} or None
    return ReferenceStats.from_features(features, meta, keep_features=keep)


def reference_path(suite: Suite) -> Path:
    """The suite's reference file, which must exist. A registry entry's folder is relative to the
    current directory (where ``cmbench stats fetch`` puts files); a ``path`` to the suite's folder."""
    given = suite.reference["path"]
    path = Path(given).expanduser() if "registry" in suite.reference else suite.resolve(given)
    if not path.is_file():
        how = (f"run `cmbench stats fetch {suite.reference['registry']} --dest {path.parent}`, or set "
               f"reference.dir to the folder holding {path.name}" if "registry" in suite.reference
               else "give reference.path an existing .npz (relative paths start at the suite's folder)")
        raise FileNotFoundError(f"{suite.source}: reference statistics {path} do not exist: {how}")
    return path


def load_suite_reference(suite: Suite, models: dict, extractor: FeatureExtractor):
    """The reference statistics a suite names, checked against the run's extractor, and a description."""
    if not suite.reference:
        return None, {}
    if "path" in suite.reference:
        path = reference_path(suite)
        stats = load_reference(path)
        stats.check_compatible(extractor.identity, str(path), _checked_layers(stats, extractor))
        check_profile_reference(suite, stats, path)
        missing = [layer for layer in _real_feature_layers(suite) if layer not in stats.features]
        if stats.images is not None and missing:
            attach_image_features(stats, extractor, layers=missing)  # an ADM batch: the real set is its images
        _check_reference_covers(stats, suite, path)
        return stats, {"path": str(path), "sha256": sha256_file(path), **stats.meta}
    layers = tuple(sorted({*_reference_layers(suite), *_real_feature_layers(suite)}))
    stats = analytic_reference(suite, models[suite.reference["model"]], extractor, layers)
    return stats, {**suite.reference, **stats.meta, "sha256": reference_sha256(suite, extractor)}


def reference_sha256(suite: Suite, extractor: FeatureExtractor) -> str | None:
    """What identifies the suite's reference statistics in result rows: the file's sha256, or for
    exact draws of an analytic model a sha256 of everything that determines them (the draws'
    spec, the model's definition, the extractor and the quantisation); None without a reference."""
    if not suite.reference:
        return None
    if "path" in suite.reference:
        return sha256_file(reference_path(suite))
    model = suite.models[suite.reference["model"]]
    spec = {"analytic": suite.reference, "family": model.family, "options": model.options,
            "extractor": extractor.identity, "quantisation": suite.quantisation}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


REAL_FEATURE_METRICS = {"precision_recall": "pool", "kid": "pool", "density_coverage": "pool", "cmmd": "clip"}
"""Metrics that compare against real feature rows, not just their statistics, and the layer of those rows."""


def _real_feature_layers(suite: Suite) -> list[str]:
    """The layers whose real feature rows the suite's metrics compare against."""
    return sorted({REAL_FEATURE_METRICS[m] for m in suite.metrics if m in REAL_FEATURE_METRICS})


def _reference_layers(suite: Suite) -> tuple[str, ...]:
    """The feature layers whose real-data statistics the suite's metrics compare against (CMMD
    needs the rows only)."""
    return tuple(sorted({layer for m in suite.metrics if METRICS[m].needs_reference and m != "cmmd"
                         for layer in METRICS[m].layers}))


def _checked_layers(stats: ReferenceStats, extractor: FeatureExtractor) -> list[str]:
    """The reference's layers the run's extractor makes (each checked against the network that made
    it); all of them when it makes none, so a file of another network is refused by name."""
    held = set(stats.mu) | set(stats.features)
    return sorted(held & set(extractor.layers)) or sorted(held)


def _check_reference_covers(stats: ReferenceStats, suite: Suite, path: Path) -> None:
    """Fail before sampling when a reference file cannot serve the suite's metrics."""
    missing = sorted(set(_reference_layers(suite)) - set(stats.mu))
    if missing:
        raise ValueError(f"reference statistics {path} have no layer(s) {', '.join(missing)}; they have {', '.join(sorted(stats.mu))}")
    if "cmmd" in suite.metrics:
        real = stats.features.get("clip")
        if real is None or len(real) < 2:
            raise ValueError(f"reference statistics {path} keep {0 if real is None else len(real)} real CLIP rows "
                             "(features.clip); CMMD compares against the whole reference set: compute the file with "
                             "`cmbench stats compute ... --extractor clip-vitl14-336`")
    if "precision_recall" in suite.metrics:
        real = stats.features.get("pool")
        if real is None or len(real) <= suite.metric_options.pr_k:
            count = 0 if real is None else len(real)
            raise ValueError(f"reference statistics {path} keep {count} real feature rows; precision/recall "
                             f"with k = {suite.metric_options.pr_k} needs more (recompute them keeping features)")


def check_profile_reference(suite: Suite, stats: ReferenceStats, path: Path) -> None:
    """A profile's numbers are against its protocol's reference files; others are refused."""
    if suite.profile and stats.format not in PROFILES[suite.profile].reference_formats:
        accepted = ", ".join(PROFILES[suite.profile].reference_formats)
        raise ValueError(f"reference statistics {path} are in format {stats.format!r}; profile {suite.profile} "
                         f"compares against {accepted} files")
