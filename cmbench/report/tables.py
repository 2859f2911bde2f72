"""The report's comparison tables: one per model family, each metric as value ± standard error,
the best row marked only where it is better beyond noise (:mod:`cmbench.report.ranking`).

Every number here is written by :mod:`cmbench.report.numbers`: a metric column has one precision
for the whole report (matched to its typical standard error), times per sample one unit. The
same cell texts caption the sample grids, so a grid and its table row read alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cmbench.metrics import DIRECTIONS, se_column
from cmbench.report.numbers import (MISSING, TimeUnit, decimals_for_errors, format_value_se, is_finite_number,
                                    is_standard_error, time_unit_for)
from cmbench.report.ranking import Measurement, rank_marks
from cmbench.results import FAILED

FAMILY_ORDER = ("edm", "cd", "ct", "ctm", "pd", "generator", "gmm", "samples")
FAMILY_NAMES = {
    "edm": "EDM (diffusion)",
    "cd": "Consistency distillation (CD)",
    "ct": "Consistency training (CT)",
    "ctm": "Consistency trajectory model (CTM)",
    "pd": "Progressive distillation (PD)",
    "gmm": "Analytic Gaussian mixture (GMM)",
    "generator": "One-step generators",
    "samples": "Sample sets made elsewhere",
}
ARROWS = {"lower": "↓", "higher": "↑"}


@dataclass(frozen=True)
class MetricColumn:
    """A metric the comparison table can show: result-row key, header, and the decimals used when
    no row has a standard error to match (``decimals`` is then the report's precision for it).
    The standard error is read from ``se_column(key)``. ``per_model``: measured once per model
    and copied into each of its rows (bits/dim), so a model's rows repeat one measurement."""

    key: str
    label: str
    decimals: int
    per_model: bool = False

    @property
    def se_key(self) -> str:
        return se_column(self.key)

    @property
    def direction(self) -> str | None:
        """"lower" or "higher" (which values are better), None for a column nobody ranks."""
        return DIRECTIONS.get(self.key)


METRIC_COLUMNS: tuple[MetricColumn, ...] = (
    MetricColumn("fid", "FID", 2),
    MetricColumn("sfid", "sFID", 2),
    MetricColumn("fd_dinov2", "FD_DINOv2", 2),
    MetricColumn("cmmd", "CMMD", 3),
    MetricColumn("is_mean", "IS", 2),
    MetricColumn("kid", "KID", 4),
    MetricColumn("precision", "Precision", 3),
    MetricColumn("recall", "Recall", 3),
    MetricColumn("density", "Density", 3),
    MetricColumn("coverage", "Coverage", 3),
    MetricColumn("bpd", "NLL (bits/dim)", 3, per_model=True),
)
"""The metrics of generated sets, in table order. A column appears when at least one row has a
number for it."""

EDIT_METRIC_COLUMNS: tuple[MetricColumn, ...] = (
    MetricColumn("psnr", "PSNR (dB)", 2),
    MetricColumn("ssim", "SSIM", 4),
    MetricColumn("lpips", "LPIPS", 4),
    MetricColumn("consistency_rms", "Residual", 4),
)
"""The metrics only editing rows have: each output against its own ground truth (PSNR, SSIM,
LPIPS) and against the measurement it must keep (the data-consistency residual)."""

ALL_METRIC_COLUMNS = METRIC_COLUMNS + EDIT_METRIC_COLUMNS

TABLE_KEYS = frozenset(
    {"row_id", "model", "family", "sampler", "sampler_label", "nfe", "num_samples", "seconds_per_sample"}
    | {column.key for column in ALL_METRIC_COLUMNS} | {column.se_key for column in ALL_METRIC_COLUMNS}
)
"""Result-row keys the tables show; row details list the others."""


@dataclass(frozen=True)
class ColumnFormat:
    """A present metric column with the report-wide decimals of its values and errors, and
    whether any row has a standard error for it at all."""

    column: MetricColumn
    decimals: int
    has_se: bool

    def cell_text(self, row: Mapping[str, Any]) -> str:
        """The row's "value ± se" (the value alone without an se, MISSING without a value)."""
        return format_value_se(row.get(self.column.key), row.get(self.column.se_key), self.decimals)

    def lacks_se(self, row: Mapping[str, Any]) -> bool:
        """A value without a finite standard error, in a column where other rows have one."""
        value, se = row.get(self.column.key), row.get(self.column.se_key)
        return self.has_se and is_finite_number(value) and not is_standard_error(se)

    def measurement(self, row: Mapping[str, Any]) -> Measurement | None:
        """The row's value and se for ranking; None for failed rows and rows without a value.
        Its source is the row, or the model for a per-model column (whose rows repeat it)."""
        value = row.get(self.column.key)
        if row.get("status") == FAILED or not is_finite_number(value):
            return None
        se = row.get(self.column.se_key)
        source = ("model", str(row.get("model"))) if self.column.per_model else ("row", str(row.get("row_id")))
        return Measurement(float(value), float(se) if is_standard_error(se) else None, source)


def sort_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows in report order: family (FAMILY_ORDER, then others by name), model, sampler label, NFE."""
    return sorted(rows, key=lambda row: (_family_rank(row["family"]), *_row_key(row)))


def present_metric_columns(rows: Sequence[Mapping[str, Any]],
                           columns: Sequence[MetricColumn] = ALL_METRIC_COLUMNS) -> list[MetricColumn]:
    """The ``columns`` (in their order) for which at least one row holds a finite number."""
    return [column for column in columns if any(is_finite_number(row.get(column.key)) for row in rows)]


def with_likelihood_protocol(columns: Sequence[MetricColumn], rows: Sequence[Mapping[str, Any]]) -> list[MetricColumn]:
    """``columns`` with the bits/dim label naming the likelihood protocol of the rows' ``bpd``
    (``exact`` or ``ctm_eval_bpd``, docs/likelihood.md); rows from before protocols were exact."""
    protocols = sorted({str(row.get("bpd_protocol") or "exact") for row in rows if is_finite_number(row.get("bpd"))})
    if not protocols:
        return list(columns)
    return [replace(c, label=f"{c.label} [{', '.join(protocols)}]") if c.key == "bpd" else c for c in columns]


def column_formats(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> list[ColumnFormat]:
    """Each column's report-wide decimals: two significant digits of its median standard error."""
    formats = []
    for column in columns:
        errors = [row.get(column.se_key) for row in rows if is_finite_number(row.get(column.key))]
        formats.append(ColumnFormat(column, decimals_for_errors(errors, column.decimals),
                                    any(is_standard_error(e) for e in errors)))
    return formats


def report_time_unit(rows: Sequence[Mapping[str, Any]]) -> TimeUnit:
    """The one unit of every time per sample in the report (tables and plots)."""
    return time_unit_for(row.get("seconds_per_sample") for row in rows)


def comparison_tables(rows: Sequence[Mapping[str, Any]], formats: Sequence[ColumnFormat], unit: TimeUnit,
                      z: float) -> list[dict[str, Any]]:
    """One table per family in report order; in each metric column the rows marked best or tied
    (:func:`cmbench.report.ranking.rank_marks` with this ``z``)."""
    families: dict[str, list[Mapping[str, Any]]] = {}
    for row in sort_rows(rows):
        families.setdefault(str(row["family"]), []).append(row)
    return [{"family": family, "name": FAMILY_NAMES.get(family, family),
             "rows": ranked_table_rows(members, formats, unit, z)} for family, members in families.items()]


def ranked_table_rows(members: Sequence[Mapping[str, Any]], formats: Sequence[ColumnFormat], unit: TimeUnit,
                      z: float) -> list[dict[str, Any]]:
    """The rows of one table, in the given order, each metric cell marked best or tied among
    ``members`` (:func:`cmbench.report.ranking.rank_marks` with this ``z``)."""
    marks = [_column_marks(members, fmt, z) for fmt in formats]
    return [_table_row(row, formats, [column[i] for column in marks], unit) for i, row in enumerate(members)]


def metric_header(fmt: ColumnFormat) -> dict[str, Any]:
    """A metric column's header: its label, direction arrow and what the arrow means."""
    direction = fmt.column.direction
    return {"label": fmt.column.label, "arrow": ARROWS.get(direction or "", ""),
            "direction": f"{direction} is better" if direction else "", "has_se": fmt.has_se}


def row_label(row: Mapping[str, Any]) -> str:
    """"model · sampler label · NFE n": how the report names a row to people."""
    return f"{row['model']} · {sampler_label(row)} · NFE {row['nfe']}"


def row_metrics(row: Mapping[str, Any], formats: Sequence[ColumnFormat]) -> list[tuple[str, str]]:
    """(metric label, "value ± se") of each metric the row has, as the table shows them."""
    return [(fmt.column.label, fmt.cell_text(row)) for fmt in formats if fmt.cell_text(row) != MISSING]


def row_metrics_text(row: Mapping[str, Any], formats: Sequence[ColumnFormat]) -> str:
    """The row's metrics in one line ("FID 5.3 ± 1.1, IS 9.63 ± 0.13"), "failed" for a failed
    row, MISSING when it has none."""
    if row.get("status") == FAILED:
        return "failed"
    return ", ".join(f"{label} {text}" for label, text in row_metrics(row, formats)) or MISSING


def row_caption(row: Mapping[str, Any], formats: Sequence[ColumnFormat]) -> str:
    """"edm · heun · NFE 35 — FID 5.3 ± 1.1, ...": a sample grid's caption."""
    return f"{row_label(row)} — {row_metrics_text(row, formats)}"


def sampler_label(row: Mapping[str, Any]) -> str:
    return str(row.get("sampler_label") or row["sampler"])


def _column_marks(members: Sequence[Mapping[str, Any]], fmt: ColumnFormat, z: float) -> list[str | None]:
    if fmt.column.direction is None:
        return [None] * len(members)
    return rank_marks([fmt.measurement(row) for row in members], fmt.column.direction, z)


def _table_row(row: Mapping[str, Any], formats: Sequence[ColumnFormat], marks: Sequence[str | None],
               unit: TimeUnit) -> dict[str, Any]:
    return {
        "row_id": row["row_id"],
        "model": row["model"],
        "sampler": sampler_label(row),
        "nfe": row["nfe"],
        "metrics": [{"text": fmt.cell_text(row), "mark": mark, "no_se": fmt.lacks_se(row)}
                    for fmt, mark in zip(formats, marks)],
        "seconds": unit.format(row.get("seconds_per_sample")),
        "samples": format(row["num_samples"], ",") if is_finite_number(row.get("num_samples")) else MISSING,
        "error": (row.get("error") or "no error recorded") if row.get("status") == FAILED else None,
    }


def _family_rank(family: Any) -> tuple[int, str]:
    family = str(family)
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, float]:
    nfe = row["nfe"]
    return str(row["model"]), sampler_label(row), float(nfe) if is_finite_number(nfe) else math.inf

