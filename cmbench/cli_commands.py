"""What each command of the command line does (the parser is :mod:`cmbench.cli_parser`, the exit
statuses and error handling :mod:`cmbench.cli`). Results go to standard output; progress bars,
messages and errors to standard error. Heavy modules are imported inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from .console import write_line
from .names import name_problem

DEFAULT_SUITE = "toy"
AD_HOC_OPTIONS = {"--sampler": "sampler", "--max-nfe": "max_nfe", "--method": "method", "--space": "space",
                  "--metric": "metric", "--samples": "samples", "--seed-start": "seed_start",
                  "--karras-steps": "karras_steps", "--tol": "tol", "--name": "name",
                  "--budget-evaluations": "budget_evaluations", "--budget-seconds": "budget_seconds",
                  "--no-refine": "refine", "--validation-samples": "validation_samples"}
"""The options that describe an ad-hoc tune job (``--model``), by their ``args`` attribute."""


def bundled_suites() -> dict[str, Path]:
    """Suites shipped with the package (the repository's ``suites/`` folder), by name."""
    folder = resources.files("cmbench.suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_suite(name_or_path: str) -> Path:
    """A suite file path, or the name of a bundled suite (``gmm`` → suites/gmm.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_suites()
    if name_or_path in bundled:
        return bundled[name_or_path]
    raise FileNotFoundError(
        f"suite {name_or_path!r} is neither a file nor a bundled suite; bundled: {', '.join(sorted(bundled))}"
    )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a command whose finished work is kept; ``kept`` says what and where."""

    def __init__(self, kept: str):
        super().__init__(kept)
        self.kept = kept


@contextmanager
def resumable(kept: Callable[[], str]) -> Iterator[None]:
    """Turn a Ctrl-C inside the block into :class:`Interrupted` saying what is kept (``kept()``)."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(kept()) from None


def run_command(args: argparse.Namespace) -> int:
    from .compare import baseline_document, load_side, write_baseline
    from .report.render import regression_section
    from .shards import SHARDS_FOLDER
    from .suite import load_suite

    overrides = [*args.set, *([f"save_samples={args.save_samples}"] if args.save_samples else []), *_threads_set(args)]
    suite = load_suite(resolve_suite(args.suite), overrides)
    baseline = baseline_document(load_side(args.baseline)) if args.baseline else None  # unusable: fail before running
    if args.save_baseline and args.save_baseline.exists() and not args.overwrite_baseline:
        raise FileExistsError(f"baseline file {args.save_baseline} exists; pass --overwrite-baseline to replace it")
    report = run_and_show_rows(suite, args, baseline=baseline)
    if args.shard is not None:
        print(f"shard {args.shard}: features stored in {report / SHARDS_FOLDER}; score the rows with "
              "`cmbench run ... --merge` once every shard is done")
        return 0
    failed = show_run(report, suite)
    if baseline is not None:
        section = regression_section(report.parent) or {}
        print(f"regression vs {args.baseline}: " + (f"not compared: {section['note']}" if section.get("note")
                                                    else section.get("summary", "")))
    if args.save_baseline and failed:
        print(f"cmbench: no baseline written: {len(failed)} row(s) failed", file=sys.stderr)
    elif args.save_baseline:
        document = baseline_document(load_side(report.parent))
        write_baseline(args.save_baseline, document, overwrite=args.overwrite_baseline)
        print(f"baseline: {args.save_baseline} ({len(document['rows'])} rows)")
    return 1 if failed else 0


def score_command(args: argparse.Namespace) -> int:
    from .sample_sets import score_suite

    suite = score_suite(
        args.samples, profiles=args.profile, suite=args.suite,
        reference=args.reference, metrics=args.metric, nfe=args.nfe, limit=args.limit,
        quantisation=args.quantisation, name=args.name, overrides=[*args.set, *_threads_set(args)],
    )
    return 1 if show_run(run_and_show_rows(suite, args), suite) else 0


def run_and_show_rows(suite, args: argparse.Namespace, baseline: dict | None = None) -> Path:
    """Run ``suite`` as ``args`` say, printing each row's line as it finishes; the report's path.
    A Ctrl-C becomes :class:`Interrupted`, naming the rows kept."""
    from .result_text import row_line, row_model
    from .results import FAILED, RESULTS_JSONL
    from .rows import sampler_label
    from .runner import output_folder, run_suite

    rows = [*suite.rows, *suite.editing.rows]
    widths = (max(len(row_model({"model": row.model, "task": row.task})) for row in rows),
              max(len(sampler_label(row)) for row in rows))

    def show(row: dict) -> None:
        if row.get("status") != FAILED:  # a failed row: the runner's warning names it on standard error
            write_line(row_line(row, widths))

    folder = output_folder(suite, args.out)
    with resumable(lambda: f"{len(suite_rows(folder, suite, ok_only=True))} finished row(s) are kept in "
                           f"{folder / RESULTS_JSONL}, and the finished shards of the row in progress"):
        return run_suite(suite, args.out, device=args.device, recompute_changed=args.recompute_changed,
                         progress=args.progress, baseline=baseline, wait=args.wait, on_row=show, world=args.world,
                         shard=getattr(args, "shard", None), merge=getattr(args, "merge", False))


def show_run(report: Path, suite) -> list[dict]:
    """Print the summary table of the suite's rows (resumed ones too) and where the results and
    report are; name the failed rows on standard error. Returns the failed rows."""
    from .result_text import summary_table
    from .results import FAILED

    rows = suite_rows(report.parent, suite)
    if rows:
        print(f"\n{summary_table(rows)}\n")
    print(f"results: {report.parent / 'results.jsonl'}\nreport:  {report}")
    failed = [row for row in rows if row.get("status") == FAILED]
    if failed:
        print(f"cmbench: {len(failed)} row(s) failed: {', '.join(row['row_id'] for row in failed)} "
              "(their errors are in results.jsonl and the report)", file=sys.stderr)
    return failed


def suite_rows(run_dir: Path, suite, *, ok_only: bool = False) -> list[dict]:
    """The stored rows of ``suite`` in ``run_dir``, in the suite's order (only the finished ones
    with ``ok_only``; failed rows hold no numbers)."""
    from .results import FAILED, RESULTS_JSONL, read_rows

    path = run_dir / RESULTS_JSONL
    stored = {row["row_id"]: row for row in read_rows(path)} if path.is_file() else {}
    rows = [stored[row.row_id] for row in (*suite.rows, *suite.editing.rows) if row.row_id in stored]
    return [row for row in rows if row.get("status") != FAILED] if ok_only else rows


def compare_command(args: argparse.Namespace) -> int:
    from .atomic import atomic_write_text
    from .compare import (compare, load_side, parse_threshold_option, render_markdown, render_table,
                          resolve_settings, to_json)

    thresholds = {}
    for text in args.threshold:
        metric, threshold = parse_threshold_option(text)
        thresholds[metric] = thresholds[metric].merge(threshold, metric) if metric in thresholds else threshold
    new, baseline = load_side(args.new), load_side(args.baseline)
    settings = resolve_settings(new, baseline, z=args.z, thresholds=thresholds)
    result = compare(new, baseline, settings, metrics=args.metric or None)
    texts = {
        "table": lambda: render_table(result, args.strict),
        "markdown": lambda: render_markdown(result, args.strict),
        "json": lambda: json.dumps(to_json(result, args.strict), indent=2, ensure_ascii=False) + "\n",
    }
    for path, kind in ((args.json, "json"), (args.markdown, "markdown")):
        if path:
            atomic_write_text(path, texts[kind]())
    print(texts[args.format](), end="")
    return result.exit_code(args.strict)


def tune_command(args: argparse.Namespace) -> int:
    from .runner import output_folder, tune_suite
    from .suite import load_suite
    from .tuning.jobs import SCHEDULES_DIR, schedule_path

    overrides = [*args.set, *_threads_set(args)]
    jobs = list(args.job)
    if args.model:  # an ad-hoc job, validated like one written in the suite
        name = args.name or "_".join(filter(None, (args.model, args.sampler)))
        problem = name_problem(name) or ("'.' is not accepted in a --name (it separates --set key paths)"
                                         if "." in name else None)
        if problem:
            raise ValueError(f"--name {name!r}: {problem}")
        overrides += [f"tune.{name}.{key}={value}" for key, value in ad_hoc_job_keys(args).items()]
        jobs.append(name)
    else:
        given = [option for option, dest in AD_HOC_OPTIONS.items() if getattr(args, dest) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} shape an ad-hoc job: give them with --model, --sampler and "
                             "--max-nfe, or change the suite's jobs with --set tune.NAME.KEY=VALUE")
    suite = load_suite(resolve_suite(args.suite), overrides)
    if not (jobs or suite.tune):
        raise ValueError(f"suite {suite.name!r} has no tune jobs; add a tune: block or give --model, --sampler and --max-nfe")
    folder = output_folder(suite, args.out)
    with resumable(lambda: f"every finished evaluation is kept in {folder / SCHEDULES_DIR}"):
        out, documents = tune_suite(suite, jobs or list(suite.tune), args.out, device=args.device,
                                    recompute_changed=args.recompute_changed, progress=args.progress, wait=args.wait,
                                    world=args.world)
    for name, document in documents.items():
        print("\n".join(tuned_schedule_lines(name, document)))
        print(f"  schedule: {schedule_path(out, name)}")
    return 0


def ad_hoc_job_keys(args: argparse.Namespace) -> dict[str, str]:
    """The ad-hoc job's keys that ``args`` give, as ``--set tune.NAME.KEY=VALUE`` writes them
    (nested keys dotted; ``--validation-samples 0`` turns validation off)."""
    given = {"model": args.model, "sampler": args.sampler, "max_nfe": args.max_nfe, "method": args.method,
             "space": args.space, "metric": args.metric, "num_samples": args.samples,
             "seed_start": args.seed_start, "karras_steps": args.karras_steps, "tol": args.tol,
             "budget.evaluations": args.budget_evaluations, "budget.seconds": args.budget_seconds,
             "refine": None if args.refine is None else json.dumps(args.refine)}
    if args.validation_samples == 0:
        given["validation"] = "false"
    elif args.validation_samples is not None:
        given["validation.num_samples"] = args.validation_samples
    return {key: str(value) for key, value in given.items() if value is not None}


def tuned_schedule_lines(name: str, document: dict) -> list[str]:
    """What ``cmbench tune`` prints of a schedule document: the search and its cost, then per NFE
    the points and the proxy value ± se, evaluations and cost, with the held-out check beside the
    default schedule (tuned, default, difference ± paired se, verdict) where the file has one, and
    a warning line for each tuned schedule worse than the default."""
    from .report.numbers import MISSING, format_general
    from .report.render import budget_exhausted, cost_summary, schedule_table

    objective, search, table = document["objective"], document.get("search") or {}, schedule_table(document)
    lines = [f"{name}: {document['model']['name']} · {document['sampler']} · {search.get('method')} search"
             + (" with joint refinement" if search.get("refine") else "") + f" over {search.get('space')} · "
             f"{objective['metric']} on {objective['num_samples']} proxy samples (seeds {objective['seed_start']}..)"
             f" · {cost_summary(document)}"
             + (" · budget exhausted" if budget_exhausted(document) else "")]
    for entry, row in zip(document["schedules"], table["rows"]):
        where = f" indices {entry['indices']}" if entry.get("indices") else ""
        lines.append(f"  NFE {entry['nfe']}: σ {[float(f'{s:.4g}') for s in entry['sigmas']]}{where} → "
                     f"{objective['metric']} {row['value']} ({row['evaluations']} evaluations"
                     + (f", cost {row['cost']})" if table["has_cost"] else ")"))
        if table["validated"] and row["verdict"] != MISSING:
            lines.append(f"    held-out: tuned {row['held_out']}, default {row['default']}, "
                         f"tuned − default {row['difference']} → {row['verdict']}")
    validation = document.get("validation")
    if table["validated"]:
        lines.append(f"  validated on {validation.get('num_samples')} held-out samples (seeds "
                     f"{validation.get('seed_start')}..) against the default Karras schedule; better or worse: beyond "
                     f"{format_general(validation.get('z'), 3)} paired standard errors")
    else:
        lines.append("  not validated on held-out seeds")
    return lines + [f"  warning: {warning}" for warning in table["warnings"]]


def nll_command(args: argparse.Namespace) -> int:
    from .atomic import atomic_write_text
    from .models import build_model
    from .nll import evaluate_nll, load_images, make_protocol
    from .run_context import resolve_device
    from .suite import load_suite
    from .threads import choose_threads, using_threads

    protocol = make_protocol(args.protocol, divergence=args.divergence, rtol=args.rtol, atol=args.atol)
    suite = load_suite(resolve_suite(args.suite))
    if args.model not in suite.models:
        raise ValueError(f"suite {suite.name!r} has no model {args.model!r}; it has: {', '.join(suite.models)}")
    spec = suite.models[args.model]
    device = resolve_device(args.device or suite.device, args.world.local_rank)
    model = build_model(spec.family, spec.options, suite.checkpoint_dir, str(device), name=args.model,
                        base_dir=suite.base_dir)
    if not model.has("denoise"):
        raise model.missing_map("denoise")
    images = load_images(args.data, args.continuous)
    if args.limit:
        images = images[: args.limit]
    threads = choose_threads(args.threads or suite.threads)
    with using_threads(threads.count):
        result = evaluate_nll(
            model, images, protocol, continuous=args.continuous, passes=args.passes, batch_size=args.batch_size,
            seed=args.seed, device=device, progress=args.progress, source=f"--data {args.data}", world=args.world,
        )
    if not args.world.main:  # the main rank reports and writes
        return 0
    result = {"suite": suite.name, "model": args.model, "data": args.data, **result, "threads": threads.as_dict(),
              "world_size": args.world.size}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n", overwrite=args.overwrite)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from .report import render_report

    print(render_report(args.run_dir))
    return 0


def zoo_train_toy_command(args: argparse.Namespace) -> int:
    from .zoo.toy.train import ToyZooConfig, train_toy_zoo

    manifest = train_toy_zoo(args.out, ToyZooConfig(seed=args.seed), overwrite=args.overwrite, progress=args.progress)
    for name, entry in manifest["models"].items():
        print(f"{name:<5} {entry['family']:<4} {entry['seconds']:>7.1f} s  sha256 {entry['sha256']}")
    print(f"total {manifest['total_seconds']:.1f} s; manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def zoo_list_command(args: argparse.Namespace) -> int:
    from .zoo import zoo_manifest

    manifest = zoo_manifest(args.zoo)
    print(f"zoo {args.zoo}: trained in {manifest['total_seconds']:.0f} s (cmbench {manifest['cmbench_version']}, "
          f"torch {manifest['torch_version']}, {manifest['torch_threads']} threads)")
    for name, entry in manifest["models"].items():
        print(f"  zoo:{args.zoo}/{name:<5} {entry['family']:<4} seed {entry['seed']:<3} {entry['steps']:>6} steps  sha256 {entry['sha256']}")
    return 0


def profiles_command(args: argparse.Namespace) -> int:
    from .profiles import describe_profiles

    print(describe_profiles())
    return 0


def weights_fetch_command(args: argparse.Namespace) -> int:
    from .weights import WEIGHTS, fetch_weights, find_weights

    spec = WEIGHTS[args.name]
    if args.dest is None:
        try:
            print(f"already present: {find_weights(spec, sha256=spec.sha256)}")
            return 0
        except FileNotFoundError:
            pass
    print(fetch_weights(spec, args.dest, progress=args.progress))
    return 0


def _threads_set(args: argparse.Namespace) -> list[str]:
    """``--threads`` of a suite command, as the ``--set`` override of the suite's ``threads``."""
    return [f"threads={args.threads}"] if args.threads is not None else []
