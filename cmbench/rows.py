"""Scoring the rows that share their samples: their features made in shards over the ranks
(:mod:`cmbench.row_features`), scored under each row's profile, and their result records."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .atomic import atomic_write_bytes
from .distributed import SINGLE, World
from .generate import Scoring, score_features
from .metrics import METRICS, ReferenceStats, layers_for, scored_columns, se_column
from .models import ModelAdapter
from .names import inside
from .report import image_grid_png
from .results import FAILED, stored_config
from .row_features import MadeHere, RowSamples, kept_images, make_row_features
from .row_samples import SampleFiles
from .run_context import RunContext, utc_now
from .samplers import get_sampler
from .seeds import seed_range
from .shards import ShardPart, ShardStore, missing, shard_key
from .suite import ModelSpec, Row, Suite


class ShardsMissing(ValueError):
    """``--merge``: some of a row's shards are not stored yet (the message names the rows and positions)."""


def same_samples(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by what their samples depend on (model, sampler, NFE, options), in order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = json.dumps([row.model, row.sampler, row.nfe, row.options], sort_keys=True, default=str)
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def row_shards(contexts: dict[str, RunContext], rows: list[Row]) -> ShardStore:
    """Where the shards of ``rows`` (which share their samples) are stored, under their configuration."""
    first = contexts[rows[0].profile]
    suite = first.suite
    model = first.model(rows[0].model)
    fingerprints = [contexts[row.profile].suite.row_fingerprint(row, first.file_hashes) for row in rows]
    return ShardStore(first.out, base_row_id(rows[0]),
                      shard_key(fingerprints, row_batch_size(contexts, rows), _kept(suite, model)))


def row_batch_size(contexts: dict[str, RunContext], rows: list[Row]) -> int:
    """The batch size ``rows`` (which share their samples) are sampled in: the suite's, or the one
    ``batch_size: auto`` chose for their model and sampler (:mod:`cmbench.batch_size`)."""
    first, row = contexts[rows[0].profile], rows[0]
    return first.batch_size(row.model, row.sampler, row.nfe, row.options, first.suite.num_samples)


def base_row_id(row: Row) -> str:
    """The row id without its ``@profile``: the name of what rows of several profiles share."""
    return row.row_id.split("@")[0]


def _kept(suite: Suite, model: ModelAdapter) -> int:
    """How many images a row keeps beside its features: all to save them (-1), else the grid's."""
    return -1 if suite.save_samples and not model.has("images") else suite.grid_images


def evaluate_rows(suite: Suite, rows: list[Row], contexts: dict[str, RunContext], progress: bool | None, *,
                  world: World = SINGLE, part: ShardPart | None = None, make: bool = True) -> list[dict[str, Any]] | None:
    """Result rows for ``rows``, which share their samples: sampled once (in shards, over the ranks of
    ``world``), scored under each row's profile on the main rank; None on the other ranks.

    ``part`` (``--shard``): make only that part's shards, score nothing and return None. Without
    ``make`` (``--merge``) nothing is sampled: rows whose shards are not all stored raise
    :class:`ShardsMissing`."""
    started = time.perf_counter()
    first = contexts[rows[0].profile]
    model = first.model(rows[0].model)
    if model.has("images"):
        model.check_count(suite.num_samples)
    if part is None:
        world.decide(_check_rows, suite, rows, contexts, model)
    sampler = get_sampler(rows[0].sampler)
    job = RowSamples(
        model, sampler, sampler.schedule(model.noise_range, rows[0].nfe, rows[0].options), rows[0].options,
        seed_range(suite.seed_start, suite.num_samples), row_batch_size(contexts, rows), first.device,
        {row.row_id: _view(contexts[row.profile]) for row in rows}, _kept(suite, model), base_row_id(rows[0]),
    )
    store = row_shards(contexts, rows)
    if not make:
        gaps = world.decide(lambda: missing(suite.num_samples, store.pieces()))
        if gaps:
            raise ShardsMissing(f"{', '.join(row.row_id for row in rows)}: no shards yet for samples "
                                + ", ".join(f"{a}–{b - 1}" for a, b in gaps))
    merged, made = make_row_features(job, store, world, part=part, progress=progress)
    if merged is None:
        return None
    return _scored_rows(suite, rows, contexts, model, job, merged, made, world, time.perf_counter() - started)


def _view(ctx: RunContext) -> tuple[str, Any, tuple[str, ...]]:
    return ctx.suite.quantisation, ctx.extractor, layers_for(ctx.suite.metrics)


def _check_rows(suite: Suite, rows: list[Row], contexts: dict[str, RunContext], model: ModelAdapter) -> None:
    """(Main rank, before sampling.) Refuse rows whose features cannot fit in memory or whose
    images cannot be compared with the reference statistics (loaded here)."""
    contexts[rows[0].profile].check_fits("num_samples", suite.num_samples, model)
    for row in rows:
        check_resolution(suite, row.model, model, contexts[row.profile].reference())


def _scored_rows(suite: Suite, rows: list[Row], contexts: dict[str, RunContext], model: ModelAdapter,
                 job: RowSamples, merged, made: MadeHere, world: World, seconds: float) -> list[dict[str, Any]]:
    """(Main rank.) The rows' records from their merged features: metrics under each row's profile,
    the grid and the saved samples written."""
    first = contexts[rows[0].profile]
    bootstrap = suite.uncertainty["bootstrap"]
    values = [score_features(Scoring(c.suite.quantisation, c.extractor, c.suite.metrics, c.suite.metric_options,
                                     c.reference()), merged.features[row.row_id], bootstrap=bootstrap,
                             bootstrap_seed=suite.uncertainty["seed"], device=first.device)
              for row, c in ((row, contexts[row.profile]) for row in rows)]
    images, _ = kept_images(merged, suite.grid_images)
    grid_path = None
    if images is not None and len(images):
        grid_path = f"grids/{job.desc}.png"
        atomic_write_bytes(inside(first.out, grid_path),
                           image_grid_png(torch.from_numpy(images), scale=max(1, 32 // model.image_shape[-1])))
    files = _save_samples(first, suite, model, job, merged)
    nfe = rows[0].nfe if merged.nfe is None else merged.nfe
    scale_out = {"world_size": world.size, "wall_seconds": round(seconds, 3), "shards_made": made.units,
                 "gathered_bytes": made.gathered_bytes, "batch_size": job.batch_size}
    return [{**result_row(contexts[row.profile], row, model, metrics, job.sigmas, grid_path, nfe, merged.seconds),
             **scale_out, "samples": files or None,
             "samples_quantisation": first.suite.quantisation if files else None}
            for row, metrics in zip(rows, values)]


def _save_samples(ctx: RunContext, suite: Suite, model: ModelAdapter, job: RowSamples, merged) -> dict[str, str]:
    """Write the row's images as ``save_samples`` asks (nothing for a stored sample set); the files by format."""
    if _kept(suite, model) >= 0:
        return {}
    saving = SampleFiles(ctx.out, job.desc, suite.save_samples, model, job.seeds)
    with saving:
        labels = None if merged.labels is None else torch.from_numpy(merged.labels)
        saving.save(torch.from_numpy(merged.images), labels, job.seeds)
    return saving.files


def check_resolution(suite: Suite, name: str, model: ModelAdapter, reference: ReferenceStats | None) -> None:
    """Refuse images of another height × width or channel count than the reference statistics were
    made from (where the reference records it): metrics across them compare different things."""
    meta = reference.meta if reference is not None else {}
    source = getattr(model, "source", None)
    images = source.description if source else f"models.{name}"
    made, channels = meta.get("resolution"), meta.get("channels")
    if made and list(made) != list(model.image_shape[1:]):
        raise ValueError(f"{suite.source}: {images}: images are {model.image_shape[1]}×{model.image_shape[2]} but the "
                         f"reference statistics ({meta.get('source', 'reference')}) were made from "
                         f"{made[0]}×{made[1]} images; give a reference of the same resolution")
    if channels and int(channels) != model.image_shape[0]:
        raise ValueError(f"{suite.source}: {images}: images have {model.image_shape[0]} channel(s) but the reference "
                         f"statistics ({meta.get('source', 'reference')}) were made from {channels}-channel images")


def model_source(spec: ModelSpec) -> str:
    """Where a model came from: checkpoint, entry_point, memory, samples (images made elsewhere) or analytic."""
    if spec.family == "samples":
        return "samples"
    if spec.family == "gmm":
        return "analytic"
    return next((kind for key, kind in (("in_memory", "memory"), ("entry_point", "entry_point")) if key in spec.options),
                "checkpoint")


def result_row(ctx: RunContext, row: Row, model, metrics: dict, sigmas, grid_path, nfe: int,
                seconds: float | None) -> dict[str, Any]:
    suite, bootstrap = ctx.suite, ctx.suite.uncertainty["bootstrap"]
    se_columns = [se_column(col) for col in scored_columns(suite.metrics)] if bootstrap else []
    return {
        "suite": suite.name, "row_id": row.row_id, "model": row.model, "family": model.family,
        "sampler": row.sampler, "sampler_label": sampler_label(row), "nfe": nfe, "num_samples": suite.num_samples,
        **dict.fromkeys(sorted(_metric_columns(suite))), **dict.fromkeys(se_columns), **metrics,
        "seconds_per_sample": None if seconds is None else seconds / suite.num_samples, "seed_start": suite.seed_start,
        "checkpoint_sha256": model.checkpoint_sha256, "model_source": model_source(suite.models[row.model]),
        "cmbench_version": __version__,
        "schedule": [float(s) for s in sigmas], "schedule_source": row.schedule or None,
        "options": row.options, "grid": grid_path,
        "status": "ok", **ctx.extractor.identity, "quantisation": suite.quantisation,
        "reference_sha256": ctx.reference_sha256,
        "profile": suite.profile or None,
        "metric_options": asdict(suite.metric_options),
        "uncertainty": {"method": "bootstrap", "resamples": bootstrap, "seed": suite.uncertainty["seed"]} if bootstrap else None,
        "device": str(ctx.device), "finished_at": utc_now(),
    }


def failed_row(ctx: RunContext, row: Row, error: str) -> dict[str, Any]:
    """The record of a row that could not be scored: its identity and error, every metric null."""
    model = ctx.model(row.model)
    result = result_row(ctx, row, model, {}, [], None, row.nfe, float("nan"))
    result.update(status=FAILED, error=error, **row_identity(ctx, row))
    return result


def row_identity(ctx: RunContext, row: Row) -> dict[str, Any]:
    """The ``fingerprint`` a resumed row must match and the ``config`` it hashes (to name what changed)."""
    return {"fingerprint": ctx.suite.row_fingerprint(row, ctx.file_hashes),
            "config": stored_config(ctx.suite.row_config(row, ctx.file_hashes))}


def sampler_label(row: Row) -> str:
    """The run's name, else the sampler and its scalar options (time points show as the schedule
    they came from); ``@profile`` when the suite scores rows under several profiles."""
    profile = f" @{row.profile}" if row.profile else ""
    if row.label != row.sampler:
        return row.label + profile
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in sorted(row.options.items()) if not isinstance(v, (dict, list)) and k != "time_point_units"]
    if row.schedule:
        parts.append(f"schedule={Path(row.schedule).stem if row.schedule.endswith('.json') else row.schedule}")
    return (f"{row.sampler} " + " ".join(parts) if parts else row.sampler) + profile


def _metric_columns(suite: Suite) -> set[str]:
    return {col for m in suite.metrics for col in METRICS[m].columns}
