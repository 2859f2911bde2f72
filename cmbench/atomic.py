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


class AtomicFile:
    """A temporary file in ``path``'s folder (``file``, open for writing) that becomes ``path`` at
    :meth:`commit` and vanishes at :meth:`discard`: for writers that fill a file over many calls.

    With ``overwrite=False`` an existing ``path`` is an error (checked at once, and again at
    publication time through a hard link where the file system supports it).
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = True):
        self.path = Path(path)
        self.overwrite = overwrite
        if not overwrite and self.path.exists():
            raise FileExistsError(f"{self.path} exists; refusing to overwrite it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.file: BinaryIO = os.fdopen(fd, "w+b")

    def commit(self) -> Path:
        """Flush the data to disk and move it to ``path``; the temporary file is gone either way."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self._tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
            if self.overwrite:
                os.replace(self._tmp, self.path)
            else:
                _publish_new(self._tmp, self.path)
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file (after :meth:`commit`: nothing left to do)."""
        self.file.close()
        Path(self._tmp).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, overwrite: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file and move it to ``path`` (see :class:`AtomicFile`)."""
    target = AtomicFile(path, overwrite=overwrite)
    try:
        write(target.file)
    except BaseException:
        target.discard()
        raise
    return target.commit()


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
