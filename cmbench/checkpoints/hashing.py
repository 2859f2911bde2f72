"""Content hashes of checkpoint files and folders: result rows record them so a number names its weights.

A folder's digest (:func:`sha256_path`) is ``sha256(json.dumps(pairs))`` over its sorted
``[relative POSIX path, file sha256]`` pairs (compact separators). For a diffusers folder the
pairs are only the two files the loader reads, relative to the ``unet`` folder:
``config.json`` and the weights file (:mod:`cmbench.checkpoints.diffusers_files`).
"""

from __future__ import annotations

import hashlib
import json
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


def read_hashed(path: Path, what: str) -> tuple[bytearray, str]:
    """The bytes of the file at ``path`` in a writable buffer (tensors can view it without a
    copy) and their sha256, read once; the digest is remembered for :func:`sha256_file`.
    Raises FileNotFoundError naming ``what`` for a missing file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    stat = os.stat(path)
    data = bytearray(stat.st_size)
    with open(path, "rb") as f:
        read = f.readinto(data)
    if read != stat.st_size:
        raise ValueError(f"{path}: read {read} bytes of {stat.st_size}; the file changed while it was read")
    sha256 = hashlib.sha256(data).hexdigest()
    _DIGESTS[(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)] = sha256
    return data, sha256


def folder_digest(pairs: list[tuple[str, str]]) -> str:
    """sha256 of ``json.dumps`` of the sorted ``[relative path, file sha256]`` pairs."""
    text = json.dumps(sorted([name, digest] for name, digest in pairs), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """The content hash of a checkpoint file or folder.

    A file: :func:`sha256_file`. A diffusers folder (a pipeline folder with ``unet/``, or the
    ``unet`` folder itself): the digest its loader records, over ``config.json`` and the weights
    file it reads. Any other folder: :func:`folder_digest` over every file below it.
    Raises FileNotFoundError if ``path`` does not exist.
    """
    from cmbench.checkpoints.diffusers_files import find_diffusers_unet

    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    found = find_diffusers_unet(path)
    if found is not None:
        return folder_digest([(f.name, sha256_file(f)) for f in (found.config, found.weights)])
    files = []
    for root, _, names in os.walk(path):
        files.extend(Path(root) / name for name in names)
    return folder_digest([(f.relative_to(path).as_posix(), sha256_file(f)) for f in files])
