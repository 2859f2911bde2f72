"""Running a suite: tune its schedules, then sample and score every unfinished row.

Each row is one call of :func:`cmbench.generate.sample_and_score` on the suite's seeds; tune jobs
(:mod:`cmbench.tuning.jobs`) score their candidates with the same call on their proxy seeds.
Finished rows and schedules are on disk before the next starts, so a rerun resumes.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .atomic import atomic_write_bytes, atomic_write_text
from .checkpoints import sha256_file
from .checkpoints.hashing import sha256_path
from .compare import RUN_BASELINE, write_baseline
from .features import FeatureExtractor, build_extractor
from .finite import NonFiniteSamples
from .memory import check_fits
from .generate import Scoring, sample_and_score_many
from .metrics import METRICS, ReferenceStats, layers_for, scored_columns, se_column
from .models import ModelAdapter, build_model
from .models.external import code_sha256
from .names import inside
from .nll import TOY_PREFIX, evaluate_nll, load_images, protocol_from_spec
from .report import image_grid_png, render_report
from .results import FAILED, RESULTS_JSONL, ResultStore, error_text, stored_config, what_changed
from .run_lock import output_folder_lock
from .profiles import PROFILES
from .references import load_suite_reference, reference_path, reference_sha256
from .samplers import get_sampler
from .seeds import seed_range
from .row_samples import SampleFiles
from .suite import ModelSpec, Row, Suite
from .threads import ThreadChoice, choose_threads, using_threads
from .tuning.jobs import apply_schedule, run_tune_job, show_schedule_files
from .zoo import resolve_checkpoint

logger = logging.getLogger(__name__)
RowCallback = Callable[[dict[str, Any]], None]
"""Receives each result row as the run stores it (a failed row has ``status`` "failed" and its ``error``)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def output_folder(suite: Suite, out_dir: str | Path | None = None) -> Path:
    """``out_dir`` if given, else the suite's ``output_dir``, else ``reports/<suite name>``."""
    if out_dir:
        return Path(out_dir)
    return Path(suite.output_dir) if suite.output_dir else Path("reports") / suite.name


class RunContext:
    """What the rows and tune jobs of one scoring share: the output folder, the device, models
    (built on first use), the feature extractor, file hashes and the reference statistics
    (loaded on first use; the primary context then writes ``run.json``).

    A suite scoring its rows under several profiles has one context per profile
    (:func:`run_contexts`), sharing models and extractors.
    """

    def __init__(self, suite: Suite, out_dir: str | Path | None, device: str | None, *,
                 models: dict | None = None, extractors: dict | None = None, profiles: tuple[str, ...] = (),
                 primary: bool = True, threads: ThreadChoice | None = None):
        """``models``: adapters already built (shared between profiles, or handed over in memory by
        :mod:`cmbench.api`); the others are built from the suite on first use."""
        self.suite = suite
        self.out = output_folder(suite, out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device or suite.device)
        self.models: dict[str, ModelAdapter] = {} if models is None else models
        for name in {suite.features.get("model"), suite.reference.get("model")} - {None}:
            self.model(name)
        self.extractors: dict[str, FeatureExtractor] = {} if extractors is None else extractors
        key = json.dumps(suite.features, sort_keys=True)
        if key not in self.extractors:
            self.extractors[key] = build_extractor(suite.features, self.models, base_dir=suite.base_dir).to(self.device)
        self.extractor = self.extractors[key]
        self.extractor.check_layers(layers_for(suite.metrics))
        self.file_hashes = {**suite_file_hashes(suite), "extractor": self.extractor.weights_sha256}
        self.reference_sha256 = self.file_hashes.get("reference") or reference_sha256(suite, self.extractor)
        self.profiles, self.primary, self.threads = profiles, primary, threads
        self._reference: list[ReferenceStats | None] = []
        self._feature_bytes: dict[tuple[int, ...], int] = {}  # one image's features, by image shape

    def model(self, name: str) -> ModelAdapter:
        if name not in self.models:
            spec = self.suite.models[name]
            self.models[name] = build_model(spec.family, spec.options, self.suite.checkpoint_dir, str(self.device),
                                            name=name, base_dir=self.suite.base_dir)
        return self.models[name]

    def check_fits(self, what: str, count: int, model: ModelAdapter) -> None:
        """Refuse, before sampling, ``count`` images of ``model`` whose features cannot fit in memory
        (the size of one image's features is measured on one probe image)."""
        if model.image_shape not in self._feature_bytes:
            probe = torch.zeros((1, *model.image_shape), dtype=torch.uint8, device=self.device)
            try:
                with torch.no_grad():
                    features = self.extractor.extract(probe, sorted(layers_for(self.suite.metrics)))
            except (ValueError, RuntimeError) as err:
                source = getattr(model, "source", None)  # a stored sample set names its file
                images = source.description if source else f"{model.family} images of shape {list(model.image_shape)}"
                raise ValueError(f"{self.suite.source}: {images} do not suit the {self.extractor.name} extractor: "
                                 f"{err}") from None
            self._feature_bytes[model.image_shape] = sum(4 * value[0].numel() for value in features.values())
        check_fits(what, count, self._feature_bytes[model.image_shape], source=self.suite.source)

    def reference(self) -> ReferenceStats | None:
        if not self._reference:
            if "model" in self.suite.reference:
                self.check_fits("reference.num_images", self.suite.reference["num_images"],
                                self.model(self.suite.reference["model"]))
            stats, info = load_suite_reference(self.suite, self.models, self.extractor)
            if self.primary:
                _write_run_metadata(self.out, self.suite, self.device, self.extractor, info, self.profiles,
                                    self.threads)
            self._reference.append(stats)
        return self._reference[0]

    def tune(self, names, *, recompute_changed: bool, progress: bool | None) -> dict[str, dict]:
        """The schedule documents of the named tune jobs, searched unless already in the folder."""
        for name in names:
            job = self.suite.tune[name]
            self.check_fits(f"tune.{name}.num_samples", job.num_samples, self.model(job.model))
        return {
            name: run_tune_job(self.suite, self.suite.tune[name], self.model(self.suite.tune[name].model),
                               self.extractor, self.reference, self.device, self.out, file_hashes=self.file_hashes,
                               recompute_changed=recompute_changed, progress=progress)
            for name in names
        }


def run_contexts(suite: Suite, out_dir: str | Path | None, device: str | None,
                 models: dict[str, ModelAdapter] | None = None, threads: ThreadChoice | None = None,
                 ) -> dict[str, RunContext]:
    """One context per profile the rows are scored under ("" for a suite with one scoring); the
    first is primary (tune jobs, run.json). ``models`` are adapters built already (in memory);
    ``threads``, the run's thread choice, goes into run.json."""
    models = dict(models or {})
    if not suite.profiles:
        return {"": RunContext(suite, out_dir, device, models=models, threads=threads)}
    first = RunContext(suite.under(suite.profiles[0]), out_dir, device, models=models, profiles=suite.profiles,
                       threads=threads)
    contexts = {suite.profiles[0]: first}
    for name in suite.profiles[1:]:
        contexts[name] = RunContext(suite.under(name), first.out, device, models=first.models,
                                    extractors=first.extractors, primary=False)
    return contexts


def run_suite(
    suite: Suite,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    recompute_changed: bool = False,
    progress: bool | None = None,
    baseline: dict | None = None,
    wait: bool = False,
    models: dict[str, ModelAdapter] | None = None,
    on_row: RowCallback | None = None,
) -> Path:
    """Run the suite's tune jobs, then every unfinished row, into ``out_dir``; returns the report's path.

    Rows that differ only in their profile are sampled once and scored under each. ``baseline``
    (a baseline document, :func:`cmbench.compare.baseline_document`) becomes the run folder's
    ``baseline.json``, which the report compares the rows against. The run holds the folder's
    lock (:mod:`cmbench.run_lock`); ``wait`` queues behind another run instead of failing. A row
    whose samples are not finite is stored as failed (``status: failed``, its ``error``, no
    metrics) and the run goes on; a rerun tries failed rows again. ``models`` are model adapters
    built already, by name (the Python API's models in memory); the rest are built from the suite.
    ``progress``: draw progress bars (None: only when standard error is a terminal,
    :func:`cmbench.console.progress_enabled`). ``on_row`` is called with each row as it is stored;
    messages (rows resumed, rows failed) go to the ``cmbench.runner`` logger.
    """
    threads = choose_threads(suite.threads)
    with output_folder_lock(output_folder(suite, out_dir), wait=wait), using_threads(threads.count):
        return _run_locked(suite, out_dir, device, recompute_changed, progress, baseline, models, threads, on_row)


def _run_locked(suite: Suite, out_dir, device, recompute_changed: bool, progress: bool | None, baseline: dict | None,
                models: dict[str, ModelAdapter] | None, threads: ThreadChoice, on_row: RowCallback | None) -> Path:
    contexts = run_contexts(suite, out_dir, device, models, threads)
    ctx = next(iter(contexts.values()))
    store = ResultStore(ctx.out)
    schedules = ctx.tune(suite.tune, recompute_changed=recompute_changed, progress=progress)
    rows = [apply_schedule(suite, row, schedules, ctx.file_hashes) for row in suite.rows]
    show_schedule_files(suite, ctx.out)
    pending = _pending_rows(rows, store, contexts, recompute_changed)
    if len(pending) < len(rows):
        logger.info("%d of %d rows already in %s; %d to run", len(rows) - len(pending), len(rows),
                    store.run_dir / RESULTS_JSONL, len(pending))
    likelihood_images = load_likelihood_images(suite) if pending and suite.likelihood else None
    likelihoods: dict[str, dict] = {}
    for group in _same_samples(pending):
        try:
            results = evaluate_rows(suite, group, contexts, progress)
        except NonFiniteSamples as error:
            results = [failed_row(contexts[row.profile], row, str(error)) for row in group]
        for row, result in zip(group, results):
            if result["status"] == FAILED:
                store.put(result)
                logger.warning("row %s failed: %s", row.row_id, error_text(result))
                if on_row is not None:
                    on_row(result)
                continue
            if likelihood_images is not None:
                if row.model not in likelihoods:
                    likelihoods[row.model] = suite_likelihood(suite, ctx.model(row.model), likelihood_images, ctx.device, progress)
                result.update(likelihoods[row.model])
            result.update(row_identity(contexts[row.profile], row))
            store.put(result)
            if on_row is not None:
                on_row(result)
    if store.rows:
        store.write_csv()
    if baseline is not None:
        write_baseline(ctx.out / RUN_BASELINE, baseline, overwrite=True)
    return render_report(ctx.out)


def _same_samples(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by what their samples depend on (model, sampler, NFE, options), in order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = json.dumps([row.model, row.sampler, row.nfe, row.options], sort_keys=True, default=str)
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def tune_suite(
    suite: Suite,
    jobs: list[str],
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    recompute_changed: bool = False,
    progress: bool | None = None,
    wait: bool = False,
) -> tuple[Path, dict[str, dict]]:
    """Run the named tune jobs only; returns the output folder and their schedule documents."""
    unknown = [name for name in jobs if name not in suite.tune]
    if unknown:
        raise ValueError(f"suite {suite.name!r} has no tune job(s) {', '.join(unknown)}; it has: "
                         f"{', '.join(suite.tune) or 'none'}")
    threads = choose_threads(suite.threads)
    with output_folder_lock(output_folder(suite, out_dir), wait=wait), using_threads(threads.count):
        ctx = next(iter(run_contexts(suite, out_dir, device, threads=threads).values()))
        return ctx.out, ctx.tune(jobs, recompute_changed=recompute_changed, progress=progress)


def evaluate_rows(suite: Suite, rows: list[Row], contexts: dict[str, RunContext], progress: bool | None) -> list[dict[str, Any]]:
    """Result rows for ``rows``, which share their samples: sampled once, scored under each row's profile."""
    first = contexts[rows[0].profile]
    model = first.model(rows[0].model)
    first.check_fits("num_samples", suite.num_samples, model)
    scorings = [Scoring(c.suite.quantisation, c.extractor, c.suite.metrics, c.suite.metric_options, c.reference())
                for c in (contexts[row.profile] for row in rows)]
    for scoring in scorings:
        check_resolution(suite, rows[0].model, model, scoring.reference)
    bootstrap = suite.uncertainty["bootstrap"]
    base_id = rows[0].row_id.split("@")[0]
    seeds = seed_range(suite.seed_start, suite.num_samples)
    saving = SampleFiles(first.out, base_id, suite.save_samples if not model.has("images") else (), model, seeds)
    with saving:
        values, sigmas, grid, nfe, seconds = sample_and_score_many(
            model, get_sampler(rows[0].sampler), rows[0].nfe, rows[0].options, seeds, scorings,
            batch_size=suite.batch_size, device=first.device, keep_images=suite.grid_images, progress=progress,
            desc=base_id, bootstrap=bootstrap, bootstrap_seed=suite.uncertainty["seed"], save=saving.save,
        )
    grid_path = None
    if len(grid):
        grid_path = f"grids/{base_id}.png"
        atomic_write_bytes(inside(first.out, grid_path), image_grid_png(grid, scale=max(1, 32 // model.image_shape[-1])))
    return [{**_result_row(contexts[row.profile], row, model, metrics, sigmas, grid_path, nfe, seconds),
             "samples": saving.files or None, "samples_quantisation": scorings[0].quantisation if saving.files else None}
            for row, metrics in zip(rows, values)]


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


def _result_row(ctx: RunContext, row: Row, model, metrics: dict, sigmas, grid_path, nfe: int,
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
        "device": str(ctx.device), "finished_at": _now(),
    }


def failed_row(ctx: RunContext, row: Row, error: str) -> dict[str, Any]:
    """The record of a row that could not be scored: its identity and error, every metric null."""
    model = ctx.model(row.model)
    result = _result_row(ctx, row, model, {}, [], None, row.nfe, float("nan"))
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


def load_likelihood_images(suite: Suite) -> torch.Tensor:
    """The uint8 images of the suite's ``likelihood.data`` (a toy split or an .npz), up to ``limit``."""
    data = suite.likelihood["data"]
    try:
        images = load_images(data if data.startswith(TOY_PREFIX) else str(suite.resolve(data)), continuous=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{suite.source}: likelihood.data: {err}") from None
    return images[: suite.likelihood.get("limit", len(images))]


def suite_likelihood(suite: Suite, model: ModelAdapter, images: torch.Tensor, device: torch.device,
                     progress: bool | None) -> dict:
    """bits/dim of ``images`` under ``model`` (None for models without score access): ``bpd``,
    its standard error, the solver's mean NFE and the likelihood protocol that made them, once per model."""
    if not model.has("denoise"):
        return {"bpd": None, "bpd_stderr": None, "bpd_nfe": None, "bpd_protocol": None}
    spec = suite.likelihood
    result = evaluate_nll(
        model, images, protocol_from_spec(spec), continuous=False, passes=spec["passes"],
        batch_size=spec["batch_size"], seed=spec["seed"], device=device, progress=progress,
        source=f"{suite.source}: likelihood.data {spec['data']}",
    )
    return {"bpd": result["bpd"], "bpd_stderr": result["stderr"], "bpd_nfe": result["nfe_mean"],
            "bpd_protocol": result["protocol"]}


def sample_set_path(suite: Suite, model: str) -> Path:
    """The file or folder of a stored sample set, which must exist."""
    path = suite.resolve(suite.models[model].options["path"])
    if not path.exists():
        raise FileNotFoundError(f"{suite.source}: models.{model}.path: {path} does not exist (relative paths start "
                                "at the suite's folder)")
    return path


def checkpoint_path(suite: Suite, model: str) -> Path:
    """The checkpoint file (a folder for ``format: diffusers``) of ``model``, which must exist."""
    options = suite.models[model].options
    path = resolve_checkpoint(options["checkpoint"], suite.checkpoint_dir)[0]
    if not (path.is_dir() if options.get("format") == "diffusers" else path.is_file()):
        where = (f"checkpoints_dir is {suite.checkpoints_dir!r}; change it with --set checkpoints_dir=DIR"
                 if suite.checkpoints_dir else "relative paths start at the suite's folder; or set checkpoints_dir")
        raise FileNotFoundError(f"{suite.source}: models.{model}.checkpoint: {path} does not exist ({where})")
    return path


def suite_file_hashes(suite: Suite) -> dict[str, str]:
    """sha256 of every checkpoint and sample set (by model name), of every entry point's module file
    ("<model>.code"), of the state dict of every model in memory, and of the reference and
    likelihood data files."""
    hashes = {name: sha256_path(checkpoint_path(suite, name))
              for name, spec in suite.models.items() if "checkpoint" in spec.options}
    for name, spec in suite.models.items():
        if spec.family == "samples":
            hashes[name] = sha256_path(sample_set_path(suite, name))
        elif "entry_point" in spec.options:
            hashes[f"{name}.code"] = code_sha256(spec.options["entry_point"], suite.base_dir)
        elif spec.options.get("state_sha256"):
            hashes[name] = spec.options["state_sha256"]
    if "path" in suite.reference:
        hashes["reference"] = sha256_file(reference_path(suite))
    data = suite.likelihood.get("data", TOY_PREFIX)
    if not data.startswith(TOY_PREFIX):
        hashes["likelihood"] = sha256_file(suite.resolve(data))
    return hashes


def _pending_rows(rows: list[Row], store: ResultStore, contexts: dict[str, RunContext], recompute_changed: bool) -> list[Row]:
    """The rows to compute: those not stored, stored as failed, or (with ``recompute_changed``)
    stored under another configuration, which is otherwise refused naming what changed."""
    pending, changed = [], []
    for row in rows:
        done = store.get(row.row_id)
        view = contexts[row.profile]
        if done is None or done.get("status") == FAILED:
            pending.append(row)
        elif done.get("fingerprint") != view.suite.row_fingerprint(row, view.file_hashes):
            pending.append(row)
            changed.append(row)
    if changed and not recompute_changed:
        row, view = changed[0], contexts[changed[0].profile]
        others = f" (and {len(changed) - 1} other row(s))" if len(changed) > 1 else ""
        reason = what_changed(store.get(row.row_id), view.suite.row_config(row, view.file_hashes))
        raise RuntimeError(
            f"{store.run_dir / RESULTS_JSONL}: row {row.row_id}{others} was computed with a different configuration "
            f"than the suite now gives ({reason}); use another --out folder, or pass --recompute-changed to "
            "replace such rows"
        )
    return pending



def _profile_summary(name: str) -> str | None:
    return f"{name}: {PROFILES[name].protocol}" if name else None


def _write_run_metadata(out: Path, suite: Suite, device: torch.device, extractor, reference_info: dict,
                        profiles: tuple[str, ...] = (), threads: ThreadChoice | None = None) -> None:
    """run.json; with several profiles, the scoring fields are the first profile's and each row
    records its own. ``threads``: how many CPU threads the run used and why."""
    meta = {
        "suite": suite.name, "suite_file": suite.source, "suite_sha256": _file_sha256(suite.source),
        "description": suite.description,
        "cmbench_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": threads.as_dict() if threads else {"count": torch.get_num_threads()},
        "seed_start": suite.seed_start, "num_samples": suite.num_samples, "batch_size": suite.batch_size,
        "profile": "; ".join(_profile_summary(p) for p in profiles) if profiles else _profile_summary(suite.profile),
        "quantisation": suite.quantisation, "extractor": extractor.identity, "reference": reference_info,
        "metrics": list(suite.metrics), "metric_options": asdict(suite.metric_options),
        "uncertainty": suite.uncertainty, "regression": suite.regression or None, "started_at": _now(),
        "paper": {"source": suite.paper_source, "rows": {row.row_id: row.paper for row in suite.rows if row.paper}},
    }
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2, default=str) + "\n")


def _file_sha256(path: str) -> str | None:
    """The suite file's sha256 (None for a suite built in memory)."""
    return sha256_file(path) if Path(path).is_file() else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
