"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, never half.

The data goes to a temporary file in the target's folder, is flushed to disk, and is renamed
over the target with ``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file and move it to ``path``.

    With ``overwrite=False`` an existing ``path`` is an error (checked before writing, and
    again at publication time through a hard link where the file system supports it).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _publish_new(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
    except OSError:  # no hard links on this file system
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
        os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
