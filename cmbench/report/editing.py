"""The report's "Zero-shot editing" section: one sub-section per editing task (CM Algorithm 4 and
its relatives, :mod:`cmbench.editing`), in the order the results file first names them.

Editing rows (``kind: edit``) are stored beside the generation rows but are a different
experiment: real images degraded by a task, restored by a sampler with a replacement step, scored
against each image's ground truth (PSNR, SSIM, LPIPS, the data-consistency residual) and, as a set,
against the reference (the suite's metrics). So the generation sections never see them, and each
task gets its own table (ranked within the task, as a family's table is), a PSNR-against-NFE plot,
the task's ground-truth and degraded-input grids once, and every row's output grid. A column keeps
one precision across the whole section (two significant digits of its typical standard error).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cmbench.metrics import se_column
from cmbench.report.inline_images import inline_grid
from cmbench.report.numbers import MISSING, is_finite_number
from cmbench.report.plot_section import metric_figure
from cmbench.report.plots import SeriesStyle, configuration_label, metric_series, nfe_axis, series_styles
from cmbench.report.tables import (EDIT_METRIC_COLUMNS, METRIC_COLUMNS, ColumnFormat, column_formats,
                                   metric_header, present_metric_columns, ranked_table_rows, report_time_unit,
                                   row_label, sort_rows)
from cmbench.results import FAILED

EDIT_KIND = "edit"
"""The ``kind`` of an editing row: :data:`cmbench.editing.run.EDIT_KIND`, spelled out here so that
rendering a report does not import the editing machinery (samplers, models, torch)."""

PLOTTED_KEY = "psnr"
TASK_INPUTS = (("grid_truth", "Ground truth"), ("grid_degraded", "Degraded input"))
"""The grids every row of a task shares (same images, same seeds), shown once per task."""


def is_edit_row(row: Mapping[str, Any]) -> bool:
    return row.get("kind") == EDIT_KIND


def split_edit_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(generation rows, editing rows), each in the order given."""
    generation, editing = [], []
    for row in rows:
        (editing if is_edit_row(row) else generation).append(row)
    return generation, editing


def rows_by_task(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Editing rows grouped by task, tasks in order of first appearance, rows in report order
    (:func:`cmbench.report.tables.sort_rows`: family, model, sampler, NFE)."""
    tasks: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        tasks.setdefault(str(row.get("task")), []).append(row)
    return {task: sort_rows(members) for task, members in tasks.items()}


def edit_rows_in_report_order(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Editing rows as the section lists them: by task, then in report order."""
    return [row for members in rows_by_task(rows).values() for row in members]


def editing_section(run_dir: Path, rows: Sequence[Mapping[str, Any]], z: float) -> dict[str, Any] | None:
    """``{"counts", "legend", "tasks"}`` for the template; None without editing rows. ``z`` is the
    margin a "best" must clear, as in the comparison tables."""
    if not rows:
        return None
    formats = column_formats(rows, present_metric_columns(rows, EDIT_METRIC_COLUMNS + METRIC_COLUMNS))
    styles = series_styles(configuration_label(row) for row in rows)
    tasks = rows_by_task(rows)
    plotted = metric_series(rows, PLOTTED_KEY, se_column(PLOTTED_KEY), nfe_axis())
    return {
        "counts": {"rows": len(rows), "tasks": len(tasks)},
        "legend": [{"label": s.label, "color": s.color, "glyph": s.glyph}
                   for s in styles.values() if s.label in plotted],
        "tasks": [task_section(run_dir, task, members, formats, styles, z) for task, members in tasks.items()],
    }


def task_section(run_dir: Path, task: str, rows: Sequence[Mapping[str, Any]], formats: Sequence[ColumnFormat],
                 styles: Mapping[str, SeriesStyle], z: float) -> dict[str, Any]:
    """One task: what it is (kind, parameters, data, each sampler's editing algorithm), its table
    with the columns its rows have, its PSNR plot, and its input and output grids."""
    shown = [fmt for fmt in formats if any(is_finite_number(row.get(fmt.column.key)) for row in rows)]
    described = next((row for row in rows if row.get("task_kind")), {})
    return {
        "name": task,
        "kind": str(described.get("task_kind") or "kind not recorded"),
        "params": parameters_text(described.get("task_params")),
        "data": _distinct(row.get("edit_data") for row in rows),
        "algorithms": [{"sampler": sampler, "text": text} for sampler, text in
                       dict.fromkeys((str(row["sampler"]), str(row["edit_algorithm"])) for row in rows
                                     if row.get("edit_algorithm"))],
        "headers": [metric_header(fmt) for fmt in shown],
        "rows": ranked_table_rows(rows, shown, report_time_unit(rows), z),
        "plot": psnr_plot(task, rows, formats, styles),
        "inputs": task_input_figures(run_dir, rows),
        "outputs": [output_figure(run_dir, row, formats) for row in rows],
    }


def parameters_text(params: Any) -> str:
    """A task's parameters as ``mask=box, size=0.5`` (JSON for values that are not text)."""
    if not isinstance(params, Mapping):
        return "" if params is None else json.dumps(params, default=str)
    return ", ".join(f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}"
                     for key, value in params.items())


def task_input_figures(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The task's ground-truth and degraded-input grids, from the first row that records each."""
    figures = []
    for key, label in TASK_INPUTS:
        grid = next((row[key] for row in rows if row.get(key)), None)
        image = inline_grid(run_dir, str(grid)) if grid else None
        figures.append({"label": label, "src": image.src if image else None,
                        "note": image.note if image else f"No {label.lower()} grid recorded for this task."})
    return figures


def output_figure(run_dir: Path, row: Mapping[str, Any], formats: Sequence[ColumnFormat]) -> dict[str, Any]:
    """A row's output grid captioned with its model, sampler, NFE and PSNR as the table writes it."""
    psnr = _plotted_format(formats)
    grid = row.get("grid")
    image = inline_grid(run_dir, str(grid)) if grid else None
    return {
        "row_id": row["row_id"], "label": row_label(row), "failed": row.get("status") == FAILED,
        "metrics": [(psnr.column.label, psnr.cell_text(row))] if psnr and psnr.cell_text(row) != MISSING else [],
        "src": image.src if image else None,
        "note": image.note if image else "No output grid recorded for this row.",
    }


def psnr_plot(task: str, rows: Sequence[Mapping[str, Any]], formats: Sequence[ColumnFormat],
              styles: Mapping[str, SeriesStyle]) -> dict[str, str] | None:
    """PSNR against NFE, one line per model and sampler (styled as the section's legend), with
    standard-error bars; None when no row of the task has a PSNR."""
    fmt = _plotted_format(formats)
    if fmt is None:
        return None
    return metric_figure(rows, fmt, nfe_axis(), styles, "vs NFE", "function evaluations", prefix=f"{task}: ")


def _plotted_format(formats: Sequence[ColumnFormat]) -> ColumnFormat | None:
    return next((fmt for fmt in formats if fmt.column.key == PLOTTED_KEY), None)


def _distinct(values: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(value) for value in values if value))
