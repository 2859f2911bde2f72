"""The command line: a thin layer over :mod:`cmbench.runner` and :mod:`cmbench.report`."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from .cli_args import integer_at_least, non_negative_integer, positive_integer, positive_number
from .cli_stats import add_stats_parser
from .names import name_problem

DEFAULT_SUITE = "toy"


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


def _run(args: argparse.Namespace) -> int:
    from .compare import baseline_document, load_side, write_baseline
    from .report.render import regression_section
    from .runner import run_suite
    from .suite import load_suite

    overrides = [*args.set, *([f"save_samples={args.save_samples}"] if args.save_samples else []), *_threads_set(args)]
    suite = load_suite(resolve_suite(args.suite), overrides)
    baseline = baseline_document(load_side(args.baseline)) if args.baseline else None  # unusable: fail before running
    if args.save_baseline and args.save_baseline.exists() and not args.overwrite_baseline:
        raise FileExistsError(f"baseline file {args.save_baseline} exists; pass --overwrite-baseline to replace it")
    report = run_suite(
        suite, args.out, device=args.device, recompute_changed=args.recompute_changed, progress=not args.quiet,
        baseline=baseline, wait=args.wait,
    )
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


def _score(args: argparse.Namespace) -> int:
    from .runner import run_suite
    from .sample_sets import score_suite

    suite = score_suite(
        args.samples, profiles=args.profile, suite=args.suite,
        reference=args.reference, metrics=args.metric, nfe=args.nfe, limit=args.limit,
        quantisation=args.quantisation, name=args.name, overrides=[*args.set, *_threads_set(args)],
    )
    report = run_suite(suite, args.out, device=args.device, recompute_changed=args.recompute_changed,
                       progress=not args.quiet, wait=args.wait)
    return 1 if show_run(report, suite) else 0


def show_run(report: Path, suite) -> list[dict]:
    """Print where a run's results and report are and which rows failed; returns the failed rows."""
    print(f"results: {report.parent / 'results.jsonl'}\nreport:  {report}")
    failed = failed_rows(report.parent, suite)
    for row in failed:
        print(f"cmbench: row {row['row_id']} failed: {row['error']}", file=sys.stderr)
    return failed


def failed_rows(run_dir: Path, suite) -> list[dict]:
    """The suite's rows stored as failed in ``run_dir`` (they hold no numbers)."""
    from .results import FAILED, RESULTS_JSONL, read_rows

    ids = {row.row_id for row in suite.rows}
    return [row for row in read_rows(run_dir / RESULTS_JSONL) if row["row_id"] in ids and row.get("status") == FAILED]


def _compare(args: argparse.Namespace) -> int:
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


def _tune(args: argparse.Namespace) -> int:
    from .runner import tune_suite
    from .suite import load_suite
    from .tuning.jobs import schedule_path

    overrides = [*args.set, *_threads_set(args)]
    jobs = list(args.job)
    if args.model:  # an ad-hoc job, validated like one written in the suite
        name = args.name or "_".join(filter(None, (args.model, args.sampler)))
        problem = name_problem(name) or ("'.' is not accepted in a --name (it separates --set key paths)"
                                         if "." in name else None)
        if problem:
            raise ValueError(f"--name {name!r}: {problem}")
        given = {"model": args.model, "sampler": args.sampler, "max_nfe": args.max_nfe, "method": args.method,
                 "space": args.space, "metric": args.metric, "num_samples": args.samples,
                 "seed_start": args.seed_start, "karras_steps": args.karras_steps, "tol": args.tol}
        overrides += [f"tune.{name}.{key}={value}" for key, value in given.items() if value is not None]
        jobs.append(name)
    suite = load_suite(resolve_suite(args.suite), overrides)
    if not (jobs or suite.tune):
        raise ValueError(f"suite {suite.name!r} has no tune jobs; add a tune: block or give --model, --sampler and --max-nfe")
    out, documents = tune_suite(suite, jobs or list(suite.tune), args.out, device=args.device,
                                recompute_changed=args.recompute_changed, progress=not args.quiet, wait=args.wait)
    for name, document in documents.items():
        objective = document["objective"]
        print(f"{name}: {document['model']['name']} · {document['sampler']} · {document['search']['method']} search "
              f"over {document['search']['space']} · {objective['metric']} on {objective['num_samples']} samples "
              f"(seeds {objective['seed_start']}..) · {document['evaluations']} evaluations")
        for entry in document["schedules"]:
            where = f" indices {entry['indices']}" if entry["indices"] else ""
            print(f"  NFE {entry['nfe']}: σ {[float(f'{s:.4g}') for s in entry['sigmas']]}{where} → "
                  f"{objective['metric']} {entry['value']:.4f} ({entry['evaluations']} evaluations)")
        print(f"  schedule: {schedule_path(out, name)}")
    return 0


def _nll(args: argparse.Namespace) -> int:
    import json

    from .atomic import atomic_write_text
    from .models import build_model
    from .nll import evaluate_nll, load_images, make_protocol
    from .runner import resolve_device
    from .suite import load_suite
    from .threads import choose_threads, using_threads

    protocol = make_protocol(args.protocol, divergence=args.divergence, rtol=args.rtol, atol=args.atol)
    suite = load_suite(resolve_suite(args.suite))
    if args.model not in suite.models:
        raise ValueError(f"suite {suite.name!r} has no model {args.model!r}; it has: {', '.join(suite.models)}")
    spec = suite.models[args.model]
    device = resolve_device(args.device or suite.device)
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
            seed=args.seed, device=device, progress=not args.quiet, source=f"--data {args.data}",
        )
    result = {"suite": suite.name, "model": args.model, "data": args.data, **result, "threads": threads.as_dict()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n", overwrite=args.overwrite)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import render_report

    print(render_report(args.run_dir))
    return 0


def _zoo_train_toy(args: argparse.Namespace) -> int:
    from .zoo.toy.train import ToyZooConfig, train_toy_zoo

    manifest = train_toy_zoo(args.out, ToyZooConfig(seed=args.seed), overwrite=args.overwrite, progress=not args.quiet)
    for name, entry in manifest["models"].items():
        print(f"{name:<5} {entry['family']:<4} {entry['seconds']:>7.1f} s  sha256 {entry['sha256']}")
    print(f"total {manifest['total_seconds']:.1f} s; manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def _zoo_list(args: argparse.Namespace) -> int:
    from .zoo import zoo_manifest

    manifest = zoo_manifest(args.zoo)
    print(f"zoo {args.zoo}: trained in {manifest['total_seconds']:.0f} s (cmbench {manifest['cmbench_version']}, "
          f"torch {manifest['torch_version']}, {manifest['torch_threads']} threads)")
    for name, entry in manifest["models"].items():
        print(f"  zoo:{args.zoo}/{name:<5} {entry['family']:<4} seed {entry['seed']:<3} {entry['steps']:>6} steps  sha256 {entry['sha256']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmbench", description="Benchmark consistency-family generative models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite: sample, score, write results and the HTML report")
    run.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help=f"suite file or bundled suite name (default: {DEFAULT_SUITE})")
    run.add_argument("--out", type=Path, help="output folder (default: the suite's output_dir, else reports/<suite name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a suite value, e.g. --set num_samples=500 --set runs.0.nfe=[1,2]")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the suite's device")
    run.add_argument("--recompute-changed", action="store_true",
                     help="recompute rows whose stored configuration differs from the suite's (default: error)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--wait", action="store_true",
                     help="if another cmbench process is writing to the output folder, wait for it (default: error at once)")
    run.add_argument("--save-baseline", type=Path, metavar="FILE",
                     help="after the run, write its rows as a baseline file (cmbench-baseline/1) to commit")
    run.add_argument("--overwrite-baseline", action="store_true", help="let --save-baseline replace an existing file")
    run.add_argument("--save-samples", metavar="FORMATS",
                     help="also write each row's images: npz (ADM-style arr_0/arr_1), png (EDM's layout) or npz,png, "
                          "under OUT/samples/ (the suite key save_samples)")
    run.add_argument("--baseline", metavar="FILE",
                     help="a baseline file, results file or run folder: the report gets a regression section against it")
    run.set_defaults(func=_run)

    score = sub.add_parser(
        "score", help="score images made elsewhere (ADM-style .npz, PNG/JPEG folders) under one or more profiles",
        description="Images made elsewhere, scored as a suite row is: same metrics, standard errors, results, report "
                    "and compare. `cmbench score SAMPLES.npz --reference REF.npz --profile adm` replaces the ADM "
                    "evaluator's `evaluator.py REF SAMPLES`.")
    score.add_argument("samples", nargs="+", metavar="SAMPLES",
                       help="an .npz with NHWC images in arr_0 or an image folder (recursive, sorted by path); NAME=PATH names its row")
    score.add_argument("--profile", action="append", default=[], metavar="NAME",
                       help="evaluator profile (repeatable: each scores the same images; `cmbench profiles` lists them)")
    score.add_argument("--suite", help="instead of --profile: score as this suite scores (its features, metrics, "
                                       "conventions and reference); a file or bundled suite name")
    score.add_argument("--reference", action="append", default=[], metavar="[PROFILE=]FILE",
                       help="reference statistics file (with --suite: replaces the suite's); PROFILE=FILE gives one "
                            "profile its own when the profiles read different formats (repeatable)")
    score.add_argument("--metric", action="append", default=[], metavar="NAME", help="a metric beyond the profile's (repeatable)")
    score.add_argument("--nfe", type=non_negative_integer, default=0,
                       help="the NFE the images were made with, recorded in the rows (default 0: not stated)")
    score.add_argument("--limit", type=integer_at_least(2), help="score the first N images of each set")
    score.add_argument("--quantisation", choices=("round", "truncate"),
                       help="float images in an .npz (in [-1, 1]): how they become uint8")
    score.add_argument("--name", default="score", help="the suite name in the rows and report (default score)")
    score.add_argument("--out", type=Path, help="output folder (default reports/<name>)")
    score.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value of the scoring suite")
    score.add_argument("--device", choices=("auto", "cpu", "cuda"))
    score.add_argument("--recompute-changed", action="store_true", help="replace stored rows whose configuration differs")
    score.add_argument("--quiet", action="store_true", help="no progress bars")
    score.add_argument("--wait", action="store_true", help="wait for another process writing to the output folder")
    score.set_defaults(func=_score)

    comp = sub.add_parser("compare", help="compare result rows with a baseline: noise-aware verdicts, exit 1 on a regression",
                          description="Exit status: 0 nothing worse, 1 a metric got worse or is missing, null or non-finite "
                                      "on the new side, or its row failed (with --strict, also a row "
                                      "missing on one side), 2 unusable input (unreadable, no common rows, protocols or "
                                      "reference statistics differ).")
    comp.add_argument("new", help="run folder, results.jsonl or baseline file with the new rows")
    comp.add_argument("baseline", help="run folder, results.jsonl or baseline file to compare against")
    comp.add_argument("--threshold", action="append", default=[], metavar="METRIC=VALUE",
                      help="smallest change that counts, absolute (fid=0.5) or relative to the baseline (fid=2%%); "
                           "repeatable, one of each kind per metric (default: the suite's regression.thresholds, else 0)")
    comp.add_argument("--z", type=positive_number, help="standard errors a change must exceed (default: the suite's regression.z, else 3)")
    comp.add_argument("--metric", action="append", default=[], metavar="NAME",
                      help="compare only this scored column (fid, kid, is_mean, precision, recall, density, coverage, bpd); repeatable")
    comp.add_argument("--strict", action="store_true", help="a row present on one side only is a failure (exit 1)")
    comp.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="what to print (default table)")
    comp.add_argument("--json", type=Path, metavar="FILE", help="also write the comparison as JSON (cmbench-compare/1)")
    comp.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown table (for a pull-request comment)")
    comp.set_defaults(func=_compare)

    tune = sub.add_parser("tune", help="tune multistep time points greedily (the suite's tune jobs, or one given here)")
    tune.add_argument("suite", help="suite file or bundled suite name (models, extractor, reference, metrics)")
    tune.add_argument("--job", action="append", default=[], metavar="NAME", help="run this tune job of the suite (repeatable; default: all)")
    tune.add_argument("--model", help="tune this model of the suite (an ad-hoc job; needs --sampler and --max-nfe)")
    tune.add_argument("--sampler", help="a sampler with free time points: cm_multistep or ctm_gamma")
    tune.add_argument("--max-nfe", type=integer_at_least(2), help="find time points for NFE 2..MAX_NFE")
    tune.add_argument("--method", choices=("ternary", "golden", "grid"), help="line search (default ternary; grid is exhaustive)")
    tune.add_argument("--space", choices=("karras_index", "sigma"), help="Karras grid indices (default) or continuous σ")
    tune.add_argument("--karras-steps", type=integer_at_least(2), help="points of the Karras index grid (default 40)")
    tune.add_argument("--tol", type=positive_number, help="continuous space: stop at brackets this wide in ln σ (default 0.05)")
    tune.add_argument("--metric", help="objective: a scored column of the suite's metrics (default fid; is_mean, recall, ... are maximised)")
    tune.add_argument("--samples", type=integer_at_least(2), help="proxy sample count (default: the suite's num_samples)")
    tune.add_argument("--seed-start", type=non_negative_integer, help="first proxy seed (default: just past the suite's seeds)")
    tune.add_argument("--name", help="the ad-hoc job's name (default MODEL_SAMPLER)")
    tune.add_argument("--out", type=Path, help="output folder; schedules go to OUT/schedules/ (default as for run)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite value")
    tune.add_argument("--device", choices=("auto", "cpu", "cuda"))
    tune.add_argument("--recompute-changed", action="store_true", help="search again where the stored schedule's configuration differs")
    tune.add_argument("--quiet", action="store_true")
    tune.add_argument("--wait", action="store_true", help="wait for another process writing to the output folder")
    tune.set_defaults(func=_tune)

    report = sub.add_parser("report", help="re-render DIR/report.html from DIR/results.jsonl")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=_report)

    nll = sub.add_parser("nll", help="bits/dim of data under a model's probability-flow ODE (score-access families)")
    nll.add_argument("suite", help="suite file or bundled suite name that defines the model")
    nll.add_argument("--model", required=True, help="model name in the suite (EDM, CTM, PD teacher or gmm)")
    nll.add_argument("--data", required=True, help="an .npz with NHWC images in arr_0 (uint8, or float in [-1, 1] with --continuous), or toy:train / toy:test")
    nll.add_argument("--continuous", action="store_true", help="float data: no dequantisation, report nats/dim")
    nll.add_argument("--passes", type=positive_integer, default=5, help="dequantisation passes averaged per image (default 5, as score_sde)")
    nll.add_argument("--protocol", choices=("exact", "ctm_eval_bpd"), default="exact",
                     help="exact: cmbench's PF-ODE bits/dim (default); ctm_eval_bpd: CTM's eval_bpd.py estimator, "
                          "for comparing with CTM's published numbers (docs/likelihood.md)")
    nll.add_argument("--divergence", choices=("exact", "hutchinson"), help="exact protocol: default hutchinson")
    nll.add_argument("--rtol", type=positive_number, help="exact protocol: RK45 rtol, default 1e-5")
    nll.add_argument("--atol", type=positive_number, help="exact protocol: RK45 atol, default 1e-5")
    nll.add_argument("--batch-size", type=positive_integer, default=256)
    nll.add_argument("--limit", type=positive_integer, help="use only the first N images")
    nll.add_argument("--seed", type=non_negative_integer, default=0, help="seeds the dequantisation noise and the Hutchinson probes")
    nll.add_argument("--device", choices=("auto", "cpu", "cuda"))
    nll.add_argument("--out", type=Path, help="also write the JSON result here")
    nll.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    nll.add_argument("--quiet", action="store_true")
    nll.set_defaults(func=_nll)

    add_stats_parser(sub)
    _add_weights_parser(sub)
    profiles = sub.add_parser("profiles", help="list the evaluator profiles (each paper's evaluation conventions)")
    profiles.set_defaults(func=_profiles)

    zoo = sub.add_parser("zoo", help="the shipped model zoos").add_subparsers(dest="zoo_command", required=True)
    train = zoo.add_parser("train-toy", help="train the toy zoo (EDM, CD, CT, CTM, PD and the toy classifier's models) from scratch")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and manifest.json")
    train.add_argument("--seed", type=non_negative_integer, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace existing checkpoints in --out")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_zoo_train_toy)
    listing = zoo.add_parser("list", help="list a zoo's checkpoints, seeds and hashes")
    listing.add_argument("zoo", nargs="?", default="toy")
    listing.set_defaults(func=_zoo_list)
    _add_threads_option(parser)
    return parser


def _profiles(args: argparse.Namespace) -> int:
    from .profiles import describe_profiles

    print(describe_profiles())
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from .weights import fetch_inception_weights, find_inception_weights

    if args.dest is None:
        try:
            print(f"already present: {find_inception_weights()}")
            return 0
        except FileNotFoundError:
            pass
    print(fetch_inception_weights(args.dest, progress=not args.quiet))
    return 0


def _add_weights_parser(sub) -> None:
    weights = sub.add_parser("weights", help="network weights cmbench needs from outside (the TF Inception-v3)")
    group = weights.add_subparsers(dest="weights_command", required=True)
    fetch = group.add_parser("fetch", help="download the Inception-v3 weights file (torch-fidelity's), checking its sha256")
    fetch.add_argument("--dest", type=Path, help="folder to put it in (default: torch hub's checkpoints folder)")
    fetch.add_argument("--quiet", action="store_true")
    fetch.set_defaults(func=_weights_fetch)


def _threads_set(args: argparse.Namespace) -> list[str]:
    """``--threads`` of a suite command, as the ``--set`` override of the suite's ``threads``."""
    return [f"threads={args.threads}"] if args.threads is not None else []


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on every command (each leaf of the subcommand tree)."""
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subcommands:
        parser.add_argument("--threads", type=_threads_value, metavar="N|auto",
                            help="CPU threads for torch and BLAS (default: the suite's threads, else auto: "
                                 "the cores idle at the start, at least one)")
    for action in subcommands:
        for child in dict.fromkeys(action.choices.values()):
            _add_threads_option(child)


def _threads_value(text: str) -> int | str:
    from .threads import parse_threads

    try:
        return parse_threads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


SUITE_THREADS = ("_run", "_score", "_tune", "_nll")  # commands whose suite's threads key --threads overrides


def _threads_for(args: argparse.Namespace):
    """Commands without a suite run at ``--threads`` (else auto) for the whole command; the suite
    commands apply the suite's ``threads``, which ``--threads`` overrides."""
    from contextlib import nullcontext

    from .threads import choose_threads, process_threads

    if args.func.__name__ in SUITE_THREADS:
        return nullcontext()
    return process_threads(choose_threads(args.threads).count)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a regression or failed rows, 2 bad input or a
    failure cmbench explains, 3 an unexpected error (a bug: its traceback with ``--debug``),
    130 interrupted. Without ``--debug`` no traceback is printed."""
    from .threads import prefer_passive_waiting

    prefer_passive_waiting()  # before anything imports torch
    args = build_parser().parse_args(argv)
    with _threads_for(args):
        return _call(args)


def _call(args: argparse.Namespace) -> int:
    """The command's handler, its failures turned into one line and an exit status (see main)."""
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("cmbench: interrupted; every finished row is kept in the output folder's results.jsonl, and "
              "rerunning the same command resumes from there", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cmbench ... | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0
    except (ValueError, OSError, RuntimeError) as err:  # incl. config errors, missing files, failed downloads
        print(f"cmbench: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("cmbench: error: out of memory; lower num_samples, the reference's num_images or batch_size",
              file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, trace with --debug
        print(f"cmbench: internal error: {type(err).__name__}: {err} (this is a bug in cmbench; "
              "rerun with --debug for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
