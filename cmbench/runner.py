"""Running a suite: tune its schedules, then sample and score every unfinished row.

The rows that share their samples are made together (:func:`cmbench.rows.evaluate_rows`), in
shards stored as they finish (:mod:`cmbench.row_features`); tune jobs (:mod:`cmbench.tuning.jobs`)
score their candidates with :func:`cmbench.generate.sample_and_score` on their proxy seeds.
Finished shards, rows and schedules are on disk before the next starts, so a rerun resumes.

Under torchrun every rank runs this same path on its share of the seeds; the main rank decides
(which rows are pending, whether a tuned value is known) and alone writes (:mod:`cmbench.distributed`).
``--shard i/n`` makes one part of every row's shards and scores nothing; ``--merge`` scores the
rows whose shards are all stored and samples nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from .batch_size import AUTO
from .compare import RUN_BASELINE, write_baseline
from .distributed import SINGLE, World
from .editing.run import EditingInputs, edit_identity, evaluate_edit_row, prepare_editing
from .finite import NonFiniteSamples
from .models import ModelAdapter
from .nll import TOY_PREFIX, evaluate_nll, load_images, protocol_from_spec
from .report import render_report
from .results import FAILED, RESULTS_JSONL, ResultStore, error_text, what_changed
from .rows import ShardsMissing, evaluate_rows, failed_row, row_identity, row_shards, same_samples
from .run_context import RunContext, output_folder, run_contexts
from .run_lock import output_folder_lock
from .shards import ShardPart
from .suite import Row, Suite
from .threads import ThreadChoice, choose_threads, using_threads
from .tuning.jobs import apply_schedule, show_schedule_files

logger = logging.getLogger(__name__)
RowCallback = Callable[[dict[str, Any]], None]
"""Receives each result row as the run stores it (a failed row has ``status`` "failed" and its ``error``)."""


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
    world: World = SINGLE,
    shard: ShardPart | None = None,
    merge: bool = False,
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

    ``world``: the ranks of a torchrun job, which share every row's seeds. ``shard``: make only
    this part of every pending row's shards (beside other shard jobs: the folder's lock is shared)
    and return the output folder, scoring nothing. ``merge``: score only the rows whose shards are
    all stored, sampling nothing; rows still missing shards are named in a RuntimeError raised
    after the report is written. Tune jobs must have run before ``shard`` and ``merge``.
    """
    if shard is not None and (merge or world.distributed):
        raise ValueError("--shard makes one part of the rows in one process: leave out --merge and torchrun")
    if (shard is not None or merge) and suite.batch_size == AUTO:
        raise ValueError(f"{suite.source}: batch_size: auto may choose another size in each shard job, and shards of "
                         "different sizes do not fit together; give --shard and --merge a number (--set batch_size=N)")
    threads = choose_threads(suite.threads)
    folder = output_folder(suite, out_dir)
    with ExitStack() as held, using_threads(threads.count):
        world.decide(_hold_lock, held, folder, wait, shard is not None)
        return _run_locked(suite, out_dir, device, recompute_changed, progress, baseline, models, threads, on_row,
                           world, shard, merge)


def _hold_lock(held: ExitStack, folder: Path, wait: bool, shared: bool) -> None:
    """Take the output folder's lock (on the main rank) until ``held`` closes; ``shared`` for shard
    jobs, which write only their own files and may run side by side."""
    held.enter_context(output_folder_lock(folder, wait=wait, shared=shared))


def _run_locked(suite: Suite, out_dir, device, recompute_changed: bool, progress: bool | None, baseline: dict | None,
                models: dict[str, ModelAdapter] | None, threads: ThreadChoice, on_row: RowCallback | None,
                world: World, shard: ShardPart | None, merge: bool) -> Path:
    contexts = run_contexts(suite, out_dir, device, models, threads, world)
    ctx = next(iter(contexts.values()))
    store = ResultStore(ctx.out) if world.main else None
    schedules = ctx.tune(suite.tune, recompute_changed=recompute_changed, progress=progress,
                         search=shard is None and not merge)
    rows = [apply_schedule(suite, row, schedules, ctx.file_hashes) for row in suite.rows]
    if world.main and shard is None:
        show_schedule_files(suite, ctx.out)
    pending = world.decide(_pending_rows, rows, store, contexts, recompute_changed)
    edits = [] if shard is not None else world.decide(
        _pending_rows, [apply_schedule(suite, row, schedules, ctx.file_hashes) for row in suite.editing.rows], store,
        {"": ctx}, recompute_changed)
    editing: list[EditingInputs] = []  # on the main rank, once checked (before any sampling)
    if edits:
        world.decide(lambda: editing.append(prepare_editing(ctx, edits)))
    likelihood_images = load_likelihood_images(suite) if pending and suite.likelihood and shard is None else None
    likelihoods: dict[str, dict] = {}
    waiting: list[str] = []
    for group in same_samples(pending):
        failed = False
        try:
            results = evaluate_rows(suite, group, contexts, progress, world=world, part=shard, make=not merge)
        except NonFiniteSamples as error:  # raised on every rank
            failed, results = True, [failed_row(contexts[row.profile], row, str(error)) for row in group]
        except ShardsMissing as missing:
            waiting.append(str(missing))
            continue
        if shard is not None:
            continue
        model = group[0].model
        if likelihood_images is not None and not failed and model not in likelihoods:
            likelihoods[model] = suite_likelihood(suite, ctx.model(model), likelihood_images, ctx.device, progress,
                                                  world)
        if world.main:
            for row, result in zip(group, results):
                _store_row(store, row, result, likelihoods.get(model), contexts, on_row)
            row_shards(contexts, group).remove()
    if shard is not None:
        return ctx.out
    for row in edits:
        world.decide(_edit_row, store, row, ctx, editing, progress, on_row)
    report = world.decide(_finish_run, store, ctx.out, baseline)
    if waiting:
        raise RuntimeError(f"{len(waiting)} row group(s) still miss shards, so they were not scored: "
                           + "; ".join(waiting) + " (run the missing `cmbench run --shard i/n` jobs, then --merge again)")
    return report


def _store_row(store: ResultStore, row: Row, result: dict[str, Any], likelihood: dict | None,
               contexts: dict[str, RunContext], on_row: RowCallback | None) -> None:
    """Store one row's record (a failed one as it is; a finished one with the model's likelihood and
    the row's fingerprint) and show it."""
    if result["status"] == FAILED:
        logger.warning("row %s failed: %s", row.row_id, error_text(result))
    else:
        result.update(likelihood or {})
        result.update(row_identity(contexts[row.profile], row))
    store.put(result)
    if on_row is not None:
        on_row(result)


def _edit_row(store: ResultStore, row: Row, ctx: RunContext, editing: list[EditingInputs], progress: bool | None,
              on_row: RowCallback | None) -> None:
    """(Main rank.) Make, score and store one editing row; one whose outputs are not finite is stored
    as failed, as a generation row is."""
    try:
        result = evaluate_edit_row(ctx, row, editing[0], progress)
    except NonFiniteSamples as error:
        result = {**failed_row(ctx, row, str(error)), **edit_identity(ctx.suite, row)}
    _store_row(store, row, result, None, {"": ctx}, on_row)


def _finish_run(store: ResultStore, out: Path, baseline: dict | None) -> Path:
    if store.rows:
        store.write_csv()
    if baseline is not None:
        write_baseline(out / RUN_BASELINE, baseline, overwrite=True)
    return render_report(out)


def tune_suite(
    suite: Suite,
    jobs: list[str],
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    recompute_changed: bool = False,
    progress: bool | None = None,
    wait: bool = False,
    world: World = SINGLE,
) -> tuple[Path, dict[str, dict]]:
    """Run the named tune jobs only; returns the output folder and their schedule documents
    (on every rank of ``world``, which share each candidate's seeds)."""
    unknown = [name for name in jobs if name not in suite.tune]
    if unknown:
        raise ValueError(f"suite {suite.name!r} has no tune job(s) {', '.join(unknown)}; it has: "
                         f"{', '.join(suite.tune) or 'none'}")
    threads = choose_threads(suite.threads)
    folder = output_folder(suite, out_dir)
    with ExitStack() as held, using_threads(threads.count):
        world.decide(_hold_lock, held, folder, wait, False)
        ctx = next(iter(run_contexts(suite, out_dir, device, threads=threads, world=world).values()))
        return ctx.out, ctx.tune(jobs, recompute_changed=recompute_changed, progress=progress)


def load_likelihood_images(suite: Suite) -> torch.Tensor:
    """The uint8 images of the suite's ``likelihood.data`` (a toy split or an .npz), up to ``limit``."""
    data = suite.likelihood["data"]
    try:
        images = load_images(data if data.startswith(TOY_PREFIX) else str(suite.resolve(data)), continuous=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{suite.source}: likelihood.data: {err}") from None
    return images[: suite.likelihood.get("limit", len(images))]


def suite_likelihood(suite: Suite, model: ModelAdapter, images: torch.Tensor, device: torch.device,
                     progress: bool | None, world: World = SINGLE) -> dict:
    """bits/dim of ``images`` under ``model`` (None for models without score access): ``bpd``,
    its standard error, the solver's mean NFE and the likelihood protocol that made them, once per model."""
    if not model.has("denoise"):
        return {"bpd": None, "bpd_stderr": None, "bpd_nfe": None, "bpd_protocol": None}
    spec = suite.likelihood
    result = evaluate_nll(
        model, images, protocol_from_spec(spec), continuous=False, passes=spec["passes"],
        batch_size=spec["batch_size"], seed=spec["seed"], device=device, progress=progress,
        source=f"{suite.source}: likelihood.data {spec['data']}", world=world,
    )
    return {"bpd": result["bpd"], "bpd_stderr": result["stderr"], "bpd_nfe": result["nfe_mean"],
            "bpd_protocol": result["protocol"]}


def _pending_rows(rows: list[Row], store: ResultStore, contexts: dict[str, RunContext], recompute_changed: bool) -> list[Row]:
    """(On the main rank.) The rows to compute: those not stored, stored as failed, or (with ``recompute_changed``)
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
    if len(pending) < len(rows):
        logger.info("%d of %d rows already in %s; %d to run", len(rows) - len(pending), len(rows),
                    store.run_dir / RESULTS_JSONL, len(pending))
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
