"""A comparison's output: a JSON document, a terminal table and a Markdown table."""

from __future__ import annotations

import math
from typing import Any

from ..results import _jsonable
from .settings import Settings
from .verdicts import Comparison, MetricVerdict

COMPARE_FORMAT = "cmbench-compare/1"
ARROWS = {"lower": "↓", "higher": "↑"}
MARKDOWN_VERDICTS = {"worse": "🔴 worse", "better": "🟢 better", "same": "⚪ same"}


def to_json(c: Comparison, strict: bool = False) -> dict[str, Any]:
    """The comparison as a JSON document (format ``cmbench-compare/1``)."""
    return _jsonable({
        "format": COMPARE_FORMAT,
        "exit_code": c.exit_code(strict),
        "regressed": c.regressed,
        "counts": c.counts(),
        "unmeasured": c.unmeasured,
        "new": {"source": c.new.source, "kind": c.new.kind, "suite": c.new.suite},
        "baseline": {"source": c.baseline.source, "kind": c.baseline.kind, "suite": c.baseline.suite,
                     "created_at": c.baseline.created_at},
        "z": c.settings.z,
        "thresholds": {m: t.as_dict() for m, t in c.settings.thresholds.items()},
        "settings_source": c.settings.source,
        "rows": [{"row_id": r.row_id, "model": r.model, "sampler": r.sampler, "nfe": r.nfe,
                  "new_error": r.new_error, "baseline_error": r.baseline_error,
                  "metrics": [{"metric": m.metric, "direction": m.direction, "baseline": m.baseline,
                               "baseline_se": m.baseline_se, "new": m.new, "new_se": m.new_se, "diff": m.diff,
                               "se": m.se, "z_score": m.z_score, "noise": m.noise, "threshold": m.threshold,
                               "verdict": m.verdict, "failure": m.failure, "reason": m.reason} for m in r.metrics]}
                 for r in c.rows],
        "only_in_new": c.only_new,
        "only_in_baseline": c.only_baseline,
        "notes": c.notes,
    })


def table_cells(m: MetricVerdict) -> dict[str, str]:
    """One verdict's values as text, shared by the terminal table, Markdown and the report; where
    the new side has no value, its cell says why ("missing on the new side", "row failed: ...")."""
    return {
        "metric": f"{m.metric} {ARROWS[m.direction]}",
        "baseline": _with_se(m.baseline, m.baseline_se),
        "new": m.reason if m.failure is not None else _with_se(m.new, m.new_se),
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
    if c.unmeasured:
        title += f" ({c.unmeasured} not measured on the new side)"
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
