"""The report's plots, rendered to PNG bytes: each metric against NFE and against time per sample,
with standard-error bars, and a tuning search's trace.

Few-step samplers are chosen on two trade-offs: quality against the number of function
evaluations (NFE, a log2 axis with the NFE values as integer tick labels, since NFE grids are
usually 1, 2, 4, 8, ...) and quality against wall-clock time per sample (a log axis in the
report's time unit). One series per (model, sampler configuration), styled the same in every
plot, so one legend (drawn by the page in HTML, legible at any width) serves them all.

Figures are small (4 x 3 inches at 160 dpi) with large type, so that shown full width on a
phone (about 360 CSS pixels) their text is still about 13 pixels high. They are drawn on a bare
``matplotlib.figure.Figure`` (Agg canvas, no pyplot, every font size passed explicitly), so
nothing here touches matplotlib's global figure manager, backend or rc settings.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from cmbench.report.numbers import format_significant, is_finite_number, is_standard_error

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
MARKER_GLYPHS = {"o": "●", "s": "■", "^": "▲", "D": "◆", "v": "▼", "P": "✚", "X": "✖", "<": "◀", ">": "▶",
                 "*": "★"}
"""The character that stands for each marker in the page's HTML legend."""
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
"""matplotlib's tab10 palette, named here so the HTML legend can use the same colours."""

FIGURE_SIZE = (4.0, 3.0)
DPI = 160
TICK_SIZE = 11
LABEL_SIZE = 11.5
TITLE_SIZE = 12

# Metrics spanning more than this ratio (FID 0.2 at high NFE, 140 at NFE 3) get a log y axis.
LOG_Y_RATIO = 30.0


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn: colour and marker, and the marker's character for HTML."""

    label: str
    color: str
    marker: str

    @property
    def glyph(self) -> str:
        return MARKER_GLYPHS[self.marker]


@dataclass(frozen=True)
class Point:
    """One plotted value: x, y and its standard error (None: no error bar)."""

    x: float
    y: float
    se: float | None = None


@dataclass(frozen=True)
class XAxis:
    """The quantity on a plot's x axis: how to read it from a row and how to label it.
    ``log2_ticks`` puts the x values themselves as ticks on a log2 axis (NFE grids); otherwise
    the axis is log10 with plain-number decade ticks (times)."""

    label: str
    value: Callable[[Mapping[str, Any]], Any]
    log2_ticks: bool


def nfe_axis() -> XAxis:
    return XAxis("NFE (log₂ scale)", lambda row: row.get("nfe"), log2_ticks=True)


def time_axis(symbol: str, per_second: float) -> XAxis:
    """Seconds per sample shown in the report's time unit (``symbol``, ``per_second`` of it in a second)."""
    def value(row: Mapping[str, Any]) -> Any:
        seconds = row.get("seconds_per_sample")
        return seconds * per_second if is_finite_number(seconds) else None
    return XAxis(f"{symbol} per sample (log scale)", value, log2_ticks=False)


def configuration_label(row: Mapping[str, Any]) -> str:
    """"model · sampler label": one series of the plots."""
    return f"{row.get('model')} · {row.get('sampler_label') or row.get('sampler')}"


def series_styles(labels: Iterable[str]) -> dict[str, SeriesStyle]:
    """A colour and marker for each distinct label, in sorted order (stable across plots)."""
    styles = {}
    for index, label in enumerate(sorted(set(labels))):
        styles[label] = SeriesStyle(label, COLORS[index % len(COLORS)],
                                    MARKERS[(index + index // len(COLORS)) % len(MARKERS)])
    return styles


def metric_series(rows: Iterable[Mapping[str, Any]], key: str, se_key: str, x_axis: XAxis,
                  label_of: Callable[[Mapping[str, Any]], str] = configuration_label) -> dict[str, list[Point]]:
    """Plottable points of ``row[key]`` (± ``row[se_key]``) against ``x_axis``, grouped by
    ``label_of(row)`` and sorted by x; repeated points (one model's bits/dim in each of its rows)
    once. Rows whose value or x is missing, not finite, or x not positive (log axes) are left out."""
    series: dict[str, set[Point]] = {}
    for row in rows:
        y, x, se = row.get(key), x_axis.value(row), row.get(se_key)
        if is_finite_number(y) and is_finite_number(x) and x > 0:
            point = Point(float(x), float(y), float(se) if is_standard_error(se) else None)
            series.setdefault(label_of(row), set()).add(point)
    return {label: sorted(points, key=lambda p: (p.x, p.y)) for label, points in sorted(series.items())}


def metric_plot_png(series: Mapping[str, Sequence[Point]], styles: Mapping[str, SeriesStyle], *, x_axis: XAxis,
                    y_label: str, title: str, label_points: bool = False, log_y_allowed: bool = False) -> bytes | None:
    """One metric against one x quantity, a line with standard-error bars per series; None when
    there is no point. ``label_points`` writes each series' label beside its points (for plots
    whose series are not the page legend's configurations); ``log_y_allowed`` lets a positive
    metric spanning more than LOG_Y_RATIO take a log y axis."""
    points = [p for values in series.values() for p in values]
    if not points:
        return None
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, values in series.items():
        style = styles[label]
        axes.errorbar([p.x for p in values], [p.y for p in values], yerr=[p.se or 0.0 for p in values],
                      color=style.color, marker=style.marker, markersize=5, linewidth=1.4, elinewidth=1.1,
                      capsize=3, label=label)
        if label_points:
            for p in values:
                axes.annotate(label, (p.x, p.y), xytext=(6, 4), textcoords="offset points", fontsize=TICK_SIZE,
                              color=style.color)
    _x_scale(axes, x_axis, sorted({p.x for p in points}))
    ys = [p.y for p in points]
    if log_y_allowed and min(ys) > 0 and max(ys) / min(ys) > LOG_Y_RATIO:
        axes.set_yscale("log")
        _plain_log_ticks(axes.yaxis)
        y_label += " (log scale)"
    axes.set_xlabel(x_axis.label, fontsize=LABEL_SIZE)
    axes.set_ylabel(y_label, fontsize=LABEL_SIZE)
    axes.set_title(title, fontsize=TITLE_SIZE)
    axes.tick_params(labelsize=TICK_SIZE)
    axes.grid(True, which="major", linewidth=0.5, alpha=0.5)
    return _png_bytes(figure)


def _x_scale(axes, x_axis: XAxis, xs: Sequence[float]) -> None:
    if x_axis.log2_ticks:
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_locator(FixedLocator(xs))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _integer_label(value)))
    else:
        axes.set_xscale("log")
        _plain_log_ticks(axes.xaxis)
    if len(xs) == 1:  # one x value: give the axis some width around it
        axes.set_xlim(xs[0] / 1.5, xs[0] * 1.5)


def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 times powers of ten, written as plain numbers (20, 50, 100, not 10²)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: format_significant(value, 1)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def png_data_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI, how the self-contained page embeds every image."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    return buffer.getvalue()


def _integer_label(nfe: float) -> str:
    return str(int(nfe)) if float(nfe).is_integer() else f"{nfe:g}"


def proxy_trace(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The trace entries scored on the proxy samples (``objective.num_samples``; a file from before
    sample ladders records no ``samples``, every entry on the proxy) that place a candidate σ and
    have a finite value: what a plot of the objective "on N proxy samples" may show."""
    proxy = (document.get("objective") or {}).get("num_samples")
    return [e for e in document.get("trace") or [] if isinstance(e, Mapping) and e.get("samples", proxy) == proxy
            and is_finite_number(e.get("sigma")) and is_finite_number(e.get("value"))]


def search_trace_png(document: Mapping[str, Any]) -> bytes | None:
    """A tuning search's trace on the proxy samples (:func:`proxy_trace`): objective against
    candidate σ (log scale), one colour per NFE, a dotted line per gap where a point was placed and
    a dashed one per point moved by joint refinement, the chosen schedule of each NFE starred at
    its recorded value; None when no candidate was scored on the proxy samples."""
    trace = proxy_trace(document)
    if not trace:
        return None
    figure = Figure(figsize=(FIGURE_SIZE[0] * 1.25, FIGURE_SIZE[1] * 1.25), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    chosen = {entry["nfe"]: entry for entry in document.get("schedules", [])}
    scored = [e for e in document.get("trace") or [] if isinstance(e, Mapping)]
    for index, nfe in enumerate(sorted({e["nfe"] for e in trace})):
        color, marker = COLORS[index % len(COLORS)], MARKERS[index % len(MARKERS)]
        of_nfe = [e for e in trace if e["nfe"] == nfe]
        total = sum(e.get("nfe") == nfe for e in scored)
        label = f"NFE {nfe} ({len(of_nfe)}" + (f" of {total}" if total > len(of_nfe) else "") + " evaluations)"
        for stage, gap in sorted({_trace_line(e) for e in of_nfe}):
            sigmas, values = zip(*sorted((e["sigma"], e["value"]) for e in of_nfe if _trace_line(e) == (stage, gap)))
            axes.plot(sigmas, values, marker=marker, markersize=4, linewidth=0.8, color=color,
                      linestyle="--" if stage == "refine" else ":", label=label)
            label = None  # one legend entry per NFE
        best = chosen.get(nfe)
        at = [e["sigma"] for e in of_nfe if best is not None and tuple(e["sigmas"]) == tuple(best["sigmas"])]
        if at and is_finite_number(best.get("value")):
            axes.plot(at[:1], [best["value"]], marker="*", markersize=14, color=color, linestyle="none")
    values = [e["value"] for e in trace]
    if min(values) > 0 and max(values) / min(values) > LOG_Y_RATIO:
        axes.set_yscale("log")
        _plain_log_ticks(axes.yaxis)
    axes.set_xscale("log")
    axes.set_xlabel("candidate time point σ (log scale); ★ chosen", fontsize=LABEL_SIZE)
    objective = document.get("objective", {})
    axes.set_ylabel(f"{objective.get('metric', 'objective')} on {objective.get('num_samples', '?')} proxy samples",
                    fontsize=LABEL_SIZE)
    axes.tick_params(labelsize=TICK_SIZE)
    axes.grid(True, which="major", linewidth=0.5, alpha=0.5)
    axes.legend(fontsize=TICK_SIZE, frameon=False, loc="upper left", bbox_to_anchor=(0.0, -0.2), borderaxespad=0)
    return _png_bytes(figure)


def _trace_line(entry: Mapping[str, Any]) -> tuple[str, int]:
    """The line of the trace plot an entry belongs to: refinement or placement, and the gap."""
    return ("refine" if entry.get("stage") == "refine" else "insert", entry.get("gap") or 0)
