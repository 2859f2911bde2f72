"""Regression testing: a new run's result rows against a baseline's, with noise-aware verdicts.

Rows are matched by row id (model, sampler or run name, NFE). Matched rows must share the
evaluation protocol (:data:`PROTOCOL_FIELDS`: sample count, quantisation, feature extractor and
its weights, metric conventions, reference statistics); rows measured under different protocols
are not comparable and make the comparison fail rather than give a verdict.

For each scored metric (:data:`cmbench.metrics.DIRECTIONS`) of a matched row the difference
``new − baseline`` has the standard error ``se = sqrt(se_new² + se_baseline²)`` (the rows' own
bootstrap estimates, :mod:`cmbench.metrics.bootstrap`; missing ones count as 0 and are noted).
A change in the bad direction is *worse* only when it exceeds both the metric's threshold
(absolute, and/or relative to the baseline value; the larger applies) and ``z·se``; *better* is
the mirror image; anything else is *same*, a difference within noise or within tolerance.

Every function here is pure apart from :func:`load_side` and :func:`write_baseline`; the
command line (``cmbench compare``) and the report format their results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_write_text
from .metrics import DIRECTIONS, se_column
from .results import RESULTS_JSONL, _jsonable, read_rows

BASELINE_FORMAT = "cmbench-baseline/1"
COMPARE_FORMAT = "cmbench-compare/1"
RUN_FILE = "run.json"
RUN_BASELINE = "baseline.json"  # a run folder's copy of the baseline its report compares against
DEFAULT_Z = 3.0
VERDICTS = ("worse", "same", "better")
PROTOCOL_FIELDS = (
    "sampler", "num_samples", "quantisation", "extractor", "extractor_sha256", "reference_sha256", "metric_options",
)
"""Fields two matched rows must agree on; one recorded on one side only is noted, not checked."""
IDENTITY_FIELDS = ("row_id", "model", "family", "sampler_label", "nfe", "seed_start", "checkpoint_sha256")
SPREAD_COLUMNS = ("is_std", "kid_std", "bpd_nfe")
THRESHOLD_FORMS = ('a number ≥ 0 (absolute, in the metric\'s units), "N%" (relative to the baseline value), '
                   'a list of one of each, or {absolute: x, relative: y} (y a fraction)')


class CompareError(ValueError):
    """Inputs that cannot be compared (unreadable, no common rows, different protocols): exit status 2."""


# --- thresholds and settings -------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """The smallest change that counts: ``absolute`` in the metric's units, ``relative`` as a
    fraction of the baseline value; when both are given the larger applies."""

    absolute: float | None = None
    relative: float | None = None

    def limit(self, baseline: float) -> float:
        return max(self.absolute or 0.0, (self.relative or 0.0) * abs(baseline))

    def merge(self, other: "Threshold", metric: str) -> "Threshold":
        for kind in ("absolute", "relative"):
            if getattr(self, kind) is not None and getattr(other, kind) is not None:
                raise ValueError(f"threshold for {metric}: {kind} value given twice")
        return Threshold(self.absolute if other.absolute is None else other.absolute,
                         self.relative if other.relative is None else other.relative)

    def describe(self) -> str:
        parts = ([f"{self.absolute:g}"] if self.absolute is not None else []) + \
                ([f"{self.relative * 100:g}%"] if self.relative is not None else [])
        return " and ".join(parts) or "0"

    def as_dict(self) -> dict[str, float | None]:
        return {"absolute": self.absolute, "relative": self.relative}


def parse_threshold(metric: str, value: Any) -> Threshold:
    """A threshold from a suite, a baseline file or the command line (see :data:`THRESHOLD_FORMS`)."""
    if metric not in DIRECTIONS:
        raise ValueError(f"no scored metric {metric!r}; accepted: {', '.join(DIRECTIONS)}")
    if isinstance(value, Mapping):
        unknown = set(value) - {"absolute", "relative"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; accepted: absolute, relative")
        parts = [Threshold(absolute=_nonnegative(value["absolute"], metric))] if value.get("absolute") is not None else []
        if value.get("relative") is not None:
            parts.append(Threshold(relative=_nonnegative(value["relative"], metric)))
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"threshold for {metric} is an empty list; accepted: {THRESHOLD_FORMS}")
        parts = [parse_threshold(metric, item) for item in value]
    else:
        parts = [_one_threshold(metric, value)]
    result = Threshold()
    for part in parts:
        result = result.merge(part, metric)
    return result


def _one_threshold(metric: str, value: Any) -> Threshold:
    if not isinstance(value, str):
        return Threshold(absolute=_nonnegative(value, metric))
    text = value.strip()
    relative = text.endswith("%")
    try:
        number = float(text[:-1] if relative else text)
    except ValueError:
        raise ValueError(f"threshold for {metric}: {value!r} is not a number; accepted: {THRESHOLD_FORMS}") from None
    number = _nonnegative(number, metric)
    return Threshold(relative=number / 100.0) if relative else Threshold(absolute=number)


def _nonnegative(value: Any, metric: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold for {metric}: expected a number ≥ 0, got {value!r}; accepted: {THRESHOLD_FORMS}")
    return float(value)


def parse_threshold_option(text: str) -> tuple[str, Threshold]:
    """``--threshold fid=0.5`` or ``--threshold fid=2%``."""
    metric, sep, value = text.partition("=")
    if not sep or not metric.strip() or not value.strip():
        raise ValueError(f"--threshold {text!r}: expected METRIC=VALUE, e.g. fid=0.5 or fid=2%")
    return metric.strip(), parse_threshold(metric.strip(), value.strip())


def parse_regression_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised ``{z, thresholds: {metric: {absolute, relative}}}`` of a suite's
    ``regression:`` block or a baseline file's; raises ValueError naming the key."""
    unknown = set(raw) - {"z", "thresholds"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key; accepted keys here: z, thresholds")
    z = raw.get("z", DEFAULT_Z)
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not z > 0:
        raise ValueError(f"z: expected a number > 0 (standard errors a change must exceed), got {z!r}")
    thresholds = raw.get("thresholds") or {}
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"thresholds: expected a mapping metric: threshold, got {type(thresholds).__name__}")
    parsed = {}
    for metric, value in thresholds.items():
        try:
            parsed[str(metric)] = parse_threshold(str(metric), value).as_dict()
        except ValueError as err:
            raise ValueError(f"thresholds.{metric}: {err}") from None
    return {"z": float(z), "thresholds": parsed}


@dataclass(frozen=True)
class Settings:
    z: float = DEFAULT_Z
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    source: str = "defaults"

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, Threshold())


def resolve_settings(new: "Side", baseline: "Side", *, z: float | None = None,
                     thresholds: Mapping[str, Threshold] | None = None) -> Settings:
    """z and thresholds: the command line's, over the new side's suite (its ``regression:``
    block), else the baseline's, else z = 3 and no thresholds."""
    spec, source = {}, "defaults"
    for side, name in ((new, "new"), (baseline, "baseline")):
        if side.regression:
            try:
                spec = parse_regression_spec(side.regression)
            except ValueError as err:
                raise CompareError(f"{side.source}: regression.{err}") from None
            source = f"{name} ({side.source})"
            break
    merged = {m: parse_threshold(m, t) for m, t in spec.get("thresholds", {}).items()}
    merged.update(thresholds or {})
    if thresholds or z is not None:
        source = "command line" + (f" over {source}" if source != "defaults" else "")
    z_value = float(z) if z is not None else spec.get("z", DEFAULT_Z)
    if not z_value > 0:
        raise CompareError(f"--z must be > 0, got {z_value}")
    return Settings(z=z_value, thresholds=merged, source=source)


# --- the two sides ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Result rows to compare, by row id, with where they came from."""

    source: str
    kind: str  # "run folder" | "results file" | "baseline file"
    rows: dict[str, dict[str, Any]]
    suite: str | None = None
    regression: dict[str, Any] | None = None
    created_at: str | None = None
    origin: str | None = None  # a baseline file's "source": the run or file it was made from

    def describe(self) -> str:
        return f"{self.source} ({self.kind}{f', suite {self.suite}' if self.suite else ''})"


def load_side(path: str | Path) -> Side:
    """A run folder, a ``results.jsonl`` or a baseline file (format ``cmbench-baseline/1``)."""
    path = Path(path)
    if path.is_dir():
        results = path / RESULTS_JSONL
        if not results.is_file():
            raise CompareError(f"{path} is a folder without {RESULTS_JSONL}; give a run folder, a results "
                               f"file or a baseline file ({BASELINE_FORMAT})")
        return _results_side(results, path, "run folder")
    if not path.is_file():
        raise CompareError(f"{path} does not exist; give a run folder, a results file or a baseline file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"{path} cannot be read: {err}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None  # JSON lines: a results file
    if isinstance(document, dict) and "format" in document:
        return _baseline_side(document, path)
    return _results_side(path, path.parent if path.name == RESULTS_JSONL else None, "results file")


def _results_side(results: Path, run_dir: Path | None, kind: str) -> Side:
    try:
        rows = read_rows(results)
    except (ValueError, OSError) as err:
        raise CompareError(str(err)) from None
    if not rows:
        raise CompareError(f"{results} holds no result rows")
    meta = _run_metadata(run_dir / RUN_FILE) if run_dir is not None else {}
    suites = {str(r["suite"]) for r in rows if r.get("suite")}
    suite = meta.get("suite") or (suites.pop() if len(suites) == 1 else None)
    source = str(run_dir if kind == "run folder" else results)
    return Side(source, kind, {str(r["row_id"]): r for r in rows}, suite, meta.get("regression"), meta.get("started_at"))


def _run_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _baseline_side(document: dict[str, Any], path: Path) -> Side:
    if document.get("format") != BASELINE_FORMAT:
        raise CompareError(f"{path}: format {document.get('format')!r}; accepted: {BASELINE_FORMAT!r} "
                           "(write one with `cmbench run --save-baseline FILE`)")
    rows = document.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CompareError(f"{path}: 'rows' must be a non-empty list of result rows")
    by_id = {}
    for i, row in enumerate(rows):
        missing = [k for k in ("row_id", "model", "sampler", "nfe") if not isinstance(row, dict) or row.get(k) is None]
        if missing:
            raise CompareError(f"{path}: rows[{i}] lacks {', '.join(missing)}; every row needs row_id, model, sampler, nfe")
        by_id[str(row["row_id"])] = row
    regression = document.get("regression")
    if regression is not None and not isinstance(regression, dict):
        raise CompareError(f"{path}: 'regression' must be a mapping {{z, thresholds}}")
    return Side(str(path), "baseline file", by_id, document.get("suite"), regression, document.get("created_at"),
                document.get("source"))


def baseline_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a baseline keeps of a result row: identity, protocol, scored metrics and their errors."""
    keys = IDENTITY_FIELDS + PROTOCOL_FIELDS + ("uncertainty",)
    keys += tuple(k for col in DIRECTIONS for k in (col, se_column(col))) + SPREAD_COLUMNS
    return {k: row[k] for k in dict.fromkeys(keys) if k in row}


def baseline_document(side: Side) -> dict[str, Any]:
    """A baseline file's content (format ``cmbench-baseline/1``) holding ``side``'s rows."""
    rows = sorted(side.rows.values(), key=lambda r: (str(r["model"]), str(r["row_id"]), _number(r.get("nfe"))))
    return {
        "format": BASELINE_FORMAT,
        "suite": side.suite,
        "created_at": (side.created_at if side.kind == "baseline file" and side.created_at
                       else datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "cmbench_version": __version__,
        "source": side.source,
        "regression": side.regression,
        "rows": [baseline_row(r) for r in rows],
    }


def write_baseline(path: str | Path, document: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write a baseline file atomically; an existing file is an error unless ``overwrite``."""
    text = json.dumps(_jsonable(dict(document)), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


# --- matching and verdicts ---------------------------------------------------------------------


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


# --- output ------------------------------------------------------------------------------------


ARROWS = {"lower": "↓", "higher": "↑"}
MARKDOWN_VERDICTS = {"worse": "🔴 worse", "better": "🟢 better", "same": "⚪ same"}


def to_json(c: Comparison, strict: bool = False) -> dict[str, Any]:
    """The comparison as a JSON document (format ``cmbench-compare/1``)."""
    return _jsonable({
        "format": COMPARE_FORMAT,
        "exit_code": c.exit_code(strict),
        "regressed": c.regressed,
        "counts": c.counts(),
        "new": {"source": c.new.source, "kind": c.new.kind, "suite": c.new.suite},
        "baseline": {"source": c.baseline.source, "kind": c.baseline.kind, "suite": c.baseline.suite,
                     "created_at": c.baseline.created_at},
        "z": c.settings.z,
        "thresholds": {m: t.as_dict() for m, t in c.settings.thresholds.items()},
        "settings_source": c.settings.source,
        "rows": [{"row_id": r.row_id, "model": r.model, "sampler": r.sampler, "nfe": r.nfe,
                  "metrics": [{"metric": m.metric, "direction": m.direction, "baseline": m.baseline,
                               "baseline_se": m.baseline_se, "new": m.new, "new_se": m.new_se, "diff": m.diff,
                               "se": m.se, "z_score": m.z_score, "noise": m.noise, "threshold": m.threshold,
                               "verdict": m.verdict} for m in r.metrics]}
                 for r in c.rows],
        "only_in_new": c.only_new,
        "only_in_baseline": c.only_baseline,
        "notes": c.notes,
    })


def table_cells(m: MetricVerdict) -> dict[str, str]:
    """One verdict's values as text, shared by the terminal table, Markdown and the report."""
    return {
        "metric": f"{m.metric} {ARROWS[m.direction]}",
        "baseline": _with_se(m.baseline, m.baseline_se),
        "new": _with_se(m.new, m.new_se),
        "diff": _fmt(m.diff, sign=True),
        "noise": _fmt(m.noise),
        "threshold": _fmt(m.threshold),
        "verdict": m.verdict,
    }


def render_table(c: Comparison, strict: bool = False) -> str:
    """A plain-text table for a terminal: one line per row and metric, then the summary."""
    header = ("row", "metric", "baseline", "new", "diff", "z·se", "threshold", "verdict")
    lines = [[r.row_id, *table_cells(m).values()] for r in c.rows for m in r.metrics]
    lines = [[cell.upper() if i == 7 and cell == "worse" else cell for i, cell in enumerate(line)] for line in lines]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def fmt(line):
        return "  ".join(str(x).rjust(w) if i in right else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths))).rstrip()

    out = [f"new:      {c.new.describe()}", f"baseline: {c.baseline.describe()}",
           f"z = {c.settings.z:g}; thresholds: {_thresholds_text(c.settings)} (from {c.settings.source})", "",
           fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines), ""]
    out += _tail(c, strict)
    return "\n".join(out) + "\n"


def render_markdown(c: Comparison, strict: bool = False) -> str:
    """A Markdown table for a pull-request comment."""
    worse = c.counts()["worse"]
    title = f"❌ {worse} metric{'s' if worse != 1 else ''} worse" if worse else "✅ no regression"
    out = [f"### cmbench compare: {title}", "",
           f"New `{c.new.source}` vs baseline `{c.baseline.source}`"
           + (f" (suite `{c.baseline.suite}`)" if c.baseline.suite else "")
           + f" · z = {c.settings.z:g} · thresholds: {_thresholds_text(c.settings)}", "",
           "| Row | Metric | Baseline | New | Δ | z·se | Threshold | Verdict |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in c.rows:
        for m in r.metrics:
            cells = table_cells(m)
            cells["verdict"] = MARKDOWN_VERDICTS[m.verdict]
            if m.verdict != "same":
                cells["verdict"] = f"**{cells['verdict']}**"
            out.append("| " + " | ".join(_md(x) for x in [f"`{r.row_id}`", *cells.values()]) + " |")
    out.append("")
    out += [f"- {line}" for line in _tail(c, strict)]
    return "\n".join(out) + "\n"


def _tail(c: Comparison, strict: bool) -> list[str]:
    lines = [f"{c.summary()} → exit status {c.exit_code(strict)}"]
    if c.only_new:
        lines.append(f"only in new (not compared): {', '.join(c.only_new)}")
    if c.only_baseline:
        lines.append(f"only in baseline (missing from new): {', '.join(c.only_baseline)}")
    lines += [f"note: {n}" for n in c.notes]
    return lines


def _thresholds_text(settings: Settings) -> str:
    return ", ".join(f"{m} {t.describe()}" for m, t in settings.thresholds.items()) or "none"


def _with_se(value: float, se: float | None) -> str:
    return _fmt(value) + (f" ± {_fmt(se)}" if se is not None else "")


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return format(value, "+.4g" if sign else ".4g")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _se(value: Any) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.inf


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
