"""``cmbench stats``: compute, list, fetch and inspect reference statistics (see cmbench.stats)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .choices import DEVICES, OFFICIAL_REFERENCE_DEST, QUANTISATIONS, REFERENCE_FORMATS, STATS_BATCH_SIZE, STATS_KEEP
from .cli_args import add_progress_options, integer_at_least, non_negative_integer, positive_integer

if TYPE_CHECKING:  # the parser is built without importing torch
    import torch

    from .features import FeatureExtractor


def stats_compute_command(args: argparse.Namespace) -> int:
    from .metrics.reference import save_reference
    from .run_context import resolve_device
    from .stats import compute_reference_stats, input_channels, open_images

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"reference statistics file {args.out} exists; pass --overwrite to replace it")
    if args.suite and (args.checkpoint or args.weights):
        raise ValueError("--checkpoint and --weights go with --extractor; with --suite the suite's features block names them")
    device = resolve_device(args.device, args.world.local_rank)
    quantisation = args.quantisation
    if args.suite:
        from .cli import resolve_suite
        from .suite import load_suite

        suite = load_suite(resolve_suite(args.suite))
        extractor = extractor_from_suite(suite, device)
    else:
        extractor = extractor_from_name(args.extractor, checkpoint=args.checkpoint, weights=args.weights, device=device)
    source = open_images(args.images, channels=input_channels(extractor), quantisation=quantisation, limit=args.limit)
    layers = args.layers.split(",") if args.layers else None
    stats = compute_reference_stats(source, extractor, layers=layers, keep=args.keep_features,
                                    batch_size=args.batch_size, device=device, progress=args.progress,
                                    world=args.world)
    if not args.world.main:  # the main rank writes the file
        return 0
    save_reference(args.out, stats, overwrite=args.overwrite)
    kept = ", ".join(f"{len(rows)} {layer}" for layer, rows in stats.features.items()) or "0 pool"
    others = "".join(f"; {layer}: {who['extractor']} (sha256 {who['extractor_sha256']})"
                     for layer, who in stats.meta.get("layer_extractors", {}).items())
    print(f"wrote {args.out}: {stats.meta['source']}, layers "
          + ", ".join(f"{layer} ({dim}-d)" for layer, dim in stats.meta["layers"].items())
          + f", {kept} rows kept; extractor {stats.meta['extractor']} "
          f"(sha256 {stats.meta['extractor_sha256']}){others}")
    return 0


def _stats_list(args: argparse.Namespace) -> int:
    from .metrics.reference_registry import load_registry

    registry = load_registry(args.registry)
    rows = [("name", "format", "profile", "dataset", "res", "sha256", "url")]
    for e in registry.values():
        rows.append((e.name, e.format, e.profile, e.dataset + (f" {e.split}" if e.split else ""),
                     f"{e.resolution[0]}x{e.resolution[1]}", e.sha256[:12] if e.sha256 else "unpublished", e.url))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _stats_fetch(args: argparse.Namespace) -> int:
    from .metrics.reference_registry import fetch_reference, find_entry, load_registry

    entry = find_entry(load_registry(args.registry), args.name)
    path, digest, downloaded = fetch_reference(entry, args.dest, progress=args.progress)
    check = "verified against the registry" if entry.sha256 else "the registry has no published sha256 to check"
    print(f"{'downloaded' if downloaded else 'already present'}: {path}\nsha256 {digest} ({check})\n"
          f"format {entry.format}, profile {entry.profile}; use it as reference: {{path: {path}}}")
    return 0


def _stats_info(args: argparse.Namespace) -> int:
    from .metrics.reference import load_reference

    stats = load_reference(args.file, format=args.format)
    info = {
        "format": stats.format,
        "layers": {layer: int(mu.shape[0]) for layer, mu in stats.mu.items()},
        "kept_features": {layer: list(x.shape) for layer, x in stats.features.items()},
        "images": stats.images.describe() if stats.images else None,
        "meta": stats.meta,
    }
    print(json.dumps(info, indent=2, ensure_ascii=False, default=str))
    return 0


def add_stats_parser(sub) -> None:
    stats = sub.add_parser("stats", help="reference statistics: compute them from images, list and fetch official ones")
    group = stats.add_subparsers(dest="stats_command", required=True)

    compute = group.add_parser("compute", help="statistics of real images (float64 streaming), with kept features for precision/recall")
    which = compute.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="use this suite's features block (a file or bundled suite name)")
    which.add_argument("--extractor", action="append",
                       help="feature extractor by name (e.g. toy-classifier, pixels, inception-tf, dinov2-vitl14, "
                            "clip-vitl14-336); repeat it for one file with several networks' layers (e.g. inception-tf "
                            "and dinov2-vitl14 for the edm2 profile)")
    compute.add_argument("--checkpoint", help="with --extractor: the first extractor's checkpoint (toy-classifier)")
    compute.add_argument("--weights", help="with --extractor: the first extractor's weights file (the others' are "
                                           "found as `cmbench weights` describes)")
    compute.add_argument("--images", required=True,
                         help="an image folder (PNG/JPEG, recursive, sorted by path), an .npz with NHWC images in arr_0, or toy:SPLIT")
    compute.add_argument("--out", type=Path, required=True, help="reference file (.npz) to write")
    compute.add_argument("--keep-features", type=non_negative_integer, default=STATS_KEEP, metavar="N",
                         help=f"keep the first N pool feature rows for precision/recall, KID, density/coverage (default {STATS_KEEP}; 0: none)")
    compute.add_argument("--batch-size", type=positive_integer, default=STATS_BATCH_SIZE, help=f"images per extraction batch (default {STATS_BATCH_SIZE}; no effect on the numbers)")
    compute.add_argument("--quantisation", choices=QUANTISATIONS, help="float images in an .npz: how they become uint8 (see Metrics and conventions)")
    compute.add_argument("--layers", help="comma-separated layers (default: every layer the extractor has)")
    compute.add_argument("--limit", type=integer_at_least(2), help="use only the first N images")
    compute.add_argument("--device", choices=DEVICES, default="auto")
    compute.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_progress_options(compute)
    compute.set_defaults(func=stats_compute_command)

    listing = group.add_parser("list", help="list the official reference files in the registry")
    listing.add_argument("--registry", type=Path, help="registry file (default: the shipped reference_stats/registry.yaml)")
    listing.set_defaults(func=_stats_list)

    fetch = group.add_parser("fetch", help="download an official reference file named in the registry")
    fetch.add_argument("name", help="registry name (or file name), see `cmbench stats list`")
    fetch.add_argument("--dest", type=Path, default=OFFICIAL_REFERENCE_DEST,
                       help=f"folder to put it in (default {OFFICIAL_REFERENCE_DEST})")
    fetch.add_argument("--registry", type=Path, help="registry file (default: the shipped one)")
    add_progress_options(fetch)
    fetch.set_defaults(func=_stats_fetch)

    info = group.add_parser("info", help="print a reference file's format, layers, kept features and provenance")
    info.add_argument("file", type=Path)
    info.add_argument("--format", choices=("auto", *REFERENCE_FORMATS), default="auto")
    info.set_defaults(func=_stats_info)


def extractor_from_suite(suite, device: torch.device | str = "cpu") -> FeatureExtractor:
    """The extractor a suite's ``features:`` block names (building the analytic model
    ``gmm-posterior`` needs)."""
    from .features import build_extractor
    from .metrics import layers_for
    from .models import build_model

    models = {}
    name = suite.features.get("model")
    if name is not None:
        spec = suite.models[name]
        models[name] = build_model(spec.family, spec.options, suite.checkpoint_dir, str(device), name=name,
                                   base_dir=suite.base_dir)
    return build_extractor(suite.features, models, base_dir=suite.base_dir, layers=layers_for(suite.metrics)).to(device)


def extractor_from_name(names: str | Sequence[str], *, checkpoint: str | None = None, weights: str | None = None,
                        device: torch.device | str = "cpu") -> FeatureExtractor:
    """An extractor named on the command line, validated like a suite's ``features:`` block
    (``checkpoint`` / ``weights`` become its keys; relative paths are taken from the current folder).
    Further names are networks that join it for their own layers (``dinov2-vitl14``, ``clip-vitl14-336``)."""
    from .features import METRIC_NETWORKS, build_extractor, validate_spec
    from .validate import Checker

    name, *others = [names] if isinstance(names, str) else list(names)
    spec: dict = {"extractor": name}
    layers: list[str] = []
    for other in others:
        key = next((key for key, (accepted, _) in METRIC_NETWORKS.items() if other in accepted), None)
        if key is None or key in spec:
            accepted = ", ".join(n for names, _ in METRIC_NETWORKS.values() for n in names)
            raise ValueError(f"--extractor {other}: only the first --extractor may be any extractor; the others add one "
                             f"network each for its own layers, one of: {accepted}")
        spec[key] = {"extractor": other}
        layers += METRIC_NETWORKS[key][1]
    if name == "gmm-posterior":
        raise ValueError("--extractor gmm-posterior needs an analytic model: use --suite with a suite whose features "
                         "block names it")
    if checkpoint is not None:
        spec["checkpoint"] = checkpoint
    if weights is not None:
        spec["weights"] = weights
    validate_spec(Checker("command line"), spec, "--extractor", {})
    extractor = build_extractor(spec, {}, base_dir=Path.cwd(), layers=tuple(layers))
    return extractor.to(device)
