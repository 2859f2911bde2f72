"""The report's "Trade-offs" section: for every metric the run computed, a plot against NFE and one
against time per sample, with standard-error bars, and one HTML legend for all of them.

Bits/dim is the exception: it is a property of the model, measured once per model by integrating
the probability-flow ODE (``bpd_nfe`` evaluations, adaptive), not of the sampler row it is copied
into, so it is plotted once per model against the ODE's NFE, and has no time per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cmbench.report.numbers import TimeUnit, is_finite_number
from cmbench.report.plots import (XAxis, configuration_label, metric_plot_png, metric_series, nfe_axis,
                                  png_data_uri, series_styles, time_axis)
from cmbench.report.tables import ARROWS, ColumnFormat

LIKELIHOOD_KEY = "bpd"
LOG_SCALE_METRICS = frozenset({"fid", "sfid", "fd_dinov2", "kid"})
"""Distances, which span orders of magnitude from few to many steps; bounded scores (precision,
recall, coverage in [0, 1]) and IS stay on linear axes, where their differences read as they are."""


def plot_section(rows: Sequence[Mapping[str, Any]], formats: Sequence[ColumnFormat], unit: TimeUnit) -> dict[str, Any]:
    """``{"legend": [{label, color, glyph}], "metrics": [{key, label, direction, plots: [{src, alt,
    caption}]}]}`` for the template; metrics without a plottable point are left out, and the
    legend lists the series that appear in some plot, styled as the plots draw them."""
    styles = series_styles(configuration_label(row) for row in rows)
    metrics = []
    for fmt in formats:
        plots = (likelihood_plots(rows, fmt) if fmt.column.key == LIKELIHOOD_KEY
                 else trade_off_plots(rows, fmt, styles, unit))
        if plots:
            metrics.append({"key": fmt.column.key, "label": fmt.column.label,
                            "direction": f"{fmt.column.direction} is better" if fmt.column.direction else "",
                            "plots": plots})
    used = {label for fmt in formats if fmt.column.key != LIKELIHOOD_KEY
            for label in metric_series(rows, fmt.column.key, fmt.column.se_key, nfe_axis())}
    legend = [{"label": s.label, "color": s.color, "glyph": s.glyph} for s in styles.values() if s.label in used]
    return {"legend": legend, "metrics": metrics}


def trade_off_plots(rows: Sequence[Mapping[str, Any]], fmt: ColumnFormat, styles: Mapping[str, Any],
                    unit: TimeUnit) -> list[dict[str, str]]:
    """The metric against NFE and against time per sample (each left out when it has no point)."""
    axes = ((nfe_axis(), "NFE", "function evaluations"),
            (time_axis(unit.symbol, unit.per_second), "time", f"wall-clock {unit.symbol} per sample"))
    plots = []
    for axis, short, long in axes:
        plot = metric_figure(rows, fmt, axis, styles, f"vs {short}", long)
        if plot is not None:
            plots.append(plot)
    return plots


def likelihood_plots(rows: Sequence[Mapping[str, Any]], fmt: ColumnFormat) -> list[dict[str, str]]:
    """Bits/dim per model against the ODE evaluations that measured it."""
    axis = XAxis("ODE evaluations per image (log₂ scale)", lambda row: row.get("bpd_nfe"), log2_ticks=True)
    styles = series_styles(str(row.get("model")) for row in rows if is_finite_number(row.get(fmt.column.key)))
    plot = metric_figure(rows, fmt, axis, styles, "per model", "the probability-flow ODE's evaluations per image",
                 label_of=lambda row: str(row.get("model")))
    return [plot] if plot is not None else []


def metric_figure(rows, fmt: ColumnFormat, axis: XAxis, styles, title_tail: str, x_words: str,
                  label_of=configuration_label, prefix: str = "") -> dict[str, str] | None:
    """``fmt``'s metric against ``axis``, one line per series, with standard-error bars: an inline PNG
    with its alt text and caption (each led by ``prefix``); None when no row has a point."""
    column = fmt.column
    series = metric_series(rows, column.key, column.se_key, axis, label_of=label_of)
    arrow = ARROWS.get(column.direction or "", "")
    png = metric_plot_png(series, styles, x_axis=axis, y_label=column.label,
                          title=f"{prefix}{column.label} {arrow} {title_tail}", label_points=label_of is not configuration_label,
                          log_y_allowed=column.key in LOG_SCALE_METRICS)
    if png is None:
        return None
    bars = "bars: ± one standard error" if fmt.has_se else "no standard errors recorded"
    return {"src": png_data_uri(png),
            "alt": f"{prefix}{column.label} against {x_words}, one line per model and sampler; {bars}",
            "caption": f"{prefix}{column.label} {title_tail} ({bars})"}
