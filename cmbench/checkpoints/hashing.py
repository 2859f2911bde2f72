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


def read_verified(path: Path, expected_sha256: str | None, what: str) -> tuple[bytes, str]:
    """The bytes of the file at ``path`` and their sha256, read once, so a loader hashes exactly
    what it loads. Raises FileNotFoundError (naming ``what``) for a missing file and ValueError
    when ``expected_sha256`` is given and differs. The digest is remembered for :func:`sha256_file`.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    stat = os.stat(path)
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ValueError(f"{path}: sha256 mismatch: expected {expected_sha256}, file has {sha256}")
    _DIGESTS[(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)] = sha256
    return data, sha256
