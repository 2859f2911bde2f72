"""Running a suite's tune jobs and applying tuned schedules to its rows.

A job's candidates are scored by :class:`~cmbench.tuning.candidates.CandidateScorer` (the code a
suite row uses, on the job's proxy seeds; every finished evaluation logged, so a killed search
resumes where it stopped), placed by :func:`~cmbench.tuning.greedy.greedy_time_points`, then
validated on held-out seeds against the default schedule (:mod:`cmbench.tuning.validation`).
The finished schedule goes to ``schedules/<job>.json`` (see :mod:`cmbench.tuning.schedule_file`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_write_bytes
from ..distributed import SINGLE, World
from ..names import inside
from ..samplers import get_sampler
from .budget import Ledger
from .candidates import CandidateScorer, EvaluationLog
from .greedy import Evaluation, KarrasIndexSpace, LogSigmaSpace, Settings, greedy_time_points
from .schedule_file import SCHEDULE_FORMAT, read_schedule, schedule_sigmas, write_schedule
from .spec import SCHEDULE_PREFIX, TuneJob
from .validation import VERDICT_Z, validate

SCHEDULES_DIR = "schedules"
logger = logging.getLogger(__name__)


def schedule_path(out: Path, name: str) -> Path:
    return inside(out, Path(SCHEDULES_DIR) / f"{name}.json")


def job_fingerprint(suite, job: TuneJob, file_hashes: dict[str, str]) -> str:
    """A hash of everything that changes a job's evaluations; a reused schedule must match it."""
    config = {
        "job": dataclasses.asdict(job), "model": suite.models[job.model].__dict__,
        "files": {k: file_hashes.get(k) for k in (job.model, "reference", "extractor")},
        "batch_size": suite.batch_size, "quantisation": suite.quantisation, "features": suite.features,
        "metric_options": suite.metric_options.__dict__, "reference": suite.reference,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_tune_job(
    suite,
    job: TuneJob,
    model,
    extractor,
    reference,
    device: torch.device,
    out: Path,
    *,
    file_hashes: dict[str, str],
    batch_size: int,
    recompute_changed: bool = False,
    progress: bool | None = None,
    search: bool = True,
    world: World = SINGLE,
) -> dict[str, Any]:
    """The job's schedule document: read from ``out`` when it is there for this configuration,
    else searched (resuming from logged evaluations), validated and written; without ``search``
    (shard jobs) a missing schedule is an error. Each evaluation's sampling draws a progress bar
    if ``progress`` (None: on a terminal); the search's steps go to this module's logger.

    Under torchrun (``world``) every rank walks the same search: each candidate's new seeds are
    shared among the ranks, the main rank scores them and shares the score, and alone reads and
    writes the files (``reference`` is only called there). ``batch_size`` is the suite's, or the
    one ``batch_size: auto`` chose (the fingerprint holds the suite's, the document the one used)."""
    path = schedule_path(out, job.name)
    fingerprint = job_fingerprint(suite, job, file_hashes)
    document = world.decide(_stored_schedule, path, fingerprint, job.name, recompute_changed, search)
    if document is not None:
        return document
    sampler = get_sampler(job.sampler)
    options = sampler.with_defaults(job.options)
    if job.space == "karras_index":
        space = KarrasIndexSpace(job.karras_steps, model.sigma_min, model.sigma_max, options["rho"])
    else:
        space = LogSigmaSpace(model.sigma_min, model.sigma_max, job.tol)
    log = EvaluationLog(path.with_suffix(".evaluations.jsonl"), fingerprint) if world.main else None

    def scorer(seed_start: int, what: str) -> CandidateScorer:
        return CandidateScorer(model=model, sampler=sampler, run_options=lambda nfe, s: tuned_options(job.options, nfe, s),
                               objective=job.objective, metric_names=job.metric_names, suite=suite, extractor=extractor,
                               reference=reference, device=device, batch_size=batch_size, seed_start=seed_start,
                               resamples=job.resamples,
                               log=log, world=world, progress=progress, desc=f"{what} {job.name}")

    def report(e: Evaluation) -> None:
        if e.position is not None:
            where = f"index {e.position}" if job.space == "karras_index" else f"σ {e.sigma:.4g}"
            logger.info("tune %s: NFE %d %s gap %d %s on %d samples → %s %.4f", job.name, e.nfe, e.stage, e.gap, where,
                        e.samples, job.objective.label, e.value)

    started = time.perf_counter()
    ledger = Ledger(job.budget_evaluations, job.budget_seconds)
    settings = Settings(job.method, job.refine, job.ladder, job.z, job.screen_points)
    found, trace = greedy_time_points(scorer(job.seed_start, "tune"), space, settings, job.max_nfe,
                                      value=lambda score: job.objective.value(score.losses), ledger=ledger,
                                      on_evaluation=report)
    for s in found:
        logger.info("tune %s: NFE %d σ %s → %s %.4f (%d evaluations)", job.name, s.nfe, [round(x, 4) for x in s.sigmas],
                    job.objective.label, s.value, s.evaluations)
    validation = None
    if job.validation_samples:
        default = lambda nfe: tuple(sampler.schedule(model.noise_range, nfe, job.options).tolist())  # noqa: E731
        validation = {"num_samples": job.validation_samples, "seed_start": job.validation_seed_start, "z": VERDICT_Z,
                      "schedules": validate(scorer(job.validation_seed_start, "validate"), found, default,
                                            job.objective, job.validation_samples)}
    document = _document(suite, job, model, extractor, space, options, fingerprint, file_hashes, found, trace,
                         validation, ledger, time.perf_counter() - started, batch_size)
    if world.main:
        write_schedule(path, document, overwrite=True)  # a stale file was refused above unless recompute_changed
    return world.share(document)


def _stored_schedule(path: Path, fingerprint: str, name: str, recompute_changed: bool, search: bool) -> dict | None:
    """The schedule document already in the folder for this configuration, else None (to search)."""
    if path.exists():
        document = read_schedule(path)
        if document.get("fingerprint") == fingerprint:
            return document
        if not recompute_changed:
            raise RuntimeError(f"{path} was tuned under a different configuration than tune.{name} now gives; "
                               "use another --out folder, or pass --recompute-changed to search again")
    if not search:
        raise RuntimeError(f"tune.{name}: no schedule in {path.parent} yet; shard jobs and merges do not search, so "
                           "run `cmbench tune` (alone or under torchrun) into this --out folder first")
    return None


def tuned_options(options: dict[str, Any], nfe: int, sigmas) -> dict[str, Any]:
    """Sampler options that run ``sigmas`` (NFE + 1 points, descending) at ``nfe``."""
    return {**options, "time_points": {nfe: [float(s) for s in sigmas]}, "time_point_units": "sigma"}


def _document(suite, job: TuneJob, model, extractor, space, options, fingerprint, file_hashes, found, trace,
              validation, ledger: Ledger, seconds, batch_size: int) -> dict:
    karras = job.space == "karras_index"
    ladder = job.ladder
    search = {"method": job.method, "refine": job.refine, "space": job.space,
              "sigma_min": model.sigma_min, "sigma_max": model.sigma_max,
              **({"karras_steps": job.karras_steps, "rho": options["rho"]} if karras else {"tol": job.tol}),
              "samples": {"race": list(ladder.race), "tie_break": list(ladder.tie_break)},
              "screen_points": job.screen_points, "resamples": job.resamples, "z": job.z}
    return {
        "format": SCHEDULE_FORMAT, "name": job.name, "fingerprint": fingerprint,
        "model": {"name": job.model, "family": model.family,
                  "checkpoint": suite.models[job.model].options.get("checkpoint"),
                  "checkpoint_sha256": file_hashes.get(job.model)},
        "sampler": job.sampler, "sampler_options": job.options, "search": search,
        "objective": {**job.objective.describe(),
                      "num_samples": job.num_samples, "seed_start": job.seed_start, "max_samples": job.max_samples,
                      "batch_size": batch_size, "quantisation": suite.quantisation,
                      "extractor": extractor.identity, "reference_sha256": file_hashes.get("reference"),
                      "metric_options": dataclasses.asdict(suite.metric_options)},
        "schedules": [{"nfe": s.nfe, "sigmas": list(s.sigmas), "indices": list(s.positions) if karras else None,
                       "value": s.value, "se": s.se, "evaluations": s.evaluations, "cost": round(s.cost, 4)}
                      for s in found],
        "validation": validation,
        "cost": ledger.describe(),
        "trace": [{"nfe": e.nfe, "stage": e.stage, "gap": e.gap, "index": e.position if karras else None,
                   "sigma": e.sigma, "sigmas": list(e.sigmas), "samples": e.samples, "value": e.value, "se": e.se,
                   "cost": round(e.cost, 4), "seconds": e.seconds} for e in trace],
        "evaluations": len(trace), "seconds": round(seconds, 2), "cmbench_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def apply_schedule(suite, row, documents: dict[str, dict], file_hashes: dict[str, str]):
    """``row`` with the time points of its ``schedule`` (a tune job's or a file's) for its NFE."""
    if not row.schedule:
        return row
    if row.schedule.startswith(SCHEDULE_PREFIX):
        source = f"tune.{row.schedule[len(SCHEDULE_PREFIX):]}"
        document = documents[row.schedule[len(SCHEDULE_PREFIX):]]
    else:
        source = str(suite.resolve(row.schedule))
        document = read_schedule(source)
        _check_file_fits(document, source, row, file_hashes)
    conflicting = {k: v for k, v in document["sampler_options"].items() if k in row.options and row.options[k] != v}
    if conflicting:
        raise ValueError(f"row {row.row_id}: options {conflicting} differ from those schedule {source} was tuned "
                         f"with ({document['sampler_options']})")
    sigmas = schedule_sigmas(document, row.nfe, source)
    options = tuned_options({**document["sampler_options"], **row.options}, row.nfe, sigmas)
    return dataclasses.replace(row, options=options)


def show_schedule_files(suite, out: Path) -> None:
    """Copy the schedule files the suite's rows name into ``out/schedules/`` so the report shows
    them beside the tune jobs' (a file named like a tune job is left out rather than mixed up)."""
    for ref in sorted({row.schedule for row in suite.rows if row.schedule and not row.schedule.startswith(SCHEDULE_PREFIX)}):
        source = suite.resolve(ref)
        if source.stem not in suite.tune:
            target = schedule_path(out, source.stem)
            if not target.exists() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, source.read_bytes())


def _check_file_fits(document: dict, source: str, row, file_hashes: dict[str, str]) -> None:
    if document["sampler"] != row.sampler:
        raise ValueError(f"row {row.row_id}: schedule {source} was tuned for sampler {document['sampler']!r}, "
                         f"not {row.sampler!r}")
    tuned_for, have = document["model"].get("checkpoint_sha256"), file_hashes.get(row.model)
    if tuned_for != have:
        raise ValueError(f"row {row.row_id}: schedule {source} was tuned for checkpoint sha256 {tuned_for}; "
                         f"model {row.model!r} has {have}")

