"""The command line's arguments: one parser for every command, built from light modules only, so
``cmbench --help``, ``cmbench run --help`` and ``cmbench --version`` never load torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from . import cli_commands as commands
from .choices import DEVICES, QUANTISATIONS, TUNE_METHODS, WEIGHTS_NAMES
from .cli_args import (add_progress_options, integer_at_least, non_negative_integer, positive_integer,
                       positive_number, shard_part)
from .cli_commands import DEFAULT_SUITE
from .cli_stats import add_stats_parser


def validation_samples(text: str) -> int:
    """An argparse type: 0 (no validation) or an integer ≥ 2."""
    count = non_negative_integer(text)
    if count == 1:
        raise argparse.ArgumentTypeError("1 sample has no spread; give 0 (no validation) or at least 2")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; building it and printing its help imports nothing heavy."""
    parser = argparse.ArgumentParser(prog="cmbench", description="Benchmark consistency-family generative models.")
    parser.add_argument("--version", action="version", version=f"cmbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite: sample, score, write results and the HTML report")
    run.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help=f"suite file or bundled suite name (default: {DEFAULT_SUITE})")
    run.add_argument("--out", type=Path, help="output folder (default: the suite's output_dir, else reports/<suite name>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a suite value, e.g. --set num_samples=500 --set runs.0.nfe=[1,2]")
    run.add_argument("--device", choices=DEVICES, help="override the suite's device")
    run.add_argument("--recompute-changed", action="store_true",
                     help="recompute rows whose stored configuration differs from the suite's (default: error)")
    add_progress_options(run)
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
    shards = run.add_mutually_exclusive_group()
    shards.add_argument("--shard", metavar="I/N", type=shard_part,
                        help="make only part I of N of every row's samples and store their features under OUT/shards/ "
                             "(array jobs; shard jobs may share the folder); scores nothing")
    shards.add_argument("--merge", action="store_true",
                        help="score the rows whose shards are all stored, sampling nothing; exit 2 naming rows still "
                             "missing shards")
    run.set_defaults(func=commands.run_command)

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
    score.add_argument("--quantisation", choices=QUANTISATIONS,
                       help="float images in an .npz (in [-1, 1]): how they become uint8")
    score.add_argument("--name", default="score", help="the suite name in the rows and report (default score)")
    score.add_argument("--out", type=Path, help="output folder (default reports/<name>)")
    score.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value of the scoring suite")
    score.add_argument("--device", choices=DEVICES)
    score.add_argument("--recompute-changed", action="store_true", help="replace stored rows whose configuration differs")
    add_progress_options(score)
    score.add_argument("--wait", action="store_true", help="wait for another process writing to the output folder")
    score.set_defaults(func=commands.score_command)

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
    comp.set_defaults(func=commands.compare_command)

    tune = sub.add_parser("tune", help="tune multistep time points greedily (the suite's tune jobs, or one given here)")
    tune.add_argument("suite", help="suite file or bundled suite name (models, extractor, reference, metrics)")
    tune.add_argument("--job", action="append", default=[], metavar="NAME", help="run this tune job of the suite (repeatable; default: all)")
    tune.add_argument("--model", help="tune this model of the suite (an ad-hoc job; needs --sampler and --max-nfe)")
    tune.add_argument("--sampler", help="a sampler with free time points: cm_multistep or ctm_gamma")
    tune.add_argument("--max-nfe", type=integer_at_least(2), help="find time points for NFE 2..MAX_NFE")
    tune.add_argument("--method", choices=TUNE_METHODS, help="robust (default: screen, race, polish, settle ties on more samples), ternary (the paper's), golden, grid (exhaustive)")
    tune.add_argument("--space", choices=("karras_index", "sigma"), help="Karras grid indices (default) or continuous σ")
    tune.add_argument("--karras-steps", type=integer_at_least(2), help="points of the Karras index grid (default 40)")
    tune.add_argument("--tol", type=positive_number, help="continuous space: stop at brackets this wide in ln σ (default 0.05)")
    tune.add_argument("--metric", help="objective: a scored column of the suite's metrics (default fid; is_mean, recall, ... are maximised)")
    tune.add_argument("--samples", type=integer_at_least(2), help="proxy sample count (default: the suite's num_samples)")
    tune.add_argument("--seed-start", type=non_negative_integer, help="first proxy seed (default: just past the suite's seeds)")
    tune.add_argument("--no-refine", dest="refine", action="store_const", const=False, help="no joint refinement of each NFE's points")
    tune.add_argument("--budget-evaluations", type=positive_number, metavar="N", help="cap the search at N evaluations (proxy-sample equivalents)")
    tune.add_argument("--budget-seconds", type=positive_number, metavar="S", help="cap the search at S seconds of sampling and scoring")
    tune.add_argument("--validation-samples", type=validation_samples, metavar="N", help="held-out samples checking each schedule against the default (0: none)")
    tune.add_argument("--name", help="the ad-hoc job's name (default MODEL_SAMPLER)")
    tune.add_argument("--out", type=Path, help="output folder; schedules go to OUT/schedules/ (default as for run)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite value")
    tune.add_argument("--device", choices=DEVICES)
    tune.add_argument("--recompute-changed", action="store_true", help="search again where the stored schedule's configuration differs")
    add_progress_options(tune)
    tune.add_argument("--wait", action="store_true", help="wait for another process writing to the output folder")
    tune.set_defaults(func=commands.tune_command)

    report = sub.add_parser("report", help="re-render DIR/report.html from DIR/results.jsonl")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=commands.report_command)

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
    nll.add_argument("--device", choices=DEVICES)
    nll.add_argument("--out", type=Path, help="also write the JSON result here")
    nll.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_progress_options(nll)
    nll.set_defaults(func=commands.nll_command)

    add_stats_parser(sub)
    _add_weights_parser(sub)
    profiles = sub.add_parser("profiles", help="list the evaluator profiles (each paper's evaluation conventions)")
    profiles.set_defaults(func=commands.profiles_command)

    zoo = sub.add_parser("zoo", help="the shipped model zoos").add_subparsers(dest="zoo_command", required=True)
    train = zoo.add_parser("train-toy", help="train the toy zoo (EDM, CD, CT, CTM, PD and the toy classifier's models) from scratch")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and manifest.json")
    train.add_argument("--seed", type=non_negative_integer, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace existing checkpoints in --out")
    add_progress_options(train)
    train.set_defaults(func=commands.zoo_train_toy_command)
    listing = zoo.add_parser("list", help="list a zoo's checkpoints, seeds and hashes")
    listing.add_argument("zoo", nargs="?", default="toy")
    listing.set_defaults(func=commands.zoo_list_command)
    _add_threads_option(parser)
    return parser


def _add_weights_parser(sub) -> None:
    weights = sub.add_parser("weights", help="network weights cmbench needs from outside (Inception-v3, DINOv2, CLIP)")
    group = weights.add_subparsers(dest="weights_command", required=True)
    fetch = group.add_parser("fetch", help="download a feature network's weights file, checking its sha256 where one is published")
    fetch.add_argument("name", nargs="?", default="inception", choices=WEIGHTS_NAMES,
                       help="which file: inception (torch-fidelity's TF Inception-v3; the default), dinov2-vitl14 "
                            "(FD_DINOv2), clip-vitl14-336 (CMMD)")
    fetch.add_argument("--dest", type=Path, help="folder to put it in (default: torch hub's checkpoints folder)")
    add_progress_options(fetch)
    fetch.set_defaults(func=commands.weights_fetch_command)


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
