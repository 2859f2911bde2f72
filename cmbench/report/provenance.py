"""What the report says about where a run came from, and nothing about the machine it ran on.

A report is mailed, attached to CI runs and published, so it must not carry the absolute paths of
the machine that made it (``/home/alice/...``, ``/tmp/...``): they say nothing to a reader
elsewhere and leak user and folder names. Files are identified by name and sha256 instead (the
run records the hashes beside the paths). :func:`strip_machine_paths` rewrites every absolute path
in the report's data: one inside the run folder becomes relative to it, any other its file name.

Metric conventions are shown only for the metrics a run computed: the KID subset size of a run
that never computed KID is noise that reads like a setting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from cmbench.metrics import METRICS

_SEGMENT = r"[^\s/\\'\"<>|,;()\[\]{}]+"
ABSOLUTE_PATH = re.compile(
    rf"(?:\bfile://|(?<![\w.:/~\\-]))/(?:{_SEGMENT}/)+(?:{_SEGMENT})?"  # POSIX, at least /a/; not "bits/dim", "//"
    rf"|\b[A-Za-z]:\\(?:{_SEGMENT}\\)*(?:{_SEGMENT})?"  # Windows, C:\a
)
"""An absolute path inside text (with the ``file://`` of a file URL, which is dropped)."""

DATA_URI_PREFIX = "data:"

METRIC_OPTION_USERS: dict[str, tuple[str, ...]] = {
    "fid_sqrt": ("fid", "sfid", "fd_dinov2"),
    "is_splits": ("inception_score",),
    "is_split_size": ("inception_score",),
    "is_shuffle_seed": ("inception_score",),
    "pr_k": ("precision_recall",),
    "pr_batch_size": ("precision_recall", "density_coverage"),
    "kid_subsets": ("kid",),
    "kid_subset_size": ("kid",),
    "kid_capped": ("kid",),
    "kid_products": ("kid",),
    "dc_k": ("density_coverage",),
}
"""Which metrics (names in cmbench.metrics.METRICS) read each MetricOptions field."""


def strip_machine_paths(value: Any, run_dir: Path) -> Any:
    """``value`` with every absolute path in its strings (keys and values, at any depth) replaced:
    relative to ``run_dir`` when inside it, else by its file name. ``data:`` URIs (the inline
    images) are left alone."""
    if isinstance(value, str):
        return value if value.startswith(DATA_URI_PREFIX) else _strip_paths_in_text(value, run_dir)
    if isinstance(value, Mapping):
        return {strip_machine_paths(k, run_dir): strip_machine_paths(v, run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(strip_machine_paths(item, run_dir) for item in value)
    return value


def portable_path(text: str, run_dir: Path) -> str:
    """An absolute path as the report shows it: relative to ``run_dir`` when inside it, else its
    file name (the last non-empty component)."""
    windows = not text.startswith("/")
    path = PureWindowsPath(text) if windows else PurePosixPath(text)
    if not windows:
        for root in {run_dir.absolute(), run_dir.resolve()}:
            try:
                relative = PurePosixPath(_normalise(path)).relative_to(root.as_posix())
            except ValueError:
                continue
            return relative.as_posix() if relative.parts else "."
    return path.name or text


def _normalise(path: PurePosixPath) -> str:
    """``path`` with "." and ".." resolved lexically (the file need not exist here)."""
    parts: list[str] = []
    for part in path.parts[1:]:
        if part == "..":
            parts = parts[:-1]
        elif part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def _strip_paths_in_text(text: str, run_dir: Path) -> str:
    return ABSOLUTE_PATH.sub(lambda match: portable_path(match.group(0).removeprefix("file://"), run_dir), text)


def computed_metric_options(options: Any, metric_names: Iterable[str]) -> Any:
    """``options`` (a MetricOptions dict) reduced to the fields that the named metrics read;
    fields this module does not know are kept (better shown than silently dropped), anything but
    a mapping is returned as it is."""
    if not isinstance(options, Mapping):
        return options
    computed = set(metric_names)
    return {key: value for key, value in options.items()
            if key not in METRIC_OPTION_USERS or computed.intersection(METRIC_OPTION_USERS[key])}


def metrics_of_row(row: Mapping[str, Any]) -> list[str]:
    """The metrics a result row was scored with: those whose result columns the row holds (the
    runner writes each requested metric's columns, null when the row failed)."""
    return [name for name, metric in METRICS.items() if any(column in row for column in metric.columns)]
