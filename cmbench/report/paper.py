"""Published numbers beside measured ones: the report's "Measured vs published" table.

A suite's runs may carry the paper's figures (``paper: {NFE: {fid: ..., ...}}``); the run writes
them into ``run.json`` and this module pairs them with the measured result rows. The difference
is measured − published, so for FID a positive Δ means cmbench measured worse than the paper.
Numbers are written at the comparison table's precision for their metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cmbench.report.numbers import MISSING, format_fixed, is_finite_number
from cmbench.report.tables import ColumnFormat


def paper_section(metadata: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
                  formats: Sequence[ColumnFormat]) -> dict[str, Any] | None:
    """Rows of (result row, metric, published, measured ± se, Δ, source); None when the suite gave
    no numbers. ``formats`` cover every metric column (the suite only accepts published numbers
    for scored columns)."""
    by_key = {fmt.column.key: fmt for fmt in formats}
    paper = (metadata or {}).get("paper") or {}
    published = paper.get("rows") or {}
    unreproducible = paper.get("unreproducible") or {}
    if not published and not unreproducible:
        return None
    measured = {str(row["row_id"]): row for row in rows}
    cells = []
    for row_id, numbers in published.items():
        row = measured.get(row_id, {})
        for column, value in _numbers(numbers):
            fmt = by_key[column]
            got = row.get(column)
            has = is_finite_number(got)
            cells.append({
                "row_id": row_id, "metric": fmt.column.label, "paper": format_fixed(value, fmt.decimals),
                "measured": fmt.cell_text(row) if has else "not measured yet",
                "diff": _signed(got - value, fmt.decimals) if has and is_finite_number(value) else MISSING,
                "source": numbers.get("source") or paper.get("source") or "",
            })
    for label, entry in unreproducible.items():
        numbers = entry.get("paper") or {}
        for column, value in _numbers(numbers):
            fmt = by_key[column]
            cells.append({
                "row_id": label, "metric": fmt.column.label, "paper": format_fixed(value, fmt.decimals),
                "measured": f"not reproducible: {entry.get('reason', '')}", "diff": MISSING,
                "source": numbers.get("source") or paper.get("source") or "",
            })
    return {"source": paper.get("source") or "", "cells": cells}


def _numbers(numbers: Mapping[str, Any]):
    """The (column, published value) pairs of one row's numbers (its ``source`` is not a column)."""
    return ((column, value) for column, value in numbers.items() if column != "source")


def _signed(value: float, decimals: int) -> str:
    text = format_fixed(value, decimals)
    return text if text.startswith("-") or text == MISSING else "+" + text
