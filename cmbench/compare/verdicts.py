"""Matching rows by row id and judging each scored metric: worse, same or better.

:func:`match_rows` pairs rows and checks their protocols (:data:`PROTOCOL_FIELDS`);
:func:`metric_verdict` judges one metric; :func:`compare` does both for two sides.

The gate fails closed: a metric the baseline row measured (a finite value) that the new row
does not — the value is missing, null (how result files store NaN), non-finite or not a number,
or the row failed (``"status": "failed"``) — is *worse*, with the reason
(:func:`unmeasured_verdict`). A baseline value that is not a finite number gives nothing to
compare against: noted, not judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..metrics import DIRECTIONS, se_column
from ..results import FAILED
from .settings import DEFAULT_Z, CompareError, Settings, Threshold
from .sides import PROTOCOL_FIELDS, Side, _is_number

VERDICTS = ("worse", "same", "better")
FAILURES = ("missing", "non-finite", "not a number", "row failed")
"""Why a new row has no value for a metric the baseline measured (:attr:`MetricVerdict.failure`)."""


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
        failed = row_error(a) is not None or row_error(b) is not None  # a failed row may record no protocol
        for key in PROTOCOL_FIELDS:
            if a.get(key) is None or b.get(key) is None:
                if (a.get(key) is not None or b.get(key) is not None) and not failed:
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
    """One metric of one matched row. Measured on both sides: the numbers and the verdict. Not
    measured on the new side: ``verdict`` "worse", ``failure`` (one of :data:`FAILURES`) and
    ``reason`` say why, and the new value and everything derived from it are None."""

    metric: str
    direction: str  # "lower" | "higher" is better
    baseline: float
    new: float | None
    baseline_se: float | None
    new_se: float | None
    diff: float | None  # new − baseline
    se: float | None  # of the difference; missing standard errors count as 0
    noise: float | None  # z · se
    threshold: float | None  # the threshold in the metric's units (absolute, or relative × |baseline|)
    verdict: str  # worse | same | better
    failure: str | None = None
    reason: str | None = None  # e.g. "missing on the new side", "non-finite: nan", "row failed: <error>"

    @property
    def z_score(self) -> float | None:
        return self.diff / self.se if self.se else None

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


def unmeasured_verdict(metric: str, baseline: float, baseline_se: float | None, failure: str,
                       reason: str) -> MetricVerdict:
    """The verdict "worse" for a metric the baseline measured and the new row did not: a model that
    now produces NaN, or a run that lost a metric, must not pass the gate as "same"."""
    if failure not in FAILURES:
        raise ValueError(f"unknown failure {failure!r}; accepted: {', '.join(FAILURES)}")
    return MetricVerdict(metric, DIRECTIONS[metric], baseline, None, baseline_se, None, None, None, None, None,
                         "worse", failure, reason)


def read_value(value: Any) -> tuple[float | None, str | None]:
    """A row's metric value as ``(number, None)``, or ``(None, problem)`` when it is not a finite
    number: "missing" (absent or null), "non-finite: nan" (also a string "nan" or "inf"), or
    "not a number: <value>". Result files store NaN as null, so null counts as missing."""
    if value is None:
        return None, "missing"
    if isinstance(value, str):  # "nan" / "inf" say what went wrong; any other text (even "12.5") is no number
        try:
            number = float(value)
        except ValueError:
            return None, f"not a number: {value!r}"
        return None, f"not a number: {value!r}" if math.isfinite(number) else f"non-finite: {number}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"not a number: {value!r}"
    return (float(value), None) if math.isfinite(value) else (None, f"non-finite: {float(value)}")


def row_error(row: Mapping[str, Any]) -> str | None:
    """The error of a row ``cmbench run`` recorded as failed (``"status": "failed"``), else None."""
    if row.get("status") != FAILED:
        return None
    return str(row.get("error") or "no error recorded")


def judge_metric(metric: str, baseline: float, baseline_se: float | None, new_row: Mapping[str, Any],
                 settings: Settings) -> MetricVerdict:
    """The verdict on one metric whose baseline value is the finite ``baseline``: measured against
    the new row's value, or "worse" when the new row failed or holds no finite value for it."""
    error = row_error(new_row)
    if error is not None:
        return unmeasured_verdict(metric, baseline, baseline_se, "row failed", f"row failed: {error}")
    new, problem = read_value(new_row.get(metric))
    if problem == "missing":
        return unmeasured_verdict(metric, baseline, baseline_se, "missing", "missing on the new side")
    if problem is not None:
        return unmeasured_verdict(metric, baseline, baseline_se, problem.partition(":")[0], problem)
    return metric_verdict(metric, baseline, new, baseline_se, _se(new_row.get(se_column(metric))),
                          z=settings.z, threshold=settings.threshold(metric))


@dataclass(frozen=True)
class RowComparison:
    row_id: str
    model: str
    sampler: str
    nfe: Any
    metrics: list[MetricVerdict]
    new_error: str | None = None  # the new row failed (status "failed"): its error
    baseline_error: str | None = None  # the baseline row failed: its metrics are not compared


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
    def unmeasured(self) -> int:
        """How many of the worse verdicts are metrics the new side has no finite value for."""
        return sum(m.failure is not None for r in self.rows for m in r.metrics)

    @property
    def regressed(self) -> bool:
        return self.counts()["worse"] > 0

    def exit_code(self, strict: bool = False) -> int:
        """1 when a metric got worse, including one the baseline measured and the new row did not
        (or, with ``strict``, when a row is on one side only), else 0."""
        return 1 if self.regressed or (strict and (self.only_new or self.only_baseline)) else 0

    def summary(self) -> str:
        counts = self.counts()
        text = ", ".join(f"{counts[v]} {v}" for v in VERDICTS) + f" ({len(self.rows)} row{'s' if len(self.rows) != 1 else ''})"
        if self.unmeasured:
            text += f"; {self.unmeasured} of the worse not measured on the new side"
        for name, ids in (("only in new", self.only_new), ("only in baseline", self.only_baseline)):
            if ids:
                text += f"; {len(ids)} {name}"
        return text


def compare(new: Side, baseline: Side, settings: Settings = Settings(), metrics: Iterable[str] | None = None) -> Comparison:
    """Verdicts for every scored metric the baseline row of a matched pair holds a finite number
    for: judged against the new row's number, or "worse" when the new row has none (fails closed)."""
    wanted = list(metrics) if metrics else list(DIRECTIONS)
    unknown = [m for m in wanted if m not in DIRECTIONS]
    if unknown:
        raise CompareError(f"unknown metric(s) {', '.join(unknown)}; accepted: {', '.join(DIRECTIONS)}")
    common, only_new, only_baseline, notes = match_rows(new, baseline)
    rows, no_se, one_sided, bad_baseline, failed_baseline = [], {}, {}, {}, []
    for rid in common:
        a, b = new.rows[rid], baseline.rows[rid]
        new_error, baseline_error = row_error(a), row_error(b)
        verdicts = []
        if baseline_error is not None:
            failed_baseline.append(_baseline_failure_note(rid, baseline_error, new_error))
        for metric in wanted if baseline_error is None else ():
            value, problem = read_value(b.get(metric))
            if problem == "missing":
                if new_error is None and _is_number(a.get(metric)):
                    one_sided.setdefault(metric, []).append(rid)
                continue
            if problem is not None:
                bad_baseline.setdefault((metric, problem), []).append(rid)
                continue
            verdict = judge_metric(metric, value, _se(b.get(se_column(metric))), a, settings)
            if verdict.failure is None and verdict.se_missing:
                no_se.setdefault(metric, []).append(rid)
            verdicts.append(verdict)
        rows.append(RowComparison(rid, str(a["model"]), str(a.get("sampler_label") or a["sampler"]), a.get("nfe"),
                                  verdicts, new_error, baseline_error))
    notes += failed_baseline
    notes += [f"{metric} has no standard error ({se_column(metric)}) on one or both sides for {_listing(rids)}; "
              "counted as 0, so only the threshold guards against noise (run with uncertainty.bootstrap ≥ 2)"
              for metric, rids in no_se.items()]
    notes += [f"{metric} is measured on one side only for {_listing(rids)}; not compared" for metric, rids in one_sided.items()]
    notes += [f"the baseline's {metric} is {problem} for {_listing(rids)}; nothing to compare against, not compared"
              for (metric, problem), rids in bad_baseline.items()]
    if not any(r.metrics for r in rows):
        failed = [r.row_id for r in rows if r.baseline_error is not None]
        raise CompareError(f"the matched rows ({_listing(common)}) share no scored metric "
                           f"({', '.join(wanted)}); nothing to compare"
                           + (f" ({_listing(failed)} failed on the baseline side)" if failed else ""))
    return Comparison(new, baseline, settings, rows, only_new, only_baseline, notes)


def _baseline_failure_note(row_id: str, baseline_error: str, new_error: str | None) -> str:
    if new_error is not None:
        return (f"{row_id} failed on both sides (new: {new_error}; baseline: {baseline_error}); "
                "nothing to compare")
    return f"{row_id} failed on the baseline side ({baseline_error}); its metrics are not compared"


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
