"""One writer per output folder.

A run (or tune) holds an exclusive ``flock`` on ``<out>/.cmbench.lock`` while it writes there, so
two processes given the same ``--out`` cannot interleave their rewrites of ``results.jsonl`` and
lose each other's rows. The operating system releases the lock when the holder exits, however
it exits, so a killed run never leaves a stale lock behind. The file's text names the holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".cmbench.lock"


class FolderBusyError(RuntimeError):
    """Another cmbench process is writing to the output folder."""


@contextmanager
def output_folder_lock(folder: str | Path, *, wait: bool = False, shared: bool = False) -> Iterator[Path]:
    """Hold the folder's lock for the ``with`` block; without ``wait`` a busy folder is an error at once.
    ``shared``: shard jobs (``--shard``) hold it together, each writing only its own shard files;
    a run, a merge or a tune waits for all of them (and they for it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise FolderBusyError(
                f"output folder {folder} is in use by {holder}; wait for it to finish, pass --wait to queue "
                "behind it, or give another --out (two runs writing one folder would lose rows)") from None
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"cmbench pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock
