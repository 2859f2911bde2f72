"""How close each time-point tuning method gets to the exhaustive optimum, on held-out seeds.

For each toy model of ``suites/toy_tune.yaml`` (CD, CT, CTM with ctm_gamma γ = 0) and NFE 2 and 3,
every tuning method runs through the real code path (one tune job per model and method added to
the suite's ``tune:`` block, run by :func:`cmbench.runner.tune_suite` into a temporary folder):

- ``robust``: the default (screen, race, polish, settle; joint refinement at NFE ≥ 3),
- ``robust-norefine``: the same with ``refine: false``,
- ``ternary`` (the paper's), ``golden``, ``grid``: greedy line searches, no refinement.

Beside them, the **exhaustive optimum**: every schedule of the 40-point Karras index grid scored
on the same proxy samples (FID of ``--samples`` samples from the jobs' proxy seeds 2000..) by a
:class:`cmbench.tuning.candidates.CandidateScorer` built as ``run_tune_job`` builds it (no
bootstrap). NFE 2 has 38 schedules (0, i, 39); NFE 3 has C(38, 2) = 703 (0, i, j, 39). The NFE-3
scan is counted alone (703 evaluations; it does not need the NFE-2 scan), whereas a method's
evaluations, cost and seconds are cumulated over NFE 1..k as its greedy search spends them.

Every chosen schedule and the optimum are then scored again on held-out **validation** seeds
(``--validation-samples`` from seed 10 000 000, disjoint from the proxy, tie-break and evaluation
seeds) by one scorer with 50 paired bootstrap resamples, so all are paired (same seeds, same
resample index sets). Columns:

- ``evals`` / ``cost``: the schedule document's per-NFE ``evaluations`` (evaluations run, at any
  sample count) and ``cost`` (samples drawn / proxy count), cumulated over NFE 1..k;
- ``sec``: seconds of those evaluations (sampling and scoring, from the trace);
- ``proxy``: the schedule's FID on the proxy samples (from the exhaustive scan) and ``rank``, its
  place among all schedules of that NFE on the proxy (1 = the exhaustive optimum);
- ``val ± se``: FID on the validation seeds and its bootstrap standard error;
- ``gap``: method − optimum on the validation seeds; ``/se_opt``: in units of the optimum's
  validation se; ``/se_pair``: in units of the paired standard error of the difference;
- ``≤1SE``: the verdict, gap ≤ 1 × the optimum's validation se.

Nothing is written outside a temporary folder, except the ``--out`` JSON of all numbers.
A full run (3 models, 5 methods, NFE 2 and 3) takes about 10 minutes on 2 idle CPU cores (40 under
a competing test run), most of it the exhaustive NFE-3 scans (≈ 703 × 0.1 s per model). The
seconds columns are wall time, so they move with the machine's load; ``cost`` does not. On the toy
models a candidate's fixed overhead (FID and its bootstrap) is most of its time, so a robust
screen on few samples costs little in ``cost`` but nearly a full evaluation in seconds.

    OMP_NUM_THREADS=2 python benchmarks/tuning_quality.py
    python benchmarks/tuning_quality.py --models cd --methods robust ternary --out /tmp/tq.json
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside the temporary folder (no __pycache__ either)

import argparse  # noqa: E402
import copy  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from cmbench.cli_commands import resolve_suite  # noqa: E402
from cmbench.run_context import RunContext  # noqa: E402
from cmbench.runner import tune_suite  # noqa: E402
from cmbench.samplers import get_sampler  # noqa: E402
from cmbench.suite import parse_suite  # noqa: E402
from cmbench.threads import choose_threads, using_threads  # noqa: E402
from cmbench.tuning.candidates import CandidateScorer  # noqa: E402
from cmbench.tuning.greedy import KarrasIndexSpace  # noqa: E402
from cmbench.tuning.jobs import tuned_options  # noqa: E402
from cmbench.tuning.scores import paired_standard_error  # noqa: E402
from cmbench.yaml_input import load_yaml  # noqa: E402

SUITE = "toy_tune"
MODELS = ("cd", "ct", "ctm")
METHODS = {  # name -> the tune job's keys
    "robust": {"method": "robust"},
    "robust-norefine": {"method": "robust", "refine": False},
    "ternary": {"method": "ternary"},
    "golden": {"method": "golden"},
    "grid": {"method": "grid"},
}
NFES = (2, 3)
VALIDATION_SEED_START = 10_000_000
VALIDATION_RESAMPLES = 50
EXHAUSTIVE = "exhaustive"


def job_name(model: str, method: str) -> str:
    return f"{model}_{method.replace('-', '_')}"


def build_suite(models: list[str], methods: list[str], samples: int):
    """toy_tune with one tune job per (model, method) and no validation, and its rows without tuned schedules."""
    path = resolve_suite(SUITE)
    raw = load_yaml(path.read_text(encoding="utf-8"))
    base = raw["tune"]
    raw["tune"] = {job_name(m, method): {**copy.deepcopy(base[m]), **METHODS[method], "max_nfe": max(NFES),
                                         "num_samples": samples, "validation": False}
                   for m in models for method in methods}
    raw["runs"] = [row for row in raw["runs"] if "schedule" not in row]  # no row names a tune job
    return parse_suite(raw, str(path), path.parent)


def run_method(suite, name: str, out: Path) -> tuple[dict | None, str | None, float]:
    """The tune job's schedule document (or the error it raised) and the call's wall seconds."""
    started = time.perf_counter()
    try:
        _, documents = tune_suite(suite, [name], out, device="cpu", progress=False)
        return documents[name], None, time.perf_counter() - started
    except Exception as err:  # noqa: BLE001 - a crashing method is a result to report
        return None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}", time.perf_counter() - started


def scorer_for(ctx: RunContext, job, seed_start: int, resamples: int, what: str) -> CandidateScorer:
    """A CandidateScorer as ``run_tune_job`` builds it (no evaluation log)."""
    model = ctx.model(job.model)
    return CandidateScorer(model=model, sampler=get_sampler(job.sampler),
                           run_options=lambda nfe, s: tuned_options(job.options, nfe, s),
                           objective=job.objective, metric_names=job.metric_names, suite=ctx.suite,
                           extractor=ctx.extractor, reference=ctx.reference, device=ctx.device,
                           batch_size=ctx.suite.batch_size, seed_start=seed_start, resamples=resamples, log=None,
                           progress=False,
                           desc=f"{what} {job.model}")


def index_space(ctx: RunContext, job) -> KarrasIndexSpace:
    model = ctx.model(job.model)
    options = get_sampler(job.sampler).with_defaults(job.options)
    return KarrasIndexSpace(job.karras_steps, model.sigma_min, model.sigma_max, options["rho"])


def all_schedules(steps: int, nfe: int) -> list[tuple[int, ...]]:
    """Every index tuple of an ``nfe``-step schedule on a ``steps``-point grid (both ends fixed)."""
    return [(0, *inner, steps - 1) for inner in itertools.combinations(range(1, steps - 1), nfe - 1)]


def exhaustive_scan(scorer: CandidateScorer, space: KarrasIndexSpace, objective, nfe: int, samples: int) -> dict:
    """Proxy value of every schedule of ``nfe`` steps, the best, and what the scan took."""
    values, started = {}, time.perf_counter()
    for positions in all_schedules(space.steps, nfe):
        score, _ = scorer(tuple(space.sigmas(positions)), samples)
        values[positions] = objective.value(score.losses)
        scorer.features.clear()  # never scored again: keep no features
    seconds = time.perf_counter() - started
    best = min(values, key=values.get)
    return {"values": values, "best": best, "evaluations": len(values), "cost": float(len(values)),
            "seconds": seconds}


def proxy_rank(values: dict, positions: tuple) -> int | None:
    if positions not in values:
        return None
    return 1 + sum(1 for v in values.values() if v < values[positions])


def per_nfe(document: dict, nfe: int) -> dict:
    """A method's schedule for ``nfe`` and its evaluations, cost and seconds cumulated over NFE 1..nfe."""
    schedules = {s["nfe"]: s for s in document["schedules"]}
    if nfe not in schedules:
        return {"missing": f"no NFE-{nfe} schedule in the document (budget exhausted?)"}
    s = schedules[nfe]
    return {"indices": tuple(s["indices"]), "sigmas": s["sigmas"], "proxy_value_reported": s["value"],
            "proxy_se_reported": s["se"],
            "evaluations": sum(schedules[k]["evaluations"] for k in schedules if k <= nfe),
            "cost": sum(schedules[k]["cost"] for k in schedules if k <= nfe),
            "seconds": sum(e["seconds"] for e in document["trace"] if e["nfe"] <= nfe)}


def evaluate_model(suite, model: str, methods: list[str], args, tmp: Path) -> list[dict]:
    rows: list[dict] = []
    documents: dict[str, tuple] = {}
    for method in methods:
        name = job_name(model, method)
        log(f"{model}: tuning with {method} ...")
        document, error, wall = run_method(suite, name, tmp / "tune" / name)
        documents[method] = (document, error, wall)
        if error:
            log(f"{model}: {method} FAILED: {error.splitlines()[0]}")
        else:
            log(f"{model}: {method} done in {wall:.1f} s ({document['evaluations']} evaluations, "
                f"cost {document['cost']['evaluations']})")
    job = suite.tune[job_name(model, methods[0])]
    ctx = RunContext(suite, tmp / "exhaustive" / model, "cpu")
    space = index_space(ctx, job)
    proxy = scorer_for(ctx, job, job.seed_start, 0, "exhaustive")
    validation = scorer_for(ctx, job, VALIDATION_SEED_START, VALIDATION_RESAMPLES, "validation")
    scores: dict[tuple, object] = {}

    def validate(positions: tuple):
        if positions not in scores:
            scores[positions], _ = validation(tuple(space.sigmas(positions)), args.validation_samples)
        return scores[positions]

    for nfe in NFES:
        log(f"{model}: exhaustive NFE-{nfe} scan ({len(all_schedules(space.steps, nfe))} schedules) ...")
        scan = exhaustive_scan(proxy, space, job.objective, nfe, args.samples)
        log(f"{model}: NFE {nfe} optimum {scan['best']} FID {scan['values'][scan['best']]:.3f} "
            f"({scan['seconds']:.1f} s)")
        best = scan["best"]
        opt_score = validate(best)
        opt_value, opt_se = job.objective.value(opt_score.losses), opt_score.standard_error()
        rows.append({"model": model, "nfe": nfe, "method": EXHAUSTIVE, "indices": list(best),
                     "evaluations": scan["evaluations"], "cost": scan["cost"], "seconds": scan["seconds"],
                     "proxy_value": scan["values"][best], "proxy_rank": 1,
                     "validation_value": opt_value, "validation_se": opt_se, "gap": 0.0, "gap_in_optimum_se": 0.0,
                     "paired_se": 0.0, "gap_in_paired_se": None, "within_1se": True,
                     "proxy_landscape": {",".join(map(str, p)): v for p, v in scan["values"].items()}})
        for method in methods:
            document, error, wall = documents[method]
            row = {"model": model, "nfe": nfe, "method": method, "job_wall_seconds": wall}
            rows.append(row)
            if error:
                row["error"] = error
                continue
            row.update(per_nfe(document, nfe))
            if "missing" in row:
                continue
            positions = row["indices"]
            row["indices"] = list(positions)
            sigmas_match = list(space.sigmas(positions)) == list(row["sigmas"])
            score = validate(positions)
            value = job.objective.value(score.losses)
            gap = value - opt_value
            paired = paired_standard_error(score, opt_score)
            row.update({
                "sigmas_match_index_space": sigmas_match,
                "proxy_value": scan["values"].get(positions), "proxy_rank": proxy_rank(scan["values"], positions),
                "proxy_value_difference": (None if positions not in scan["values"]
                                           else row["proxy_value_reported"] - scan["values"][positions]),
                "validation_value": value, "validation_se": score.standard_error(), "gap": gap,
                "gap_in_optimum_se": gap / opt_se if opt_se > 0 else None,
                "paired_se": paired, "gap_in_paired_se": gap / paired if paired > 0 else None,
                "within_1se": gap <= opt_se,
                "document_cost": document["cost"], "document_seconds": document["seconds"],
            })
            if not sigmas_match:
                log(f"{model}: {method} NFE {nfe}: the document's σ differ from the index space's for {positions}")
    return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(x, spec: str, none: str = "—") -> str:
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def print_table(rows: list[dict]) -> None:
    header = ["model", "NFE", "method", "indices", "evals", "cost", "sec", "proxy", "rank", "val ± se", "gap",
              "/se_opt", "/se_pair", "≤1SE"]
    lines = []
    for r in rows:
        if "error" in r or "missing" in r:
            reason = "CRASHED: " + r["error"].splitlines()[0] if "error" in r else r["missing"]
            lines.append([r["model"], str(r["nfe"]), r["method"], reason])
            continue
        lines.append([
            r["model"], str(r["nfe"]), r["method"], ",".join(map(str, r["indices"])), str(r["evaluations"]),
            fmt(r["cost"], ".2f"), fmt(r["seconds"], ".1f"), fmt(r["proxy_value"], ".3f"), fmt(r["proxy_rank"], "d"),
            f"{r['validation_value']:.3f} ± {r['validation_se']:.3f}", fmt(r["gap"], "+.3f"),
            fmt(r["gap_in_optimum_se"], "+.2f"), fmt(r["gap_in_paired_se"], "+.2f"),
            "yes" if r["within_1se"] else "NO",
        ])
    full = [line for line in lines if len(line) == len(header)]
    widths = [max([len(h), *(len(line[i]) for line in full)]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) if i < 4 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    previous = None
    for line in lines:
        if previous is not None and (line[0], line[1]) != previous:
            print()
        previous = (line[0], line[1])
        print("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="proxy sample count of the tune jobs (default 500)")
    parser.add_argument("--validation-samples", type=int, default=2000,
                        help=f"held-out samples from seed {VALIDATION_SEED_START} (default 2000)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, help="write every number (and each NFE's proxy landscape) here as JSON")
    parser.add_argument("--verbose", action="store_true", help="show the tuner's log (every evaluation)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    suite = build_suite(args.models, args.methods, args.samples)
    proxy_stop = max(job.proxy_seeds.stop for job in suite.tune.values())
    if VALIDATION_SEED_START < proxy_stop:
        raise SystemExit(f"validation seeds from {VALIDATION_SEED_START} overlap the proxy seeds (up to {proxy_stop})")
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tuning_quality_") as tmp, \
            using_threads(choose_threads(suite.threads).count):
        for model in args.models:
            rows += evaluate_model(suite, model, args.methods, args, Path(tmp))
    total = time.perf_counter() - started
    job = next(iter(suite.tune.values()))
    print(f"Tuning methods vs the exhaustive optimum: toy_tune, FID on {args.samples} proxy samples (seeds "
          f"{job.seed_start}..), validated on {args.validation_samples} samples from seed {VALIDATION_SEED_START} "
          f"({VALIDATION_RESAMPLES} paired bootstrap resamples); {job.karras_steps}-point Karras index grid.")
    print("evals/cost/sec: cumulated over NFE 1..k for the methods; the exhaustive NFE-3 scan is counted alone "
          "(703 schedules).")
    print()
    print_table(rows)
    print()
    print(f"total {total:.0f} s")
    mismatched = [r for r in rows if r.get("proxy_value_difference") not in (None, 0.0)]
    if mismatched:
        print("proxy values the tuner recorded differ from the exhaustive scan's for the same schedule and seeds:")
        for r in mismatched:
            print(f"  {r['model']} NFE {r['nfe']} {r['method']} {r['indices']}: recorded "
                  f"{r['proxy_value_reported']:.6f}, scan {r['proxy_value']:.6f} ({r['proxy_value_difference']:+.2e})")
    if args.out:
        meta = {"suite": SUITE, "samples": args.samples, "validation_samples": args.validation_samples,
                "validation_seed_start": VALIDATION_SEED_START, "validation_resamples": VALIDATION_RESAMPLES,
                "proxy_seed_start": job.seed_start, "karras_steps": job.karras_steps, "seconds": total}
        args.out.write_text(json.dumps({"settings": meta, "rows": rows}, indent=1, default=list) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
