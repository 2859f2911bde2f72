"""Metric-vs-NFE line plots for the report, rendered to PNG bytes.

Few-step samplers are compared by how a metric falls as the number of function evaluations
grows, so NFE is on the x axis on a log2 scale (NFE grids are usually 1, 2, 4, 8, ...) with the
NFE values themselves as integer tick labels. One line per (model, sampler configuration).

Plots are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas, no pyplot), so nothing here
touches matplotlib's global figure manager or backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


# Metrics spanning more than this ratio (FID 0.2 at high NFE, 140 at NFE 3) get a log y axis.
LOG_Y_RATIO = 30.0


def fid_vs_nfe_png(rows: Iterable[Mapping[str, Any]]) -> bytes | None:
    """FID against NFE, one line per (model, sampler_label); None when no row has an FID."""
    return metric_vs_nfe_png(rows, "fid", "FID (lower is better)")


def metric_vs_nfe_png(rows: Iterable[Mapping[str, Any]], column: str, ylabel: str) -> bytes | None:
    """Plot ``row[column]`` against ``row["nfe"]`` as PNG bytes; None when no row has a number there.

    Rows whose value is missing, non-numeric or not finite, or whose NFE is not a positive
    number (it could not sit on a log axis), are left out.
    """
    series = _series_by_configuration(rows, column)
    if not series:
        return None

    figure = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, (label, points) in enumerate(series.items()):
        nfes, values = zip(*sorted(points))
        axes.plot(nfes, values, marker=MARKERS[index % len(MARKERS)], markersize=5, linewidth=1.5, label=label)

    ticks = sorted({nfe for points in series.values() for nfe, _ in points})
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([_integer_label(nfe) for nfe in ticks])
    axes.set_xlabel("NFE (function evaluations, log2 scale)")
    values = [v for points in series.values() for _, v in points]
    if min(values) > 0 and max(values) / min(values) > LOG_Y_RATIO:
        axes.set_yscale("log")
        ylabel += ", log scale"
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", linewidth=0.5, alpha=0.5)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _series_by_configuration(
    rows: Iterable[Mapping[str, Any]], column: str
) -> dict[str, list[tuple[float, float]]]:
    """Group plottable (nfe, value) points by "model · sampler_label", in a stable sorted order."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        value, nfe = row.get(column), row.get("nfe")
        if not (_is_finite_number(value) and _is_finite_number(nfe) and nfe > 0):
            continue
        label = f"{row.get('model')} · {row.get('sampler_label') or row.get('sampler')}"
        series.setdefault(label, []).append((float(nfe), float(value)))
    return dict(sorted(series.items()))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer_label(nfe: float) -> str:
    return str(int(nfe)) if float(nfe).is_integer() else f"{nfe:g}"


def search_trace_png(document: Mapping[str, Any]) -> bytes | None:
    """A tuning search's trace: objective against candidate σ (log scale), one series per NFE, the
    chosen point of each NFE starred; None when the trace has no candidates."""
    trace = [e for e in document.get("trace", []) if _is_finite_number(e.get("sigma")) and _is_finite_number(e.get("value"))]
    if not trace:
        return None
    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    chosen = {entry["nfe"]: entry for entry in document.get("schedules", [])}
    for index, nfe in enumerate(sorted({e["nfe"] for e in trace})):
        color, marker = f"C{index % 10}", MARKERS[index % len(MARKERS)]
        of_nfe = [e for e in trace if e["nfe"] == nfe]
        for gap in sorted({e.get("gap") or 0 for e in of_nfe}):  # one line per gap between fixed points
            sigmas, values = zip(*sorted((e["sigma"], e["value"]) for e in of_nfe if (e.get("gap") or 0) == gap))
            axes.plot(sigmas, values, marker=marker, markersize=4, linewidth=0.8, linestyle=":", color=color,
                      label=f"NFE {nfe} ({len(of_nfe)} evaluations)" if gap == min(e.get("gap") or 0 for e in of_nfe) else None)
        best = chosen.get(nfe)
        new = [e["sigma"] for e in of_nfe if best is not None and tuple(e["sigmas"]) == tuple(best["sigmas"])]
        if new:
            axes.plot(new[:1], [best["value"]], marker="*", markersize=14, color=color, linestyle="none")
    values = [e["value"] for e in trace]
    if min(values) > 0 and max(values) / min(values) > LOG_Y_RATIO:
        axes.set_yscale("log")
    axes.set_xscale("log")
    axes.set_xlabel("candidate time point σ (log scale); ★ chosen")
    objective = document.get("objective", {})
    axes.set_ylabel(f"{objective.get('metric', 'objective')} on {objective.get('num_samples', '?')} proxy samples")
    axes.grid(True, which="major", linewidth=0.5, alpha=0.5)
    axes.legend(fontsize="small", frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
