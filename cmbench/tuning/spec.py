"""The ``tune:`` block of a suite: which model and sampler to tune, how, on which proxy samples.

    tune:
      cd:                        # the job's name; rows use it as ``schedule: tuned:cd``
        model: cd
        sampler: cm_multistep    # a sampler with free time points (cm_multistep, ctm_gamma)
        max_nfe: 3               # greedy: NFE 2, then 3, each starting from the earlier points
        method: robust           # robust (default) | ternary (the paper's) | golden | grid (exhaustive)
        refine: true             # joint refinement of each NFE's points (default: with robust only)
        space: karras_index      # karras_index (of karras_steps points) | sigma (continuous)
        metric: fid              # a scored column, {column: weight, ...} or [column, column, ...]
        num_samples: 500         # proxy sample count (default: the suite's num_samples)
        seed_start: 100000       # default: just past the suite's own seeds, so they never overlap
        max_samples: 1000        # ties are scored on up to this many proxy seeds (default 2 × num_samples)
        screen_samples: 62       # the robust screen's sample count (default num_samples / 8, at least 50)
        screen_points: 20        # robust: candidates per gap in the screen
        resamples: 20            # paired bootstrap replicates per evaluation (0: no noise estimate)
        z: 1.0                   # candidates closer than z paired standard errors are tied
        budget: {evaluations: 60, seconds: 600}   # optional caps (evaluations: proxy-sample equivalents)
        validation: {num_samples: 2000, seed_start: 300000}   # or false; default: the suite's
                                 # num_samples, from just past the proxy seeds
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..metrics import DIRECTIONS, METRICS
from ..models import family_maps
from ..samplers import SAMPLERS
from ..validate import Checker
from .greedy import METHODS, SPACES
from .objective import Objective, parse_objective
from .robust import Ladder

TUNE_REQUIRED = ("model", "sampler", "max_nfe")
TUNE_OPTIONAL = ("options", "method", "refine", "space", "karras_steps", "tol", "metric", "num_samples", "seed_start",
                 "max_samples", "screen_samples", "screen_points", "resamples", "z", "budget", "validation")
SCHEDULE_PREFIX = "tuned:"
SCHEDULE_OPTIONS = ("time_points", "time_point_units")  # what a tuned schedule provides
DEFAULT_METHOD = "robust"
MIN_SCREEN_SAMPLES = 50


@dataclass(frozen=True)
class TuneJob:
    name: str
    model: str
    sampler: str
    max_nfe: int
    objective: Objective
    metric_names: tuple[str, ...]  # the registry metrics that fill the objective's columns
    num_samples: int
    seed_start: int
    options: dict[str, Any] = field(default_factory=dict)
    method: str = DEFAULT_METHOD
    refine: bool = True
    space: str = "karras_index"
    karras_steps: int = 40
    tol: float = 0.05
    max_samples: int = 0
    screen_samples: int = 0
    screen_points: int = 20
    resamples: int = 20
    z: float = 1.0
    budget_evaluations: float | None = None
    budget_seconds: float | None = None
    validation_samples: int = 0  # 0: no validation
    validation_seed_start: int = 0

    @property
    def ladder(self) -> Ladder:
        """The sample counts the search scores candidates on (a line-search method: the proxy only)."""
        if self.method != "robust":
            return Ladder((self.num_samples,))
        return Ladder.build(self.num_samples, screen=self.screen_samples, max_samples=self.max_samples)

    @property
    def proxy_seeds(self) -> range:
        """Every seed the search may use (ties are scored on up to ``max_samples``)."""
        return range(self.seed_start, self.seed_start + (self.ladder.tie_break or self.ladder.race)[-1])


def tunable_samplers() -> list[str]:
    return [name for name, s in SAMPLERS.items() if "time_points" in s.schedule_options]


def parse_tune_jobs(c: Checker, raw: Any, models: dict, suite_metrics: tuple[str, ...],
                    num_samples: int, seed_start: int) -> dict[str, TuneJob]:
    if raw is None:
        return {}
    raw = c.mapping(raw, "tune")
    return {str(name): _parse_job(c, c.name(str(name), f"tune.{name}"), spec, models, suite_metrics, num_samples,
                                  seed_start)
            for name, spec in raw.items()}


def _parse_job(c: Checker, name: str, raw: Any, models: dict, suite_metrics, num_samples: int, seed_start: int) -> TuneJob:
    path = f"tune.{name}"
    raw = c.mapping(raw, path)
    c.keys(raw, path, TUNE_REQUIRED, TUNE_OPTIONAL)
    model = c.choice(raw["model"], f"{path}.model", models)
    sampler = c.choice(raw["sampler"], f"{path}.sampler", tunable_samplers())
    spec = models[model]
    if SAMPLERS[sampler].requires not in family_maps(spec.family, spec.options):
        raise c.fail(f"{path}.sampler", f"sampler {sampler!r} needs the {SAMPLERS[sampler].requires!r} map, "
                                        f"which {spec.family} models lack")
    options = dict(c.mapping(raw.get("options", {}) or {}, f"{path}.options"))
    fixed = [k for k in SCHEDULE_OPTIONS if k in options]
    if fixed:
        raise c.fail(f"{path}.options", f"{', '.join(fixed)} are what the search finds; leave them out")
    try:
        SAMPLERS[sampler].with_defaults(options)
    except ValueError as err:
        raise c.fail(f"{path}.options", str(err)) from None
    columns = [col for m in suite_metrics for col in METRICS[m].columns if col in DIRECTIONS]
    objective = _parse_objective(c, raw.get("metric", "fid"), f"{path}.metric", columns)
    num = c.integer(raw.get("num_samples", num_samples), f"{path}.num_samples", minimum=2)
    start = c.integer(raw.get("seed_start", seed_start + num_samples), f"{path}.seed_start", minimum=0)
    max_samples = c.integer(raw.get("max_samples", 2 * num), f"{path}.max_samples", minimum=num)
    method = c.choice(raw.get("method", DEFAULT_METHOD), f"{path}.method", METHODS)
    budget = c.mapping(raw.get("budget", {}) or {}, f"{path}.budget")
    c.keys(budget, f"{path}.budget", (), ("evaluations", "seconds"))
    job = TuneJob(
        name=name, model=model, sampler=sampler,
        max_nfe=c.integer(raw["max_nfe"], f"{path}.max_nfe", minimum=2),
        objective=objective,
        metric_names=tuple(dict.fromkeys(next(m for m in suite_metrics if col in METRICS[m].columns)
                                         for col in objective.columns)),
        num_samples=num, seed_start=start, options=options,
        method=method,
        refine=c.boolean(raw.get("refine", method == "robust"), f"{path}.refine"),
        space=c.choice(raw.get("space", "karras_index"), f"{path}.space", SPACES),
        karras_steps=c.integer(raw.get("karras_steps", 40), f"{path}.karras_steps", minimum=3),
        tol=c.number(raw.get("tol", 0.05), f"{path}.tol", minimum=0, exclusive=True),
        max_samples=max_samples,
        screen_samples=c.integer(raw.get("screen_samples", min(num, max(num // 8, MIN_SCREEN_SAMPLES))),
                                 f"{path}.screen_samples", minimum=2),
        screen_points=c.integer(raw.get("screen_points", 20), f"{path}.screen_points", minimum=2),
        resamples=_resamples(c, raw.get("resamples", 20), f"{path}.resamples"),
        z=c.number(raw.get("z", 1.0), f"{path}.z", minimum=0),
        budget_evaluations=_optional_positive(c, budget.get("evaluations"), f"{path}.budget.evaluations"),
        budget_seconds=_optional_positive(c, budget.get("seconds"), f"{path}.budget.seconds"),
    )
    if job.space == "karras_index" and job.karras_steps < job.max_nfe + 1:
        raise c.fail(f"{path}.karras_steps", f"{job.karras_steps} grid points leave no room for NFE {job.max_nfe}; "
                                             f"need at least {job.max_nfe + 1}")
    if job.screen_samples > job.num_samples:
        raise c.fail(f"{path}.screen_samples", f"{job.screen_samples} is more than the proxy's {job.num_samples} samples")
    evaluation = range(seed_start, seed_start + num_samples)
    _check_disjoint(c, f"{path}.seed_start", "proxy", job.proxy_seeds, "the suite's evaluation", evaluation)
    return _with_validation(c, job, raw.get("validation", {}), path, num_samples, evaluation)


def _parse_objective(c: Checker, raw: Any, path: str, columns: list[str]) -> Objective:
    try:
        objective = parse_objective(raw)
    except ValueError as err:
        raise c.fail(path, str(err)) from None
    unknown = [col for col in objective.columns if col not in columns]
    if unknown:
        raise c.fail(path, f"{', '.join(unknown)} is not a scored column of this suite's metrics; accepted: "
                           f"{', '.join(columns)}")
    return objective


def _resamples(c: Checker, raw: Any, path: str) -> int:
    value = c.integer(raw, path, minimum=0)
    if value == 1:
        raise c.fail(path, "1 replicate has no spread; give 0 (no noise estimate) or at least 2")
    return value


def _optional_positive(c: Checker, raw: Any, path: str) -> float | None:
    return None if raw is None else c.number(raw, path, minimum=0, exclusive=True)


def _with_validation(c: Checker, job: TuneJob, raw: Any, path: str, suite_samples: int, evaluation: range) -> TuneJob:
    """``job`` with its held-out validation seeds (none for ``validation: false``)."""
    if raw is False:
        return job
    raw = c.mapping(raw or {}, f"{path}.validation")
    c.keys(raw, f"{path}.validation", (), ("num_samples", "seed_start"))
    samples = c.integer(raw.get("num_samples", suite_samples), f"{path}.validation.num_samples", minimum=2)
    start = c.integer(raw.get("seed_start", job.proxy_seeds.stop), f"{path}.validation.seed_start", minimum=0)
    seeds = range(start, start + samples)
    _check_disjoint(c, f"{path}.validation", "validation", seeds, "proxy", job.proxy_seeds)
    _check_disjoint(c, f"{path}.validation", "validation", seeds, "the suite's evaluation", evaluation)
    return dataclasses.replace(job, validation_samples=samples, validation_seed_start=start)


def _check_disjoint(c: Checker, path: str, what: str, seeds: range, other: str, others: range) -> None:
    if seeds.start < others.stop and others.start < seeds.stop:
        raise c.fail(path, f"the {what} seeds {seeds.start}..{seeds.stop - 1} overlap {other} seeds "
                           f"{others.start}..{others.stop - 1}; a schedule chosen or judged on the samples a row "
                           "reports overfits its metric, so keep the ranges apart")
