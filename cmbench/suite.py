"""Suite files: schema, validation with precise errors, ``--set`` overrides and grid expansion.

A suite names models, samplers with their NFE lists, metrics, the feature extractor, reference
statistics and sample counts. Validation happens before anything runs and every error names the
file, the key path and what is accepted. Relative paths inside a suite (checkpoints, reference
statistics) resolve against the suite file's folder; the output folder resolves against the
current directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import features as features_registry
from .batch_size import DEFAULT_BATCH_SIZE, parse_batch_size
from .images import QUANTISATIONS
from .metrics import MetricOptions
from .metrics.bootstrap import DEFAULT_RESAMPLES
from .models import FAMILIES, NoiseRange, family_maps, validate_model_spec
from .models.networks import RUN_OPTIONS
from .profiles import with_extra_metrics
from .samplers import SAMPLERS
from .editing.spec import Editing, parse_editing
from .suite_blocks import (check_metric_sizes, parse_likelihood, parse_metric_names, parse_metric_options,
                           parse_paper_numbers, parse_profile, parse_unreproducible, parse_profiles, parse_reference, parse_regression,
                           parse_save_samples, parse_thread_count, parse_uncertainty)
from .tuning.spec import SCHEDULE_OPTIONS, SCHEDULE_PREFIX, TuneJob, parse_tune_jobs, tunable_samplers
from .threads import AUTO
from .suite_overrides import apply_override
from .validate import Checker, ConfigError
from .yaml_input import describe_yaml_error, load_yaml

DEVICES = ("auto", "cpu", "cuda")
TOP_REQUIRED = ("name", "num_samples", "models", "runs")
TOP_OPTIONAL = (
    "description", "seed_start", "batch_size", "device", "quantisation", "output_dir",
    "features", "metrics", "metric_options", "reference", "grid_images", "likelihood", "tune", "profile", "profiles",
    "uncertainty", "regression", "checkpoints_dir", *RUN_OPTIONS, "paper", "save_samples",
    "threads", "editing", "unreproducible",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One result row: a model, a sampler configuration and an NFE.

    ``schedule`` names tuned time points (``tuned:<job>`` or a schedule file); the runner puts
    them into ``options`` once they exist.
    """

    row_id: str
    model: str
    sampler: str
    label: str
    nfe: int
    options: dict[str, Any]
    schedule: str = ""
    profile: str = ""  # set when the suite scores rows under several profiles
    profiles: tuple[str, ...] = ()  # the suite's profiles this run asks for (empty: all)
    paper: dict[str, Any] = field(default_factory=dict)  # published numbers for this row: column → value, source
    task: str = ""  # an editing row's task (the suite's ``editing.tasks``); "" for generation


@dataclass(frozen=True)
class Suite:
    name: str
    source: str
    base_dir: Path
    num_samples: int
    models: dict[str, ModelSpec]
    rows: list[Row]
    description: str = ""
    seed_start: int = 0
    batch_size: int | str = DEFAULT_BATCH_SIZE
    """Images per batch, or ``auto``: chosen per model and sampler when the run starts (:mod:`cmbench.batch_size`)."""
    device: str = "auto"
    quantisation: str = "round"
    output_dir: str = ""
    features: dict[str, Any] = field(default_factory=lambda: {"extractor": "pixels"})
    metrics: tuple[str, ...] = ("fid",)
    metric_options: MetricOptions = MetricOptions()
    reference: dict[str, Any] = field(default_factory=dict)
    grid_images: int = 64
    likelihood: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, TuneJob] = field(default_factory=dict)
    profile: str = ""
    uncertainty: dict[str, int] = field(default_factory=lambda: {"bootstrap": DEFAULT_RESAMPLES, "seed": 0})
    regression: dict[str, Any] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()
    """With ``profiles:``, every row is scored under each of these (same samples); the suite-level
    scoring fields then hold the first profile's, and :meth:`under` gives each profile's view."""
    scorings: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints_dir: str = ""
    paper_source: str = ""
    unreproducible: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Published rows no file can reproduce (a baseline without a released checkpoint): row label →
    ``{reason, paper: {column: value}}``, shown in the report beside the measured rows."""
    threads: int | str = "auto"
    """CPU threads for torch and BLAS: a number, or ``auto`` (:mod:`cmbench.threads`)."""
    editing: Editing = Editing()
    """Zero-shot editing rows beside the generation rows (:mod:`cmbench.editing`)."""
    save_samples: tuple[str, ...] = ()
    """Formats each row's images are saved in (``npz``: ADM-style arr_0/arr_1, ``png``: EDM's folder
    layout), under ``samples/`` in the output folder; they change no number, so not the fingerprint."""

    @property
    def checkpoint_dir(self) -> Path:
        """Where relative checkpoint paths start: ``checkpoints_dir`` (relative to the current
        directory, like ``--set checkpoints_dir=...`` on a command line) or the suite's folder."""
        return Path(self.checkpoints_dir).expanduser() if self.checkpoints_dir else self.base_dir

    def under(self, profile: str) -> "Suite":
        """This suite as if it named only ``profile``: its extractor, metrics, conventions,
        quantisation and reference (the rows keep their ``@profile`` ids)."""
        if not self.profiles:
            return self
        return replace(self, **self.scorings[profile], profile=profile, profiles=(), scorings={})

    def resolve(self, path: str) -> Path:
        """A path from the suite, relative to the suite file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def row_fingerprint(self, row: Row, file_hashes: dict[str, str] | None = None) -> str:
        """A hash of everything that changes a row's numbers (:meth:`row_config`); a resumed row must match it."""
        config = self.row_config(row, file_hashes)
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def row_config(self, row: Row, file_hashes: dict[str, str] | None = None) -> dict[str, Any]:
        """Everything that changes a row's numbers, as the fingerprint hashes it (stored in each
        result row, so a refused resume can name the setting that changed).

        ``file_hashes`` holds the sha256 of the files the suite names (checkpoints and sample sets
        by model name, an entry point's module file under "<model>.code", reference statistics
        under "reference", the extractor's weights under "extractor", the likelihood data under
        "likelihood"), so replacing a file's content counts as a change.
        """
        if self.profiles:
            raise ValueError("row_fingerprint of a several-profile suite: call it on suite.under(row.profile)")
        hashes = file_hashes or {}
        files = {k: hashes.get(k) for k in (row.model, "reference", "extractor", "likelihood")}
        if f"{row.model}.code" in hashes:  # only where there is code, so other fingerprints stay as they were
            files[f"{row.model}.code"] = hashes[f"{row.model}.code"]
        editing = {}
        if row.task:  # only editing rows carry these, so generation fingerprints stay as they were
            files["editing"] = hashes.get("editing")
            editing = {"editing": self.editing.config(row.task)}
        return {**editing,
            "files": files,
            "model": self.models[row.model].__dict__, "sampler": row.sampler, "options": row.options,
            "nfe": row.nfe, "num_samples": self.num_samples, "seed_start": self.seed_start,
            "quantisation": self.quantisation, "features": self.features, "metrics": sorted(self.metrics),
            "metric_options": self.metric_options.__dict__, "reference": self.reference,
            "likelihood": self.likelihood, "uncertainty": self.uncertainty, "profile": self.profile,
        }


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read, override (``key.path=value``) and validate a suite file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), "", f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                                         "save the suite file as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "", f"not valid YAML: {describe_yaml_error(err)}") from None
    for item in overrides:
        apply_override(raw, item, str(path))
    return parse_suite(raw, str(path), path.parent)


def parse_suite(raw: Any, source: str, base_dir: Path) -> Suite:
    c = Checker(source)
    raw = c.mapping(raw, "")
    c.keys(raw, "", TOP_REQUIRED, TOP_OPTIONAL)
    models = _parse_models(c, raw["models"], {k: raw[k] for k in RUN_OPTIONS if k in raw})
    profile = parse_profile(c, raw)
    scorings = parse_profiles(c, raw, models)
    if scorings:
        first = next(iter(scorings.values()))
        metrics, metric_options, quantisation = first["metrics"], first["metric_options"], first["quantisation"]
        extractor_spec, reference = first["features"], first["reference"]
    elif profile is None:
        metrics = parse_metric_names(c, raw.get("metrics", ["fid"]))
        extractor_spec = dict(c.mapping(raw.get("features", {"extractor": "pixels"}), "features"))
        metric_options = parse_metric_options(c, raw.get("metric_options", {}))
        quantisation = c.choice(raw.get("quantisation", "round"), "quantisation", QUANTISATIONS)
    else:
        metrics = with_extra_metrics(profile, parse_metric_names(c, raw.get("metrics", []), nonempty=False))
        metric_options, quantisation = profile.metric_options, profile.quantisation
        extractor_spec = {"extractor": profile.extractor, **c.mapping(raw.get("features", {}), "features")}
        if extractor_spec["extractor"] != profile.extractor:
            raise c.fail("features.extractor", f"profile {profile.name} uses the {profile.extractor!r} extractor; "
                                               f"give features only to add its weights or checkpoint")
    if not scorings:
        features_registry.validate_spec(c, extractor_spec, "features", models)
        reference = parse_reference(c, raw.get("reference"), models, metrics, profile.name if profile else "")
    num_samples = c.integer(raw["num_samples"], "num_samples", minimum=2)
    seed_start = c.integer(raw.get("seed_start", 0), "seed_start", minimum=0)
    tune = parse_tune_jobs(c, raw.get("tune"), models, metrics, num_samples, seed_start)
    likelihood = parse_likelihood(c, raw.get("likelihood"))
    editing_only = raw["runs"] == [] and raw.get("editing") is not None  # a suite of editing rows alone
    rows = [] if editing_only else _expand_profiles(_parse_runs(c, raw["runs"], models, tune, base_dir, tuple(scorings)),
                                                    tuple(scorings))
    editing = parse_editing(
        c, raw.get("editing"),
        lambda c, runs, where, start: _parse_runs(c, runs, models, tune, base_dir, where=where, start=start),
        {row.row_id for row in rows})
    suite = Suite(
        name=c.name(raw["name"], "name"),
        source=source,
        base_dir=base_dir,
        num_samples=num_samples,
        models=models,
        rows=rows,
        editing=editing,
        description=str(raw.get("description", "")),
        seed_start=seed_start,
        batch_size=parse_batch_size(c, raw.get("batch_size", DEFAULT_BATCH_SIZE)),
        device=c.choice(raw.get("device", "auto"), "device", DEVICES),
        quantisation=quantisation,
        output_dir=c.string(raw["output_dir"], "output_dir") if "output_dir" in raw else "",
        features=extractor_spec,
        metrics=metrics,
        metric_options=metric_options,
        profile=next(iter(scorings), "") if scorings else (profile.name if profile else ""),
        profiles=tuple(scorings),
        scorings=scorings,
        reference=reference,
        grid_images=c.integer(raw.get("grid_images", 64), "grid_images", minimum=0),
        likelihood=likelihood,
        tune=tune,
        uncertainty=parse_uncertainty(c, raw.get("uncertainty")),
        regression=parse_regression(c, raw.get("regression"), metrics, likelihood),
        checkpoints_dir=c.string(raw["checkpoints_dir"], "checkpoints_dir") if "checkpoints_dir" in raw else "",
        paper_source=c.string(raw["paper"], "paper") if "paper" in raw else "",
        unreproducible=parse_unreproducible(c, raw.get("unreproducible"), {row.row_id for row in rows}),
        save_samples=parse_save_samples(c, raw.get("save_samples", False)),
        threads=parse_thread_count(c, raw.get("threads", AUTO)),
    )
    for name in suite.profiles or ("",):
        check_metric_sizes(c, suite.under(name) if name else suite)
    return suite



def _expand_profiles(rows: list[Row], profiles: tuple[str, ...]) -> list[Row]:
    """One row per profile (``<row_id>@<profile>``), adjacent, when the suite names several: every
    profile, or those the run's ``profiles:`` picks."""
    if not profiles:
        return rows
    return [replace(row, row_id=f"{row.row_id}@{name}", profile=name, profiles=())
            for row in rows for name in profiles if not row.profiles or name in row.profiles]


def _run_profiles(c: Checker, run, path: str, profiles: tuple[str, ...]) -> tuple[str, ...]:
    """A run's ``profiles: [a, b]``: which of the suite's profiles score it (default: all)."""
    if "profiles" not in run:
        return ()
    if not profiles:
        raise c.fail(f"{path}.profiles", "the suite names no profiles: (a top-level profiles: mapping); "
                                         "a run can only pick among those")
    return tuple(c.choice(name, f"{path}.profiles[{j}]", profiles)
                 for j, name in enumerate(c.sequence(run["profiles"], f"{path}.profiles")))



def _parse_models(c: Checker, raw: Any, network_defaults: dict[str, Any]) -> dict[str, ModelSpec]:
    """The models; ``network_defaults`` (top-level ``precision`` / ``compile`` / ``channels_last``)
    fill in what a network model does not set itself."""
    raw = c.mapping(raw, "models")
    if not raw:
        raise c.fail("models", "at least one model is required")
    models = {}
    for name, spec in raw.items():
        path = f"models.{name}"
        c.name(str(name), path)
        spec = dict(c.mapping(spec, path))
        if "family" not in spec:
            raise c.fail(f"{path}.family", f"missing; accepted families: {', '.join(FAMILIES)}")
        family = c.choice(spec.pop("family"), f"{path}.family", FAMILIES)
        if family not in ("gmm", "samples"):
            spec = {**network_defaults, **spec}
        validate_model_spec(c, family, spec, path)
        models[str(name)] = ModelSpec(str(name), family, spec)
    return models


def _parse_runs(c: Checker, raw: Any, models: dict[str, ModelSpec], tune: dict[str, TuneJob], base_dir: Path,
                profiles: tuple[str, ...] = (), *, where: str = "runs", start: int = 0) -> list[Row]:
    """The rows of the runs ``raw``, which are ``where[start]``, ``where[start + 1]``, … in the file."""
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for i, run in enumerate(c.sequence(raw, where), start):
        path = f"{where}[{i}]"
        run = c.mapping(run, path)
        c.keys(run, path, ("model", "sampler"), ("nfe", "name", "options", "schedule", "profiles", "paper"))
        chosen = _run_profiles(c, run, path, profiles)
        model = c.choice(run["model"], f"{path}.model", models)
        sampler = SAMPLERS.get(run["sampler"]) if isinstance(run["sampler"], str) else None
        if sampler is None:
            raise c.fail(f"{path}.sampler", f"unknown sampler {run['sampler']!r}; accepted: {', '.join(SAMPLERS)}")
        spec = models[model]
        maps = family_maps(spec.family, spec.options)
        if sampler.requires not in maps:
            usable = [s.name for s in SAMPLERS.values() if s.requires in maps]
            raise c.fail(
                f"{path}.sampler",
                f"sampler {sampler.name!r} needs the {sampler.requires!r} map, which {spec.family} models lack; "
                f"samplers for {spec.family}: {', '.join(usable)}",
            )
        options = dict(c.mapping(run.get("options", {}) or {}, f"{path}.options"))
        try:
            sampler.with_defaults(options)
        except ValueError as err:
            raise c.fail(f"{path}.options", str(err)) from None
        label = c.name(run["name"], f"{path}.name") if "name" in run else sampler.name
        schedule = _parse_schedule_ref(c, run, path, model, sampler.name, options, tune, base_dir)
        stored = sampler.name == "stored"  # images made elsewhere: NFE as stated, 0 when not stated
        if "nfe" not in run and not stored:
            raise c.fail(f"{path}.nfe", "missing required key; required here: model, sampler, nfe")
        nfes = [c.integer(n, f"{path}.nfe[{j}]", minimum=0 if stored else 1)
                for j, n in enumerate(c.sequence(run.get("nfe", [0]), f"{path}.nfe"))]
        if stored and len(nfes) != 1:
            raise c.fail(f"{path}.nfe", f"a stored sample set is one set of images: give the one NFE they were made "
                                        f"with (got {nfes}), or leave nfe out; one model entry per file")
        paper = parse_paper_numbers(c, run.get("paper"), f"{path}.paper", nfes)
        for j, nfe in enumerate(nfes):
            if not sampler.nfe_ok(nfe):
                raise c.fail(f"{path}.nfe[{j}]", f"NFE {nfe} is impossible for {sampler.name}: {sampler.nfe_rule}")
            job = tune.get(schedule[len(SCHEDULE_PREFIX):]) if schedule.startswith(SCHEDULE_PREFIX) else None
            if job is not None and nfe > job.max_nfe:
                raise c.fail(f"{path}.nfe[{j}]", f"tune.{job.name} finds time points up to NFE {job.max_nfe} (its max_nfe)")
            try:  # the grid's shape does not depend on the model's σ range: build it once now
                sampler.schedule(NoiseRange(), nfe, options)
            except ValueError as err:
                raise c.fail(f"{path}.options", str(err)) from None
            row_id = f"{model}.{label}.nfe{nfe}"
            if row_id in seen:
                raise c.fail(f"{path}.nfe[{j}]", f"row {row_id} is already defined by {seen[row_id]}; give one run a distinct 'name'")
            seen[row_id] = path
            rows.append(Row(row_id, model, sampler.name, label, nfe, options, schedule, profiles=chosen,
                            paper=paper.get(nfe, {})))
    return rows


def _parse_schedule_ref(c: Checker, run, path: str, model: str, sampler: str, options: dict,
                        tune: dict[str, TuneJob], base_dir: Path) -> str:
    """``schedule: tuned:<job>`` (a tune job of this suite) or ``schedule: file.json``; "" when absent."""
    if "schedule" not in run:
        return ""
    ref = c.string(run["schedule"], f"{path}.schedule")
    if sampler not in tunable_samplers():
        raise c.fail(f"{path}.schedule", f"sampler {sampler!r} takes no time points; tuned schedules are for "
                                         f"{', '.join(tunable_samplers())}")
    given = [k for k in SCHEDULE_OPTIONS if k in options]
    if given:
        raise c.fail(f"{path}.options", f"{', '.join(given)} and a schedule both set the time points; keep one")
    if ref.startswith(SCHEDULE_PREFIX):
        job = tune.get(ref[len(SCHEDULE_PREFIX):])
        if job is None:
            raise c.fail(f"{path}.schedule", f"no tune job {ref[len(SCHEDULE_PREFIX):]!r}; this suite's tune jobs: "
                                             f"{', '.join(tune) or 'none'}")
        if (job.model, job.sampler) != (model, sampler):
            raise c.fail(f"{path}.schedule", f"tune.{job.name} tunes {job.model} with {job.sampler}, "
                                             f"this run is {model} with {sampler}")
    elif not (Path(ref).expanduser() if Path(ref).expanduser().is_absolute() else base_dir / ref).is_file():
        raise c.fail(f"{path}.schedule", f"schedule file {ref} does not exist (relative paths start at the suite's "
                                         f"folder); give a file from `cmbench tune` or tuned:<job>")
    return ref
