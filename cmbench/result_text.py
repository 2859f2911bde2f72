"""Result rows as plain text for the command line: one line per finished row, and a summary table.

Numbers are written as the HTML report writes them (:mod:`cmbench.report.numbers`,
:mod:`cmbench.report.tables`): each metric as ``value ± se`` with the decimals that show two
significant digits of its standard error (of the row, on a row's line; the column's median, in
the table), the metric columns in the report's order, and times per sample always in
milliseconds to three significant digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .report.numbers import MISSING, TimeUnit
from .report.tables import ColumnFormat, column_formats, present_metric_columns
from .results import FAILED, error_text

MILLISECONDS = TimeUnit("ms", 1e3)
SEPARATOR = " ± "


def metric_formats(rows: Sequence[Mapping[str, Any]]) -> list[ColumnFormat]:
    """The metric columns any of ``rows`` has a number in, each with its decimals."""
    return column_formats(rows, present_metric_columns(rows))


def per_sample_text(seconds: Any) -> str | None:
    """Seconds per sample as ``0.0432 ms/sample``; None if not a number (a stored sample set)."""
    text = MILLISECONDS.format(seconds)
    return None if text == MISSING else f"{text} {MILLISECONDS.symbol}/sample"


def row_model(row: Mapping[str, Any]) -> str:
    """The model, after its task for an editing row (``box: cd``)."""
    return f"{row['task']}: {row['model']}" if row.get("task") else str(row["model"])


def _sampler(row: Mapping[str, Any]) -> str:
    return str(row.get("sampler_label") or row.get("sampler"))


def _shortened(text: str, width: int = 72) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def row_line(row: Mapping[str, Any], widths: Sequence[int] = (0, 0)) -> str:
    """One finished row: model, sampler, NFE, each metric as value ± se, time per sample (a failed
    row: its id and error). ``widths`` pads the model and sampler (to line up one run's rows)."""
    if row.get("status") == FAILED:
        return f"{row['row_id']}: {FAILED}: {error_text(row)}"
    parts = [row_model(row).ljust(widths[0]), _sampler(row).ljust(widths[1]), f"NFE {row['nfe']:<3}"]
    parts += [f"{fmt.column.key} {fmt.cell_text(row)}" for fmt in metric_formats([row])]
    timing = per_sample_text(row.get("seconds_per_sample"))
    return "  ".join([*parts, *([timing] if timing else [])])


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as an aligned table: model, sampler, NFE, a column per metric (the ``±`` of a
    column lined up) and ms/sample; a failed row shows its error instead of numbers."""
    formats = metric_formats(rows)
    header = ["model", "sampler", "NFE", *(fmt.column.key for fmt in formats), f"{MILLISECONDS.symbol}/sample"]
    names = [[row_model(row), _sampler(row), str(row["nfe"])] for row in rows]
    done = [row.get("status") != FAILED for row in rows]
    cells = [[fmt.cell_text(row).partition(SEPARATOR)[::2] for fmt in formats] for row in rows]
    times = [MILLISECONDS.format(row.get("seconds_per_sample")) for row in rows]

    def width(texts) -> int:
        return max(map(len, texts), default=0)

    name_w = [max(len(header[i]), width(n[i] for n in names)) for i in range(3)]
    value_w = [width(c[i][0] for c, ok in zip(cells, done) if ok) for i in range(len(formats))]
    se_w = [width(c[i][1] for c, ok in zip(cells, done) if ok) for i in range(len(formats))]
    metric_w = [max(len(header[3 + i]), value_w[i] + (len(SEPARATOR) + se_w[i] if se_w[i] else 0))
                for i in range(len(formats))]
    time_w = max(len(header[-1]), width(t for t, ok in zip(times, done) if ok))

    def estimate(value: str, se: str, i: int) -> str:
        text = value.rjust(value_w[i])
        if se_w[i]:  # the column has errors: line up their ±, and leave room where a cell has none
            text += SEPARATOR + se.ljust(se_w[i]) if se else " " * (len(SEPARATOR) + se_w[i])
        return text.rjust(metric_w[i])

    def line(first: Sequence[str], rest: Sequence[str]) -> str:
        lead = [first[0].ljust(name_w[0]), first[1].ljust(name_w[1]), first[2].rjust(name_w[2])]
        return "  ".join([*lead, *rest]).rstrip()

    lines = [line(header, [*(h.rjust(w) for h, w in zip(header[3:-1], metric_w)), header[-1].rjust(time_w)])]
    for row, name, ok, row_cells, time in zip(rows, names, done, cells, times):
        if ok:
            lines.append(line(name, [*(estimate(v, s, i) for i, (v, s) in enumerate(row_cells)), time.rjust(time_w)]))
        else:
            lines.append(line(name, [f"{FAILED}: {_shortened(error_text(row))}"]))
    return "\n".join(lines)
