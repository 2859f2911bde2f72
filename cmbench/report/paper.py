"""Published numbers beside measured ones: the report's "Measured vs published" table.

A suite's runs may carry the paper's figures (``paper: {NFE: {fid: ..., ...}}``); the run writes
them into ``run.json`` and this module pairs them with the measured result rows. The difference
is measured − published, so for FID a positive Δ means cmbench measured worse than the paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

PAPER_SPECS = {"fid": ".2f", "sfid": ".2f", "is_mean": ".2f", "kid": ".4f", "precision": ".3f", "recall": ".3f",
               "density": ".3f", "coverage": ".3f", "bpd": ".3f"}
LABELS = {"fid": "FID", "sfid": "sFID", "is_mean": "IS", "kid": "KID", "precision": "Precision", "recall": "Recall",
          "density": "Density", "coverage": "Coverage", "bpd": "NLL (bits/dim)"}


def paper_section(metadata: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Rows of (result row, metric, published, measured, Δ, source); None when the suite gave no numbers."""
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
            spec = PAPER_SPECS.get(column, ".4g")
            got = row.get(column)
            has = isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
            se = row.get(f"{column}_se")
            cells.append({
                "row_id": row_id, "metric": LABELS.get(column, column), "paper": format(value, spec),
                "measured": (format(got, spec) + (f" ± {format(se, spec)}" if isinstance(se, (int, float)) else ""))
                if has else "not measured yet",
                "diff": format(got - value, "+" + spec) if has else "—",
                "source": numbers.get("source") or paper.get("source") or "",
            })
    return {"source": paper.get("source") or "", "cells": cells}
