"""Tuned schedule files: what a search found, for which model and under which objective.

A schedule file is JSON::

    {"format": "cmbench-schedule/1", "name": "cd", "fingerprint": "...",
     "model": {"name", "family", "checkpoint", "checkpoint_sha256"},
     "sampler": "cm_multistep", "sampler_options": {...},
     "search": {"method", "space", "karras_steps", "rho", "tol", "sigma_min", "sigma_max"},
     "objective": {"metric", "direction", "num_samples", "seed_start", "batch_size", "quantisation",
                   "extractor", "reference_sha256", "metric_options"},
     "schedules": [{"nfe", "sigmas", "indices", "value", "evaluations"}, ...],
     "trace": [{"nfe", "gap", "position", "sigma", "sigmas", "value"}, ...],
     "evaluations": total, "seconds": ..., "cmbench_version": ..., "created_at": ...}

``sigmas`` lists a schedule's σ values from σ_max down to the terminal σ_min (NFE + 1 points),
exactly as the sampler used them; ``indices`` are the Karras-grid positions (null in the
continuous space). A suite row uses a file through ``schedule: path/to/file.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

SCHEDULE_FORMAT = "cmbench-schedule/1"
REQUIRED_KEYS = ("format", "name", "model", "sampler", "schedules", "objective")
_KEY_TYPES = {"name": (str, "a string"), "model": (dict, "a mapping"), "sampler": (str, "a string"),
              "schedules": (list, "a list"), "objective": (dict, "a mapping"), "sampler_options": (dict, "a mapping"),
              "search": (dict, "a mapping")}


def write_schedule(path: str | Path, document: dict[str, Any], *, overwrite: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(document, indent=1) + "\n", overwrite=overwrite)


def read_schedule(path: str | Path) -> dict[str, Any]:
    """Read and check a schedule file; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schedule file {path} does not exist (write one with `cmbench tune`)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"schedule file {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"schedule file {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start}); give a JSON file written by `cmbench tune`") from None
    if not isinstance(document, dict):
        raise ValueError(f"schedule file {path}: expected a JSON object with format {SCHEDULE_FORMAT!r}, "
                         f"got a {type(document).__name__}")
    if document.get("format") != SCHEDULE_FORMAT:
        raise ValueError(f"schedule file {path}: format is {document.get('format')!r}; accepted: {SCHEDULE_FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in document]
    if missing:
        raise ValueError(f"schedule file {path}: missing key(s) {', '.join(missing)}")
    for key, kind in _KEY_TYPES.items():
        if key in document and not isinstance(document[key], kind[0]):
            raise ValueError(f"schedule file {path}: {key} must be {kind[1]}, got {type(document[key]).__name__}")
    for i, entry in enumerate(document["schedules"]):
        _check_entry(path, i, entry)
    return document


def _check_entry(path: Path, i: int, entry: Any) -> None:
    where = f"schedule file {path}: schedules[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("nfe"), int) or not isinstance(entry.get("sigmas"), list):
        raise ValueError(f"{where}: expected {{nfe: integer, sigmas: [σ, ...], ...}}")
    sigmas = entry["sigmas"]
    ok = len(sigmas) == entry["nfe"] + 1 and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in sigmas)
    if not ok or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"{where}: sigmas must be NFE + 1 = {entry['nfe'] + 1} positive, strictly decreasing "
                         f"numbers; got {sigmas}")


def schedule_sigmas(document: dict[str, Any], nfe: int, source: str) -> list[float]:
    """The σ points a schedule document holds for ``nfe``."""
    for entry in document["schedules"]:
        if entry["nfe"] == nfe:
            return [float(s) for s in entry["sigmas"]]
    have = sorted(e["nfe"] for e in document["schedules"])
    raise ValueError(f"schedule {source} has no time points for NFE {nfe}; it has NFE {', '.join(map(str, have))}")
