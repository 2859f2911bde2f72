"""What cmbench shows while it works: progress bars, and the lines of the command line.

One rule decides whether a progress bar is drawn (:func:`progress_enabled`): when asked
(``progress=True``, ``--progress``), never when told not to (``False``, ``--quiet``, the Python
API's default), and otherwise only when standard error is a terminal, so a CI log or a file
gets no carriage-return frames. Every bar in cmbench comes from :func:`progress_bar`.

Messages go through the standard :mod:`logging` module under the ``cmbench`` logger: a library
user sees nothing unless they configure logging; the command line attaches
:func:`command_line_logging`, which writes them to standard error (warnings only with
``--quiet``). :func:`write_line` prints a line without tearing a progress bar that is being drawn.

This module imports only the standard library (tqdm on first use), so the command line's parser
can use it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

LOGGER = "cmbench"


def progress_enabled(progress: bool | None, stream: TextIO | None = None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else whether ``stream`` (standard
    error) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None, **options: Any):
    """A tqdm progress bar on standard error, drawn if :func:`progress_enabled` (else a silent
    pass-through with the same interface); ``options`` are tqdm's (``total``, ``desc``, ``unit``, ...)."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not progress_enabled(progress), **options)


def write_line(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` and a newline on ``stream`` (standard output), clearing and redrawing any
    progress bar being drawn so the two do not mix on a terminal."""
    stream = sys.stdout if stream is None else stream
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None and getattr(tqdm_module.tqdm, "_instances", None):
        tqdm_module.tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()


def close_progress_bars() -> None:
    """Close every progress bar still drawn (before a last message, e.g. after Ctrl-C)."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.close()


class _LineHandler(logging.Handler):
    """Log records as lines on the current standard error (looked up at each record, so a
    replaced ``sys.stderr`` is honoured), through :func:`write_line`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record), sys.stderr)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    """Information as it is; warnings and errors prefixed (``cmbench: warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"cmbench: {record.levelname.lower()}: {message}"
        return message


@contextmanager
def command_line_logging(quiet: bool = False) -> Iterator[None]:
    """Within the block, cmbench's log messages (INFO and up; WARNING and up when ``quiet``) go to
    standard error as plain lines. The handler is removed afterwards (the command line may run
    many times in one process, as the tests do)."""
    logger = logging.getLogger(LOGGER)
    handler = _LineHandler()
    handler.setFormatter(_Formatter())
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
