"""Rendering a run directory into one self-contained HTML report.

A run directory holds ``results.jsonl`` (one result row per line) and ``run.json`` (run
metadata). ``render_report`` turns them into ``report.html``: the suite's description, a
comparison table per model family (value ± standard error, best marked only beyond noise), plots
of every computed metric against NFE and against time per sample, the sample grids captioned with
their row's numbers, the tuned schedules beside the default schedule on held-out seeds (a worse one
flagged), the zero-shot editing rows by task (:mod:`cmbench.report.editing`; the
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
from cmbench.report.numbers import MISSING, decimals_for_errors, format_general, format_value_se, is_finite_number
from cmbench.report.paper import paper_section
from cmbench.report.plot_section import plot_section
from cmbench.report.plots import png_data_uri, search_trace_png
from cmbench.report.provenance import computed_metric_options, metrics_of_row, strip_machine_paths
from cmbench.report.tables import (METRIC_COLUMNS, TABLE_KEYS, ColumnFormat, column_formats, comparison_tables,
                                   metric_header, present_metric_columns, report_time_unit, row_caption, row_label,
                                   row_metrics, sort_rows, with_likelihood_protocol)
from cmbench.results import FAILED, RESULTS_JSONL, read_rows
from cmbench.tuning.schedule_file import read_schedule
from cmbench.tuning.validation import VERDICTS


RUN_FILE = "run.json"
SCHEDULES_DIR = "schedules"
REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
SCHEDULE_DIGITS = 4
SCHEDULE_VALUE_DECIMALS = 3  # objective values of a schedule file without standard errors

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
    """Each ``schedules/*.json`` of the run as a report section (:func:`schedule_section`), or a
    note saying why the file cannot be shown."""
    sections = []
    for path in sorted((run_dir / SCHEDULES_DIR).glob("*.json")):
        try:
            document = read_schedule(path)
        except (ValueError, OSError) as error:
            sections.append({"name": path.stem, "note": str(error)})
            continue
        sections.append(schedule_section(document))
    return sections


def schedule_section(document: Mapping[str, Any]) -> dict[str, Any]:
    """One schedule document as the report shows it: what was searched and what it cost, its
    table and warnings (:func:`schedule_table`) and the plot of its search trace."""
    plot = search_trace_png(document)
    return {
        "name": document["name"], "note": None,
        "summary": search_summary(document),
        "budget_exhausted": budget_exhausted(document),
        "objective": (f"{document['objective'].get('metric')} on {document['objective'].get('num_samples')} "
                      "proxy samples"),
        "validation": validation_summary(document.get("validation")),
        **schedule_table(document),
        "plot": png_data_uri(plot) if plot is not None else None,
    }


def schedule_table(document: Mapping[str, Any]) -> dict[str, Any]:
    """The points found per NFE with their proxy value ± se, evaluations and cost, and, when the
    file records a held-out validation, each NFE's tuned and default values, their paired
    difference and the verdict, a ``worse`` one also as a warning line (files from before
    validation, standard errors or costs: those cells MISSING). All values share one precision,
    two significant digits of their median standard error."""
    validation = document.get("validation") if isinstance(document.get("validation"), Mapping) else None
    checks = {v.get("nfe"): v for v in _mapping(validation).get("schedules") or [] if isinstance(v, Mapping)}
    noisy = _mapping(document.get("search")).get("resamples") != 0  # resamples: 0 records every se as a bare 0
    errors = [e.get("se") for e in document["schedules"]] + [v.get(key) for v in checks.values()
                                                            for key in ("se", "default_se", "difference_se")]
    decimals = decimals_for_errors(errors if noisy else [], SCHEDULE_VALUE_DECIMALS)
    rows = [schedule_row(entry, checks.get(entry["nfe"]), decimals, noisy) for entry in document["schedules"]]
    return {
        "rows": rows,
        "warnings": [worse_warning(document["objective"], validation, check, decimals, noisy)
                     for check in checks.values() if check.get("verdict") == "worse"],
        "validated": validation is not None,
        "has_cost": any(row["cost"] != MISSING for row in rows),
    }


def search_summary(document: Mapping[str, Any]) -> list[str]:
    """The parts of a schedule section's summary line: model and sampler, the search (method,
    refinement, space), its sample ladder, the objective and its proxy seeds, and the cost."""
    search, objective = _mapping(document.get("search")), document["objective"]
    ladder = _mapping(search.get("samples"))
    parts = [f"{document['model'].get('name')} ({document['model'].get('family')}) · {document['sampler']}"
             + (f" {document['sampler_options']}" if document.get("sampler_options") else ""),
             f"{search.get('method')} search" + (" with joint refinement" if search.get("refine") else "")
             + f" over {search.get('space')}"
             + (f" ({search['karras_steps']} points)" if search.get("karras_steps") else "")]
    if ladder.get("race"):
        parts.append("samples " + " → ".join(map(str, ladder["race"]))
                     + (f", ties on {' → '.join(map(str, ladder['tie_break']))}" if ladder.get("tie_break") else ""))
    parts.append(f"objective {objective.get('metric')} ({objective.get('direction')}) on "
                 f"{objective.get('num_samples')} proxy samples, seeds from {objective.get('seed_start')}")
    parts.append(cost_summary(document))
    return parts


def cost_summary(document: Mapping[str, Any]) -> str:
    """What the search spent: its evaluation count, their cost in proxy-sample equivalents and
    seconds, and the budget when it had one (older files: the count and seconds only)."""
    cost = _mapping(document.get("cost"))
    seconds = cost.get("seconds", document.get("seconds"))
    text = f"{document.get('evaluations')} evaluations"
    if is_finite_number(cost.get("evaluations")):
        text += f" costing {format_general(cost['evaluations'], SCHEDULE_DIGITS)} proxy-sample equivalents"
    if is_finite_number(seconds):
        text += f" in {format_general(seconds, 3)} s"
    budget = _mapping(cost.get("budget"))
    caps = [f"{format_general(budget[key], SCHEDULE_DIGITS)} {unit}"
            for key, unit in (("evaluations", "evaluations"), ("seconds", "s")) if is_finite_number(budget.get(key))]
    return text + (f" (budget {', '.join(caps)})" if caps else "")


def budget_exhausted(document: Mapping[str, Any]) -> bool:
    """Whether the search stopped because its budget was spent (older files: never)."""
    return _mapping(document.get("cost")).get("budget_exhausted") is True


def validation_summary(validation: Any) -> str:
    """How the schedules were checked on held-out seeds, or that they were not."""
    if not isinstance(validation, Mapping):
        return ("Not validated on held-out seeds: the values are on the proxy samples the search chose from, "
                "which flatter the chosen schedules.")
    return (f"Validated on {validation.get('num_samples')} held-out samples (seeds from "
            f"{validation.get('seed_start')}), disjoint from the proxy seeds: each tuned schedule beside the sampler's "
            f"default Karras schedule on the same seeds; better or worse means beyond "
            f"{format_general(validation.get('z'), 3)} paired standard errors of their difference, else tied. "
            "NFE 1 has no free point to validate.")


def schedule_row(entry: Mapping[str, Any], check: Mapping[str, Any] | None, decimals: int,
                 noisy: bool) -> dict[str, Any]:
    """One NFE of a schedule section: its points, proxy value ± se, evaluations and cost, and its
    held-out check (MISSING cells without one)."""
    def value_se(value: Any, se: Any, *, difference: bool = False) -> str:
        return (format_difference if difference else format_value_se)(value, se if noisy else None, decimals)

    check = check or {}
    verdict = check.get("verdict")
    return {
        "nfe": entry["nfe"], "sigmas": ", ".join(format_general(x, SCHEDULE_DIGITS) for x in entry["sigmas"]),
        "indices": ", ".join(map(str, entry["indices"])) if entry.get("indices") else MISSING,
        "value": value_se(entry.get("value"), entry.get("se")), "evaluations": entry.get("evaluations"),
        "cost": format_general(entry.get("cost"), SCHEDULE_DIGITS),
        "held_out": value_se(check.get("value"), check.get("se")),
        "default": value_se(check.get("default_value"), check.get("default_se")),
        "difference": value_se(check.get("difference"), check.get("difference_se"), difference=True),
        "verdict": verdict if verdict in VERDICTS.values() else MISSING,
    }


def worse_warning(objective: Mapping[str, Any], validation: Mapping[str, Any], check: Mapping[str, Any],
                  decimals: int, noisy: bool) -> str:
    """The line that flags a tuned schedule the held-out seeds judged worse than the default."""
    where = (f"NFE {check.get('nfe')}: the tuned schedule is worse than the default Karras schedule on "
             f"{validation.get('num_samples')} held-out samples")
    z, difference = format_general(validation.get("z"), 3), check.get("difference")
    se = check.get("difference_se") if noisy else None
    beyond = f"more than {z} paired standard errors" if noisy else "without a noise estimate: the job had resamples: 0"
    if objective.get("combine") == "lexicographic":
        first = (objective.get("columns") or ["the first column"])[0]
        return (f"{where} ({objective.get('metric')}, column by column, {beyond}; {first}: "
                f"tuned − default = {format_difference(difference, se, decimals)}).")
    size = abs(difference) if is_finite_number(difference) else difference
    return f"{where} by {format_value_se(size, se, decimals)} {objective.get('metric')} ({beyond})."


def format_difference(value: Any, se: Any, decimals: int) -> str:
    """"value ± se" with the value's sign: "+1.2 ± 0.3" for a positive difference."""
    text = format_value_se(value, se, decimals)
    return f"+{text}" if is_finite_number(value) and round(value, decimals) > 0 else text


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


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (a key an older schedule file lacks)."""
    return value if isinstance(value, Mapping) else {}


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
