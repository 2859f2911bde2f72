"""The two sides of a comparison: run folders, ``results.jsonl`` files and baseline files.

:func:`load_side` reads one into a :class:`Side`; :func:`baseline_document` and
:func:`write_baseline` make a baseline file (format ``cmbench-baseline/1``) from one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_write_text
from ..metrics import DIRECTIONS, se_column
from ..results import RESULTS_JSONL, _jsonable, read_rows
from .settings import CompareError

BASELINE_FORMAT = "cmbench-baseline/1"
RUN_FILE = "run.json"
RUN_BASELINE = "baseline.json"  # a run folder's copy of the baseline its report compares against
PROTOCOL_FIELDS = (
    "sampler", "num_samples", "quantisation", "extractor", "extractor_sha256", "layer_extractors", "reference_sha256",
    "metric_options", "profile", "bpd_protocol",
)
"""Fields two matched rows must agree on; one recorded on one side only is noted, not checked."""
IDENTITY_FIELDS = ("row_id", "model", "family", "sampler_label", "nfe", "seed_start", "checkpoint_sha256")
OUTCOME_FIELDS = ("status", "error")
"""A row ``cmbench run`` could not measure has ``"status": "failed"`` and its ``"error"``."""
SPREAD_COLUMNS = ("is_std", "kid_std", "bpd_nfe")


@dataclass(frozen=True)
class Side:
    """Result rows to compare, by row id, with where they came from."""

    source: str
    kind: str  # "run folder" | "results file" | "baseline file"
    rows: dict[str, dict[str, Any]]
    suite: str | None = None
    regression: dict[str, Any] | None = None
    created_at: str | None = None
    origin: str | None = None  # a baseline file's "source": the run or file it was made from

    def describe(self) -> str:
        return f"{self.source} ({self.kind}{f', suite {self.suite}' if self.suite else ''})"


def load_side(path: str | Path) -> Side:
    """A run folder, a ``results.jsonl`` or a baseline file (format ``cmbench-baseline/1``)."""
    path = Path(path)
    if path.is_dir():
        results = path / RESULTS_JSONL
        if not results.is_file():
            raise CompareError(f"{path} is a folder without {RESULTS_JSONL}; give a run folder, a results "
                               f"file or a baseline file ({BASELINE_FORMAT})")
        return _results_side(results, path, "run folder")
    if not path.is_file():
        raise CompareError(f"{path} does not exist; give a run folder, a results file or a baseline file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"{path} cannot be read: {err}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None  # JSON lines: a results file
    if isinstance(document, dict) and "format" in document:
        return _baseline_side(document, path)
    return _results_side(path, path.parent if path.name == RESULTS_JSONL else None, "results file")


def _results_side(results: Path, run_dir: Path | None, kind: str) -> Side:
    try:
        rows = read_rows(results)
    except (ValueError, OSError) as err:
        raise CompareError(str(err)) from None
    if not rows:
        raise CompareError(f"{results} holds no result rows")
    meta = _run_metadata(run_dir / RUN_FILE) if run_dir is not None else {}
    suites = {str(r["suite"]) for r in rows if r.get("suite")}
    suite = meta.get("suite") or (suites.pop() if len(suites) == 1 else None)
    source = str(run_dir if kind == "run folder" else results)
    return Side(source, kind, {str(r["row_id"]): r for r in rows}, suite, meta.get("regression"), meta.get("started_at"))


def _run_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _baseline_side(document: dict[str, Any], path: Path) -> Side:
    if document.get("format") != BASELINE_FORMAT:
        raise CompareError(f"{path}: format {document.get('format')!r}; accepted: {BASELINE_FORMAT!r} "
                           "(write one with `cmbench run --save-baseline FILE`)")
    rows = document.get("rows")
    if not isinstance(rows, list) or not rows:
        raise CompareError(f"{path}: 'rows' must be a non-empty list of result rows")
    by_id = {}
    for i, row in enumerate(rows):
        missing = [k for k in ("row_id", "model", "sampler", "nfe") if not isinstance(row, dict) or row.get(k) is None]
        if missing:
            raise CompareError(f"{path}: rows[{i}] lacks {', '.join(missing)}; every row needs row_id, model, sampler, nfe")
        by_id[str(row["row_id"])] = row
    regression = document.get("regression")
    if regression is not None and not isinstance(regression, dict):
        raise CompareError(f"{path}: 'regression' must be a mapping {{z, thresholds}}")
    return Side(str(path), "baseline file", by_id, document.get("suite"), regression, document.get("created_at"),
                document.get("source"))


def baseline_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a baseline keeps of a result row: identity, protocol, outcome, scored metrics and their errors."""
    keys = IDENTITY_FIELDS + PROTOCOL_FIELDS + OUTCOME_FIELDS + ("uncertainty",)
    keys += tuple(k for col in DIRECTIONS for k in (col, se_column(col))) + SPREAD_COLUMNS
    return {k: row[k] for k in dict.fromkeys(keys) if k in row}


def baseline_document(side: Side) -> dict[str, Any]:
    """A baseline file's content (format ``cmbench-baseline/1``) holding ``side``'s rows."""
    rows = sorted(side.rows.values(), key=lambda r: (str(r["model"]), str(r["row_id"]), _number(r.get("nfe"))))
    return {
        "format": BASELINE_FORMAT,
        "suite": side.suite,
        "created_at": (side.created_at if side.kind == "baseline file" and side.created_at
                       else datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "cmbench_version": __version__,
        "source": side.source,
        "regression": side.regression,
        "rows": [baseline_row(r) for r in rows],
    }


def write_baseline(path: str | Path, document: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write a baseline file atomically; an existing file is an error unless ``overwrite``."""
    text = json.dumps(_jsonable(dict(document)), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.inf
