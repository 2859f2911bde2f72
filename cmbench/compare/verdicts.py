"""Matching rows by row id and judging each scored metric: worse, same or better.

:func:`match_rows` pairs rows and checks their protocols (:data:`PROTOCOL_FIELDS`);
:func:`metric_verdict` judges one metric; :func:`compare` does both for two sides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..metrics import DIRECTIONS, se_column
from .settings import DEFAULT_Z, CompareError, Settings, Threshold
from .sides import PROTOCOL_FIELDS, Side, _is_number

VERDICTS = ("worse", "same", "better")


def match_rows(new: Side, baseline: Side) -> tuple[list[str], list[str], list[str], list[str]]:
    """(matched row ids, ids only in new, ids only in the baseline, notes); raises CompareError
    when nothing matches or matched rows differ in a :data:`PROTOCOL_FIELDS` field."""
    common = [rid for rid in new.rows if rid in baseline.rows]
    if not common:
        raise CompareError(
            f"no row of {new.describe()} matches a row of {baseline.describe()} (rows match by model, sampler or "
            f"run name, and NFE); new has {_listing(new.rows)}; baseline has {_listing(baseline.rows)}")
    differ: dict[str, list[str]] = {}
    example: dict[str, tuple[Any, Any]] = {}
    unrecorded: dict[str, list[str]] = {}
    for rid in common:
        a, b = new.rows[rid], baseline.rows[rid]
        for key in PROTOCOL_FIELDS:
            if a.get(key) is None or b.get(key) is None:
                if a.get(key) is not None or b.get(key) is not None:
                    unrecorded.setdefault(key, []).append(rid)
            elif a[key] != b[key]:
                differ.setdefault(key, []).append(rid)
                example.setdefault(key, (a[key], b[key]))
    if differ:
        lines = [f"  {key}: new {_show(example[key][0], example[key][1])} vs baseline {_show(example[key][1], example[key][0])} "
                 f"(row{'s' if len(rids) > 1 else ''} {_listing(rids)})" for key, rids in differ.items()]
        raise CompareError(
            f"cannot compare {new.source} with {baseline.source}: the evaluation protocols differ; rows are compared "
            "only under the same sampler, sample count, quantisation, extractor, metric options and reference "
            "statistics:\n" + "\n".join(lines))
    notes = [f"{key} is recorded on one side only for {_listing(rids)}; not checked"
             for key, rids in unrecorded.items()]
    only_new = [rid for rid in new.rows if rid not in baseline.rows]
    only_baseline = [rid for rid in baseline.rows if rid not in new.rows]
    return common, only_new, only_baseline, notes


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    direction: str  # "lower" | "higher" is better
    baseline: float
    new: float
    baseline_se: float | None
    new_se: float | None
    diff: float  # new − baseline
    se: float  # of the difference; missing standard errors count as 0
    noise: float  # z · se
    threshold: float  # the threshold in the metric's units (absolute, or relative × |baseline|)
    verdict: str  # worse | same | better

    @property
    def z_score(self) -> float | None:
        return self.diff / self.se if self.se > 0 else None

    @property
    def se_missing(self) -> bool:
        return self.baseline_se is None or self.new_se is None


def metric_verdict(metric: str, baseline: float, new: float, baseline_se: float | None, new_se: float | None,
                   *, z: float = DEFAULT_Z, threshold: Threshold = Threshold()) -> MetricVerdict:
    """Compare one metric: worse / better only when the change exceeds both the threshold and z·se."""
    direction = DIRECTIONS[metric]
    diff = new - baseline
    harm = diff if direction == "lower" else -diff  # > 0: the change is in the bad direction
    se = math.hypot(baseline_se or 0.0, new_se or 0.0)
    noise, limit = z * se, threshold.limit(baseline)
    if harm > limit and harm > noise:
        verdict = "worse"
    elif -harm > limit and -harm > noise:
        verdict = "better"
    else:
        verdict = "same"
    return MetricVerdict(metric, direction, baseline, new, baseline_se, new_se, diff, se, noise, limit, verdict)


@dataclass(frozen=True)
class RowComparison:
    row_id: str
    model: str
    sampler: str
    nfe: Any
    metrics: list[MetricVerdict]


@dataclass(frozen=True)
class Comparison:
    new: Side
    baseline: Side
    settings: Settings
    rows: list[RowComparison]
    only_new: list[str]
    only_baseline: list[str]
    notes: list[str]

    def counts(self) -> dict[str, int]:
        verdicts = [m.verdict for r in self.rows for m in r.metrics]
        return {v: verdicts.count(v) for v in VERDICTS}

    @property
    def regressed(self) -> bool:
        return self.counts()["worse"] > 0

    def exit_code(self, strict: bool = False) -> int:
        """1 when a metric got worse (or, with ``strict``, a row is on one side only), else 0."""
        return 1 if self.regressed or (strict and (self.only_new or self.only_baseline)) else 0

    def summary(self) -> str:
        counts = self.counts()
        text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f" ({len(self.rows)} rows)"
        for name, ids in (("only in new", self.only_new), ("only in baseline", self.only_baseline)):
            if ids:
                text += f"; {len(ids)} {name}"
        return text


def compare(new: Side, baseline: Side, settings: Settings = Settings(), metrics: Iterable[str] | None = None) -> Comparison:
    """Verdicts for every scored metric both rows of every matched pair hold a number for."""
    wanted = list(metrics) if metrics else list(DIRECTIONS)
    unknown = [m for m in wanted if m not in DIRECTIONS]
    if unknown:
        raise CompareError(f"unknown metric(s) {', '.join(unknown)}; accepted: {', '.join(DIRECTIONS)}")
    common, only_new, only_baseline, notes = match_rows(new, baseline)
    rows, no_se, one_sided = [], {}, {}
    for rid in common:
        a, b = new.rows[rid], baseline.rows[rid]
        verdicts = []
        for metric in wanted:
            if not (_is_number(a.get(metric)) and _is_number(b.get(metric))):
                if _is_number(a.get(metric)) or _is_number(b.get(metric)):
                    one_sided.setdefault(metric, []).append(rid)
                continue
            se_key = se_column(metric)
            verdict = metric_verdict(metric, float(b[metric]), float(a[metric]), _se(b.get(se_key)), _se(a.get(se_key)),
                                     z=settings.z, threshold=settings.threshold(metric))
            if verdict.se_missing:
                no_se.setdefault(metric, []).append(rid)
            verdicts.append(verdict)
        rows.append(RowComparison(rid, str(a["model"]), str(a.get("sampler_label") or a["sampler"]), a.get("nfe"), verdicts))
    notes += [f"{metric} has no standard error ({se_column(metric)}) on one or both sides for {_listing(rids)}; "
              "counted as 0, so only the threshold guards against noise (run with uncertainty.bootstrap ≥ 2)"
              for metric, rids in no_se.items()]
    notes += [f"{metric} is measured on one side only for {_listing(rids)}; not compared" for metric, rids in one_sided.items()]
    if not any(r.metrics for r in rows):
        raise CompareError(f"the matched rows ({_listing(common)}) share no scored metric "
                           f"({', '.join(wanted)}); nothing to compare")
    return Comparison(new, baseline, settings, rows, only_new, only_baseline, notes)


def _se(value: Any) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _listing(ids: Iterable[str], shown: int = 6) -> str:
    ids = list(ids)
    text = ", ".join(ids[:shown])
    return text + (f", … ({len(ids) - shown} more)" if len(ids) > shown else "") if ids else "no rows"


def _show(value: Any, other: Any) -> str:
    """A protocol value for an error message: hashes shortened, mappings reduced to differing keys."""
    if isinstance(value, Mapping) and isinstance(other, Mapping):
        keys = sorted(k for k in set(value) | set(other) if value.get(k) != other.get(k))
        return "{" + ", ".join(f"{k}: {value.get(k)!r}" for k in keys) + "}"
    if isinstance(value, str) and len(value) == 64 and all(ch in "0123456789abcdef" for ch in value):
        return value[:12] + "…"
    return repr(value)
