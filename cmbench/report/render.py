"""Rendering a run directory into one self-contained HTML report.

A run directory holds ``results.jsonl`` (one result row per line) and ``run.json`` (run
metadata). ``render_report`` turns them into ``report.html``: a comparison table per model
family, an FID-vs-NFE plot, the sample grids, and the run's provenance. Everything the page
needs is inside the file (inline CSS, images as ``data:`` URIs), so it can be mailed, archived
as a CI artifact or opened offline. Every string from the data goes through jinja2's
autoescaping: model names and options are user input.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from cmbench.atomic import atomic_write_text
from cmbench.compare import RUN_BASELINE, CompareError, compare, load_side, resolve_settings, table_cells
from cmbench.results import FAILED, RESULTS_JSONL, read_rows
from cmbench.report.paper import paper_section
from cmbench.report.plots import fid_vs_nfe_png, search_trace_png
from cmbench.tuning.schedule_file import read_schedule


RUN_FILE = "run.json"
SCHEDULES_DIR = "schedules"
REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"

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
MISSING = "—"


@dataclass(frozen=True)
class MetricColumn:
    """A metric the comparison table can show: result-row key, header, Python format spec.

    ``spread_key`` names a companion value shown as ``value ± spread`` (Inception Score's
    standard deviation over splits; KID's over subsets).
    """

    key: str
    label: str
    spec: str
    spread_key: str | None = None


METRIC_COLUMNS: tuple[MetricColumn, ...] = (
    MetricColumn("fid", "FID", ".3f"),
    MetricColumn("sfid", "sFID", ".3f"),
    MetricColumn("is_mean", "IS", ".2f", spread_key="is_std"),
    MetricColumn("kid", "KID", ".4g", spread_key="kid_std"),
    MetricColumn("precision", "Precision", ".3f"),
    MetricColumn("recall", "Recall", ".3f"),
    MetricColumn("density", "Density", ".3f"),
    MetricColumn("coverage", "Coverage", ".3f"),
    MetricColumn("bpd", "NLL (bits/dim)", ".3f"),
)
"""Metrics in table order. A column appears when at least one row has a number for it."""

SECONDS_SPEC = ".4g"
SCHEDULE_SPEC = ".4g"

_TABLE_KEYS = frozenset(
    {"row_id", "model", "family", "sampler", "sampler_label", "nfe", "num_samples", "seconds_per_sample"}
    | {column.key for column in METRIC_COLUMNS}
    | {column.spread_key for column in METRIC_COLUMNS if column.spread_key}
)
_DETAIL_KEYS = frozenset({"grid", "schedule", "options"})


def render_report(run_dir: Path | str, *, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` atomically from the run's results and metadata; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    schedules = tuned_schedules(run_dir)
    results = run_dir / RESULTS_JSONL
    rows = sort_rows(read_rows(results)) if results.exists() or not schedules else []
    metadata, metadata_note = load_run_metadata(run_dir / RUN_FILE)
    suite = _suite_name(metadata, rows, run_dir)
    columns = with_likelihood_protocol(present_metric_columns(rows), rows)
    fid_plot = fid_vs_nfe_png(rows)

    context = {
        "title": title or f"cmbench report: {suite}",
        "suite": suite,
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "started_at": (metadata or {}).get("started_at"),
        "description": (metadata or {}).get("description") or "",
        "profile": (metadata or {}).get("profile"),
        "counts": _counts(rows),
        "metric_headers": [column.label for column in columns],
        "tables": comparison_tables(rows, columns),
        "fid_plot": _png_data_uri(fid_plot) if fid_plot is not None else None,
        "grids": [grid_figure(run_dir, row) for row in rows],
        "metadata": metadata,
        "metadata_note": metadata_note,
        "details": [row_details(row) for row in rows],
        "schedules": schedules,
        "regression": regression_section(run_dir) if rows else None,
        "paper": paper_section(metadata, rows, with_likelihood_protocol(METRIC_COLUMNS, rows)),
    }
    html = _environment().get_template(TEMPLATE).render(context)
    report = run_dir / REPORT_FILE
    atomic_write_text(report, html)
    return report


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
        "rows": [{"row_id": r.row_id, "label": f"{r.model} · {r.sampler} · NFE {r.nfe}",
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
            "rows": [{"nfe": e["nfe"], "sigmas": ", ".join(format(x, SCHEDULE_SPEC) for x in e["sigmas"]),
                      "indices": ", ".join(map(str, e["indices"])) if e.get("indices") else MISSING,
                      "value": format_number(e.get("value"), ".3f"), "evaluations": e.get("evaluations")}
                     for e in document["schedules"]],
            "plot": _png_data_uri(plot) if plot is not None else None,
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


def sort_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows in report order: family (FAMILY_ORDER, then others by name), model, sampler label, NFE."""
    return sorted(rows, key=lambda row: (_family_rank(row["family"]), *_row_key(row)))


def present_metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[MetricColumn]:
    """The METRIC_COLUMNS for which at least one row holds a number."""
    return [column for column in METRIC_COLUMNS if any(_is_number(row.get(column.key)) for row in rows)]


def with_likelihood_protocol(columns: Sequence[MetricColumn], rows: Sequence[Mapping[str, Any]]) -> list[MetricColumn]:
    """``columns`` with the bits/dim label naming the likelihood protocol of the rows' ``bpd``
    (``exact`` or ``ctm_eval_bpd``, docs/likelihood.md); rows from before protocols were exact."""
    protocols = sorted({str(row.get("bpd_protocol") or "exact") for row in rows if _is_number(row.get("bpd"))})
    if not protocols:
        return list(columns)
    return [replace(c, label=f"{c.label} [{', '.join(protocols)}]") if c.key == "bpd" else c for c in columns]


def comparison_tables(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> list[dict[str, Any]]:
    """One table per family, rows sorted by (model, sampler_label, nfe), the best (lowest) FID marked."""
    families: dict[str, list[Mapping[str, Any]]] = {}
    for row in sort_rows(rows):
        families.setdefault(str(row["family"]), []).append(row)
    tables = []
    for family, members in families.items():
        fids = [row["fid"] for row in members if _is_number(row.get("fid")) and math.isfinite(row["fid"])]
        best_fid = min(fids) if fids else None
        tables.append(
            {
                "family": family,
                "name": FAMILY_NAMES.get(family, family),
                "rows": [_table_row(row, columns, best_fid) for row in members],
            }
        )
    return tables


def grid_figure(run_dir: Path, row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's sample grid as an inline PNG, or a note saying why it cannot be shown."""
    figure: dict[str, Any] = {"row_id": row["row_id"], "src": None, "note": None}
    grid = row.get("grid")
    if not grid:
        figure["note"] = "No sample grid recorded for this row."
        return figure
    path = (run_dir / str(grid)).resolve()
    if not path.is_relative_to(run_dir.resolve()):
        figure["note"] = f"Grid path {grid} lies outside the run directory; not included."
    elif not path.is_file():
        figure["note"] = f"Grid image {grid} not found."
    else:
        data = path.read_bytes()
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            figure["src"] = _png_data_uri(data)
        else:
            figure["note"] = f"Grid image {grid} is not a PNG file."
    return figure


def row_details(row: Mapping[str, Any]) -> dict[str, Any]:
    """Per-row provenance: the σ schedule (4 significant digits), the options, and every other key."""
    schedule = row.get("schedule")
    if isinstance(schedule, list) and all(_is_number(sigma) for sigma in schedule):
        schedule_text = ", ".join(format(sigma, SCHEDULE_SPEC) for sigma in schedule)
    else:
        schedule_text = None if schedule is None else json.dumps(schedule, default=str)
    other = {key: value for key, value in row.items() if key not in _TABLE_KEYS | _DETAIL_KEYS}
    return {
        "row_id": row["row_id"],
        "label": f"{row['model']} · {_sampler_label(row)} · NFE {row['nfe']}",
        "schedule": schedule_text,
        "schedule_length": len(schedule) if isinstance(schedule, list) else None,
        "options": row.get("options"),
        "other": other,
    }


def format_number(value: Any, spec: str) -> str:
    """Format a number with ``spec``; missing is "—", anything else non-numeric is shown as text."""
    if value is None:
        return MISSING
    if _is_number(value):
        return format(value, spec)
    return str(value)


def _table_row(row: Mapping[str, Any], columns: Sequence[MetricColumn], best_fid: float | None) -> dict[str, Any]:
    metrics = []
    for column in columns:
        text = format_number(row.get(column.key), column.spec)
        spread = row.get(column.spread_key) if column.spread_key else None
        if text != MISSING and _is_number(spread):
            text = f"{text} ± {format(spread, column.spec)}"
        best = column.key == "fid" and best_fid is not None and row.get("fid") == best_fid
        metrics.append({"text": text, "best": best})
    return {
        "row_id": row["row_id"],
        "model": row["model"],
        "sampler": _sampler_label(row),
        "nfe": row["nfe"],
        "metrics": metrics,
        "seconds": format_number(row.get("seconds_per_sample"), SECONDS_SPEC),
        "samples": format_number(row.get("num_samples"), ","),
        "error": row.get("error") if row.get("status") == FAILED else None,
    }


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {
        "rows": len(rows),
        "models": len({str(row["model"]) for row in rows}),
        "families": len({str(row["family"]) for row in rows}),
        "with_fid": sum(_is_number(row.get("fid")) for row in rows),
    }


def _suite_name(metadata: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]], run_dir: Path) -> str:
    """The suite named in run.json, else the one the rows share, else the directory's name."""
    if metadata and metadata.get("suite"):
        return str(metadata["suite"])
    suites = {str(row["suite"]) for row in rows if row.get("suite")}
    return suites.pop() if len(suites) == 1 else run_dir.resolve().name


def _family_rank(family: Any) -> tuple[int, str]:
    family = str(family)
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, float]:
    nfe = row["nfe"]
    return str(row["model"]), _sampler_label(row), float(nfe) if _is_number(nfe) else math.inf


def _sampler_label(row: Mapping[str, Any]) -> str:
    return str(row.get("sampler_label") or row["sampler"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


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
