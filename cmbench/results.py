"""Result rows on disk: ``results.jsonl`` (the record) and ``results.csv`` (flat, for pandas).

Both files are rewritten atomically after every finished row, so a run killed at any moment
leaves every finished row intact and no half-written file; rerunning skips finished rows. A row
remembers the fingerprint of the configuration that produced it, and the configuration itself
(``config``, JSON only, not in the CSV): resuming with a changed configuration is an error unless
the caller asks to recompute (nothing is overwritten silently), and the error names the settings
that changed (:func:`config_changes`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import atomic_write_text

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
# The flat columns every row has, in order; later columns follow in first-seen order.
COLUMNS = (
    "suite", "row_id", "model", "family", "sampler", "sampler_label", "nfe", "num_samples",
    "fid", "is_mean", "is_std", "precision", "recall", "seconds_per_sample", "seed_start",
    "checkpoint_sha256", "cmbench_version",
)
REQUIRED_ROW_KEYS = ("row_id", "model", "family", "sampler", "nfe")
JSON_ONLY = ("config",)  # row keys kept out of results.csv (the configuration a fingerprint hashes)
FAILED = "failed"  # a row's ``status`` when it could not be scored (its ``error`` says why; metrics are null)


def error_text(row: dict[str, Any]) -> str:
    """A failed row's error, without the row id it may start with."""
    return str(row.get("error")).removeprefix(f"{row['row_id']}: ")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read result rows from a JSON-lines file; a later line with the same row_id replaces an earlier one.

    cmbench itself never writes a row_id twice; for files merged by hand the last one wins.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}; run `cmbench run` to produce one")
    rows: dict[str, dict[str, Any]] = {}
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{number}: not UTF-8 text; result files are JSON lines") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in REQUIRED_ROW_KEYS if row.get(key) is None]
            if missing:
                raise ValueError(
                    f"{path}:{number}: result row lacks {', '.join(missing)}; "
                    f"every row needs {', '.join(REQUIRED_ROW_KEYS)}"
                )
            if not isinstance(row["row_id"], str) or not row["row_id"]:
                raise ValueError(f"{path}:{number}: row_id must be a non-empty string, got {row['row_id']!r}")
            rows[row["row_id"]] = row
    return list(rows.values())


class ResultStore:
    """The rows of one run folder, keyed by ``row_id``."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        path = self.run_dir / RESULTS_JSONL
        self.rows = {row["row_id"]: row for row in read_rows(path)} if path.exists() else {}

    def get(self, row_id: str) -> dict[str, Any] | None:
        return self.rows.get(row_id)

    def put(self, row: dict[str, Any]) -> None:
        """Add or replace a row and rewrite both files atomically (the record first)."""
        self.rows[row["row_id"]] = row
        lines = [json.dumps(_jsonable(r), sort_keys=False) for r in self.rows.values()]
        atomic_write_text(self.run_dir / RESULTS_JSONL, "\n".join(lines) + "\n")
        self.write_csv()

    def write_csv(self) -> None:
        """Rewrite ``results.csv`` from the rows (also repairs a CSV a kill left one row behind)."""
        atomic_write_text(self.run_dir / RESULTS_CSV, to_frame(list(self.rows.values())).to_csv(index=False))


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a flat table: nested values (schedule, options) become JSON text; the stored
    configuration (``config``) is left out."""
    rows = [{k: v for k, v in r.items() if k not in JSON_ONLY} for r in rows]
    extra = [k for r in rows for k in r if k not in COLUMNS]
    columns = list(COLUMNS) + list(dict.fromkeys(extra))
    flat = [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows]
    return pd.DataFrame(flat, columns=columns)


def _jsonable(value: Any) -> Any:
    """Non-finite floats become null so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A row's configuration as its ``config`` field stores it (JSON values; anything else as text,
    as the fingerprint hashes it)."""
    return json.loads(json.dumps(config, default=str))


def config_changes(stored: dict[str, Any], current: dict[str, Any], limit: int = 6) -> list[str]:
    """The settings that differ between two configurations, as ``key.path: old → new`` (sha256
    digests shortened), at most ``limit`` of them and then how many more."""
    old, new = _flat(stored_config(stored)), _flat(stored_config(current))
    changes = [f"{key}: {_shown(old.get(key, _ABSENT))} → {_shown(new.get(key, _ABSENT))}"
               for key in sorted(old.keys() | new.keys()) if old.get(key, _ABSENT) != new.get(key, _ABSENT)]
    if len(changes) > limit:
        changes = [*changes[:limit], f"and {len(changes) - limit} more"]
    return changes


def what_changed(stored_row: dict[str, Any], current: dict[str, Any]) -> str:
    """Why a stored row no longer matches ``current`` (its configuration now), for a refusal."""
    if not isinstance(stored_row.get("config"), dict):
        return "rows written by an older cmbench: the changed setting can't be named"
    changes = config_changes(stored_row["config"], current)
    return "; ".join(changes) if changes else "no setting differs, but the fingerprint does (another cmbench version?)"


_ABSENT = object()
_SHA256_HEX = 64


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``; lists and empty mappings are leaves."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _shown(value: Any, width: int = 60) -> str:
    if value is _ABSENT:
        return "(not set)"
    if isinstance(value, str) and len(value) == _SHA256_HEX and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"
