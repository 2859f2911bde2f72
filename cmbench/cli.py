"""The command line: a thin layer over :mod:`cmbench.runner` and :mod:`cmbench.report`."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

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
    from .runner import run_suite
    from .suite import load_suite

    suite = load_suite(resolve_suite(args.suite), args.set)
    report = run_suite(
        suite, args.out, device=args.device, recompute_changed=args.recompute_changed, progress=not args.quiet
    )
    print(f"results: {report.parent / 'results.jsonl'}\nreport:  {report}")
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
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="re-render DIR/report.html from DIR/results.jsonl")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=_report)

    zoo = sub.add_parser("zoo", help="the shipped model zoos").add_subparsers(dest="zoo_command", required=True)
    train = zoo.add_parser("train-toy", help="train the toy zoo (EDM, CD, CT, CTM, PD and the toy classifier's models) from scratch")
    train.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and manifest.json")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace existing checkpoints in --out")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=_zoo_train_toy)
    listing = zoo.add_parser("list", help="list a zoo's checkpoints, seeds and hashes")
    listing.add_argument("zoo", nargs="?", default="toy")
    listing.set_defaults(func=_zoo_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"cmbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
