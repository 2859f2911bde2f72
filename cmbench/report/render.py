"""Rendering a run directory into one self-contained HTML report.

A run directory holds ``results.jsonl`` (one result row per line) and ``run.json`` (run
metadata). ``render_report`` turns them into ``report.html``: the suite's description, a
comparison table per model family (value ± standard error, best marked only beyond noise), plots
of every computed metric against NFE and against time per sample, the sample grids captioned with
their row's numbers, the zero-shot editing rows by task (:mod:`cmbench.report.editing`; the
generation sections never see them), and the run's provenance. Everything the page needs is inside the file
(inline CSS, images as ``data:`` URIs), so it can be mailed, archived as a CI artifact or opened
offline; it lays out at phone width (tables scroll sideways in their own box, plots stack).
Every string from the data goes through jinja2's autoescaping (model names and options are user
input) and loses the absolute paths of the machine that ran it (:mod:`cmbench.report.provenance`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from cmbench.atomic import atomic_write_text
from cmbench.compare import DEFAULT_Z, RUN_BASELINE, CompareError, compare, load_side, resolve_settings, table_cells
from cmbench.report.editing import edit_rows_in_report_order, editing_section, split_edit_rows
from cmbench.report.inline_images import inline_grid
from cmbench.report.numbers import MISSING, format_fixed, format_general, is_finite_number
from cmbench.report.paper import paper_section
from cmbench.report.plot_section import plot_section
from cmbench.report.plots import png_data_uri, search_trace_png
from cmbench.report.provenance import computed_metric_options, metrics_of_row, strip_machine_paths
from cmbench.report.tables import (METRIC_COLUMNS, TABLE_KEYS, ColumnFormat, column_formats, comparison_tables,
                                   metric_header, present_metric_columns, report_time_unit, row_caption, row_label,
                                   row_metrics, sort_rows, with_likelihood_protocol)
from cmbench.results import FAILED, RESULTS_JSONL, read_rows
from cmbench.tuning.schedule_file import read_schedule


RUN_FILE = "run.json"
SCHEDULES_DIR = "schedules"
REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
SCHEDULE_DIGITS = 4

_DETAIL_KEYS = frozenset({"grid", "schedule", "options", "config"})  # config: the fingerprint's input, for resume
_HEADER_KEYS = frozenset({"description"})  # run.json keys the page shows above the metadata section


def render_report(run_dir: Path | str, *, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` atomically from the run's results and metadata; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    schedules = tuned_schedules(run_dir)
    results = run_dir / RESULTS_JSONL
    generation, edits = split_edit_rows(read_rows(results) if results.exists() or not schedules else [])
    rows = sort_rows(generation)
    metadata, metadata_note = load_run_metadata(run_dir / RUN_FILE)
    suite = _suite_name(metadata, rows + edits, run_dir)
    formats = column_formats(rows, with_likelihood_protocol(present_metric_columns(rows, METRIC_COLUMNS), rows))
    unit = report_time_unit(rows)
    z = ranking_z(metadata)

    context = {
        "title": title or f"cmbench report: {suite}",
        "suite": suite,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "started_at": (metadata or {}).get("started_at"),
        "description": (metadata or {}).get("description") or "",
        "profile": (metadata or {}).get("profile"),
        "counts": _counts(rows),
        "metric_headers": [metric_header(fmt) for fmt in formats],
        "time_unit": unit.symbol,
        "tables": comparison_tables(rows, formats, unit, z),
        "legend": table_legend(metadata, formats, z),
        "plots": plot_section(rows, formats, unit),
        "grids": [grid_figure(run_dir, row, formats) for row in rows],
        "editing": editing_section(run_dir, edits, z),
        "metadata": displayed_metadata(metadata),
        "metadata_note": metadata_note,
        "details": [row_details(row) for row in rows + edit_rows_in_report_order(edits)],
        "schedules": schedules,
        "regression": regression_section(run_dir) if rows or edits else None,
        "paper": paper_section(metadata, rows, column_formats(rows, with_likelihood_protocol(METRIC_COLUMNS, rows))),
    }
    html = _environment().get_template(TEMPLATE).render(strip_machine_paths(context, run_dir))
    report = run_dir / REPORT_FILE
    atomic_write_text(report, html)
    return report


def ranking_z(metadata: Mapping[str, Any] | None) -> float:
    """The z a "best" must clear: the suite's ``regression.z`` (what ``cmbench compare`` uses to
    call a change real), else compare's default."""
    regression = (metadata or {}).get("regression")
    z = regression.get("z") if isinstance(regression, Mapping) else None
    return float(z) if is_finite_number(z) and z > 0 else DEFAULT_Z


def table_legend(metadata: Mapping[str, Any] | None, formats: Sequence[ColumnFormat], z: float) -> dict[str, Any]:
    """What the table's ±, marks and dashes mean, with the run's uncertainty method and z."""
    uncertainty = (metadata or {}).get("uncertainty") or {}
    resamples = uncertainty.get("bootstrap") if isinstance(uncertainty, Mapping) else None
    if is_finite_number(resamples) and resamples > 0:
        errors = (f"± one standard error, estimated by a bootstrap over the samples ({resamples:g} resamples, "
                  f"seed {uncertainty.get('seed', 0)})")
    else:
        errors = "± one standard error, where the row records one"
    if any(fmt.column.key == "bpd" for fmt in formats):
        errors += "; bits/dim ± the likelihood estimate's standard error over the test images"
    return {"errors": errors, "z": f"{z:g}"}


def regression_section(run_dir: Path) -> dict[str, Any] | None:
    """The rows against the run folder's ``baseline.json`` (written by ``cmbench run --baseline``):
    verdicts per row and metric, or a note saying why there are none; None without a baseline."""
    path = run_dir / RUN_BASELINE
    if not path.is_file():
        return None
    try:
        new, baseline = load_side(run_dir), load_side(path)
        comparison = compare(new, baseline, resolve_settings(new, baseline))
    except CompareError as error:
        return {"note": str(error), "baseline": str(path)}
    settings = comparison.settings
    thresholds = ", ".join(f"{m} {t.describe()}" for m, t in settings.thresholds.items()) or "none"
    return {
        "note": None,
        "baseline": f"{baseline.origin or baseline.source}" + (f", created {baseline.created_at}" if baseline.created_at else ""),
        "summary": comparison.summary(),
        "regressed": comparison.regressed,
        "settings": f"z = {settings.z:g} · thresholds: {thresholds} (from {settings.source})",
        "rows": [{"row_id": r.row_id, "label": row_label({"model": r.model, "sampler": r.sampler, "nfe": r.nfe}),
                  "metrics": [table_cells(m) for m in r.metrics]} for r in comparison.rows],
        "only_new": comparison.only_new,
        "only_baseline": comparison.only_baseline,
        "notes": comparison.notes,
    }


def tuned_schedules(run_dir: Path) -> list[dict[str, Any]]:
    """Each ``schedules/*.json`` of the run as a report section: its search, the points found per
    NFE and a plot of the search trace (or a note saying why the file cannot be shown)."""
    sections = []
    for path in sorted((run_dir / SCHEDULES_DIR).glob("*.json")):
        try:
            document = read_schedule(path)
        except (ValueError, OSError) as error:
            sections.append({"name": path.stem, "note": str(error)})
            continue
        search, objective = document.get("search", {}), document["objective"]
        plot = search_trace_png(document)
        sections.append({
            "name": document["name"], "note": None,
            "summary": (f"{document['model'].get('name')} ({document['model'].get('family')}) · {document['sampler']}"
                        f" {document.get('sampler_options') or ''} · {search.get('method')} search over "
                        f"{search.get('space')}"
                        + (f" ({search['karras_steps']} points)" if search.get("karras_steps") else "")
                        + f" · {objective['metric']} ({objective.get('direction')}) on {objective.get('num_samples')} "
                        f"samples, seeds from {objective.get('seed_start')} · {document.get('evaluations')} evaluations"),
            "rows": [{"nfe": e["nfe"], "sigmas": ", ".join(format_general(x, SCHEDULE_DIGITS) for x in e["sigmas"]),
                      "indices": ", ".join(map(str, e["indices"])) if e.get("indices") else MISSING,
                      "value": format_fixed(e.get("value"), 3), "evaluations": e.get("evaluations")}
                     for e in document["schedules"]],
            "plot": png_data_uri(plot) if plot is not None else None,
        })
    return sections


def load_run_metadata(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Read run.json; return (metadata, None), or (None, a note saying why there is none)."""
    if not path.is_file():
        return None, f"No {path.name} in the run directory; run metadata is unavailable."
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{path.name} could not be read: {error}"
    if not isinstance(metadata, dict):
        return None, f"{path.name} holds a {type(metadata).__name__}, not a JSON object."
    return metadata, None


def displayed_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """run.json as the metadata section shows it: without what the page shows above (the
    description) and with the options of the computed metrics only."""
    if metadata is None:
        return None
    shown = {key: value for key, value in metadata.items() if key not in _HEADER_KEYS}
    if "metric_options" in shown and isinstance(metadata.get("metrics"), list):
        shown["metric_options"] = computed_metric_options(shown["metric_options"], map(str, metadata["metrics"]))
    return shown


def grid_figure(run_dir: Path, row: Mapping[str, Any], formats: Sequence[ColumnFormat]) -> dict[str, Any]:
    """The row's sample grid as an inline PNG (or a note saying why it cannot be shown), captioned
    with the row's label and metrics as the table shows them."""
    figure: dict[str, Any] = {"row_id": row["row_id"], "src": None, "note": None, "label": row_label(row),
                              "failed": row.get("status") == FAILED, "metrics": row_metrics(row, formats),
                              "caption": row_caption(row, formats)}
    grid = row.get("grid")
    if not grid:
        figure["note"] = "No sample grid recorded for this row."
        return figure
    image = inline_grid(run_dir, str(grid))
    figure["src"], figure["note"] = image.src, image.note
    return figure


def row_details(row: Mapping[str, Any]) -> dict[str, Any]:
    """Per-row provenance: the σ schedule (4 significant digits), the options, and every other key
    (metric options reduced to those of the row's metrics)."""
    schedule = row.get("schedule")
    if isinstance(schedule, list) and all(is_finite_number(sigma) for sigma in schedule):
        schedule_text = ", ".join(format_general(sigma, SCHEDULE_DIGITS) for sigma in schedule)
    else:
        schedule_text = None if schedule is None else json.dumps(schedule, default=str)
    other = {key: value for key, value in row.items() if key not in TABLE_KEYS | _DETAIL_KEYS}
    if "metric_options" in other:
        other["metric_options"] = computed_metric_options(other["metric_options"], metrics_of_row(row))
    return {
        "row_id": row["row_id"],
        "label": row_label(row),
        "schedule": schedule_text,
        "schedule_length": len(schedule) if isinstance(schedule, list) else None,
        "options": row.get("options"),
        "other": other,
    }


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {
        "rows": len(rows),
        "models": len({str(row["model"]) for row in rows}),
        "families": len({str(row["family"]) for row in rows}),
        "with_fid": sum(is_finite_number(row.get("fid")) for row in rows),
    }


def _suite_name(metadata: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]], run_dir: Path) -> str:
    """The suite named in run.json, else the one the rows share, else the directory's name."""
    if metadata and metadata.get("suite"):
        return str(metadata["suite"])
    suites = {str(row["suite"]) for row in rows if row.get("suite")}
    return suites.pop() if len(suites) == 1 else run_dir.resolve().name


def _json_text(value: Any) -> str:
    """JSON text for metadata values that are not mappings: one line when flat, indented when nested."""
    nested = isinstance(value, (list, tuple)) and any(isinstance(item, (dict, list, tuple)) for item in value)
    return json.dumps(value, indent=1 if nested else None, ensure_ascii=False, default=str)


def _environment() -> jinja2.Environment:
    """A fresh jinja2 environment over the package's templates, autoescaping every template."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cmbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["json_text"] = _json_text
    return environment
