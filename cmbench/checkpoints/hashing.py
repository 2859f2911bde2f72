"""Content hashes of checkpoint files: result rows record them so a number names its weights."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``, read in ``chunk``-byte pieces.

    Remembered per (path, inode, size, modification time), so a run that names a checkpoint or
    weights file in several places reads it once; a replaced or rewritten file is read again.
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
