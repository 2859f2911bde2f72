"""Regression testing: a new run's result rows against a baseline's, with noise-aware verdicts.

Rows are matched by row id (model, sampler or run name, NFE). Matched rows must share the
evaluation protocol (:data:`PROTOCOL_FIELDS`: sample count, quantisation, feature extractor and
its weights, metric conventions, reference statistics); rows measured under different protocols
are not comparable and make the comparison fail rather than give a verdict.

For each scored metric (:data:`cmbench.metrics.DIRECTIONS`) of a matched row the difference
``new − baseline`` has the standard error ``se = sqrt(se_new² + se_baseline²)`` (the rows' own
bootstrap estimates, :mod:`cmbench.metrics.bootstrap`; missing ones count as 0 and are noted).
A change in the bad direction is *worse* only when it exceeds both the metric's threshold
(absolute, and/or relative to the baseline value; the larger applies) and ``z·se``; *better* is
the mirror image; anything else is *same*, a difference within noise or within tolerance. The
gate fails closed: a metric the baseline row measured that the new row lacks (missing, null,
non-finite, or the row failed) is *worse*, with the reason (:func:`~cmbench.compare.verdicts.unmeasured_verdict`).

Every function here is pure apart from :func:`load_side` and :func:`write_baseline`; the
command line (``cmbench compare``) and the report format their results.
"""

from .render import ARROWS, COMPARE_FORMAT, MARKDOWN_VERDICTS, render_markdown, render_table, table_cells, to_json
from .settings import (DEFAULT_Z, THRESHOLD_FORMS, CompareError, Settings, Threshold, parse_regression_spec,
                       parse_threshold, parse_threshold_option, resolve_settings)
from .sides import (BASELINE_FORMAT, IDENTITY_FIELDS, OUTCOME_FIELDS, PROTOCOL_FIELDS, RUN_BASELINE, RUN_FILE,
                    SPREAD_COLUMNS, Side, baseline_document, baseline_row, load_side, write_baseline)
from .verdicts import (FAILURES, VERDICTS, Comparison, MetricVerdict, RowComparison, compare, match_rows,
                       metric_verdict)

__all__ = [
    "ARROWS", "BASELINE_FORMAT", "COMPARE_FORMAT", "DEFAULT_Z", "FAILURES", "IDENTITY_FIELDS",
    "MARKDOWN_VERDICTS", "OUTCOME_FIELDS", "PROTOCOL_FIELDS", "RUN_BASELINE", "RUN_FILE", "SPREAD_COLUMNS",
    "THRESHOLD_FORMS", "VERDICTS",
    "CompareError", "Comparison", "MetricVerdict", "RowComparison", "Settings", "Side", "Threshold",
    "baseline_document", "baseline_row", "compare", "load_side", "match_rows", "metric_verdict",
    "parse_regression_spec", "parse_threshold", "parse_threshold_option", "render_markdown",
    "render_table", "resolve_settings", "table_cells", "to_json", "write_baseline",
]
