"""Published numbers beside measured ones: the report's "Measured vs published" table.

A suite's runs may carry the paper's figures (``paper: {NFE: {fid: ..., ...}}``); the run writes
them into ``run.json`` and this module pairs them with the measured result rows. The difference
is measured − published, so for FID a positive Δ means cmbench measured worse than the paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cmbench.metrics import se_column


def paper_section(metadata: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
                  columns: Sequence[Any]) -> dict[str, Any] | None:
    """Rows of (result row, metric, published, measured, Δ, source); None when the suite gave no
    numbers. ``columns`` are the report's metric columns (key, label, format spec); the suite
    only accepts published numbers for scored columns, which all have one."""
    by_key = {column.key: column for column in columns}
    paper = (metadata or {}).get("paper") or {}
    published = paper.get("rows") or {}
    if not published:
        return None
    measured = {str(row["row_id"]): row for row in rows}
    cells = []
    for row_id, numbers in published.items():
        row = measured.get(row_id, {})
        for column, value in numbers.items():
            if column == "source":
                continue
            spec = by_key[column].spec
            got = row.get(column)
            has = isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
            se = row.get(se_column(column))
            cells.append({
                "row_id": row_id, "metric": by_key[column].label, "paper": format(value, spec),
                "measured": (format(got, spec) + (f" ± {format(se, spec)}" if isinstance(se, (int, float)) else ""))
                if has else "not measured yet",
                "diff": format(got - value, "+" + spec) if has else "—",
                "source": numbers.get("source") or paper.get("source") or "",
            })
    return {"source": paper.get("source") or "", "cells": cells}
