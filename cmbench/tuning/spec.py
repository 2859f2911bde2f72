"""The ``tune:`` block of a suite: which model and sampler to tune, how, on which proxy samples.

    tune:
      cd:                        # the job's name; rows use it as ``schedule: tuned:cd``
        model: cd
        sampler: cm_multistep    # a sampler with free time points (cm_multistep, ctm_gamma)
        max_nfe: 3               # greedy: NFE 2, then 3, each keeping the earlier points
        method: ternary          # ternary | golden | grid (exhaustive)
        space: karras_index      # karras_index (of karras_steps points) | sigma (continuous)
        metric: fid              # a scored column of the suite's metrics (fid, is_mean, recall, ...)
        num_samples: 500         # proxy sample count (default: the suite's num_samples)
        seed_start: 100000       # default: just past the suite's own seeds, so they never overlap
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..metrics import DIRECTIONS, METRICS
from ..models import family_maps
from ..samplers import SAMPLERS
from ..validate import Checker
from .greedy import SPACES
from .search import METHODS

TUNE_REQUIRED = ("model", "sampler", "max_nfe")
TUNE_OPTIONAL = ("options", "method", "space", "karras_steps", "tol", "metric", "num_samples", "seed_start")
SCHEDULE_PREFIX = "tuned:"
SCHEDULE_OPTIONS = ("time_points", "time_point_units")  # what a tuned schedule provides


@dataclass(frozen=True)
class TuneJob:
    name: str
    model: str
    sampler: str
    max_nfe: int
    metric: str
    metric_name: str  # the registry metric that fills the ``metric`` column
    num_samples: int
    seed_start: int
    options: dict[str, Any] = field(default_factory=dict)
    method: str = "ternary"
    space: str = "karras_index"
    karras_steps: int = 40
    tol: float = 0.05

    @property
    def maximise(self) -> bool:
        return DIRECTIONS[self.metric] == "higher"


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
    metric = c.choice(raw.get("metric", "fid"), f"{path}.metric", columns)
    job = TuneJob(
        name=name, model=model, sampler=sampler,
        max_nfe=c.integer(raw["max_nfe"], f"{path}.max_nfe", minimum=2),
        metric=metric, metric_name=next(m for m in suite_metrics if metric in METRICS[m].columns),
        num_samples=c.integer(raw.get("num_samples", num_samples), f"{path}.num_samples", minimum=2),
        seed_start=c.integer(raw.get("seed_start", seed_start + num_samples), f"{path}.seed_start", minimum=0),
        options=options,
        method=c.choice(raw.get("method", "ternary"), f"{path}.method", METHODS),
        space=c.choice(raw.get("space", "karras_index"), f"{path}.space", SPACES),
        karras_steps=c.integer(raw.get("karras_steps", 40), f"{path}.karras_steps", minimum=3),
        tol=c.number(raw.get("tol", 0.05), f"{path}.tol", minimum=0, exclusive=True),
    )
    if job.space == "karras_index" and job.karras_steps < job.max_nfe + 1:
        raise c.fail(f"{path}.karras_steps", f"{job.karras_steps} grid points leave no room for NFE {job.max_nfe}; "
                                             f"need at least {job.max_nfe + 1}")
    return job
