"""Names that become file names, and paths that must stay inside the output folder.

Suite, model, run and tune-job names end up in file names (``reports/<suite>``,
``grids/<row>.png``, ``schedules/<job>.json``). They are restricted to letters, digits and
``_ . + - =`` (not starting with a dot or a dash), so no name can climb out of the output folder
or hide a file; :func:`inside` checks every path built from them once more before writing.
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r"[^\W_][\w.+=-]*|_[\w.+=-]*")
ACCEPTED_NAMES = "letters, digits and _ . + - = (not starting with . or -), at most 100 characters"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be used in a file name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if len(name) > MAX_NAME_LENGTH:
        return f"{len(name)} characters is too long; accepted: {ACCEPTED_NAMES}"
    if not _SAFE_NAME.fullmatch(name):
        return f"{name!r} is used in file names and may only hold {ACCEPTED_NAMES}"
    return None


def inside(folder: str | Path, relative: str | Path) -> Path:
    """``folder / relative``, refusing a result that is not inside ``folder`` (after resolving
    ``..`` and symbolic links), so nothing is written outside the output folder."""
    base = Path(folder).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{relative} would be written outside the output folder {folder}; refusing")
    return Path(folder) / relative
