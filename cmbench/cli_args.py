"""Argument types for the command line: each refuses a bad value with its accepted range, so
argparse reports it (``cmbench run: error: argument --batch-size: ...``, exit status 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {value}")
        return value
    parse.__name__ = f"integer ≥ {minimum}"
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


positive_integer = integer_at_least(1)
non_negative_integer = integer_at_least(0)


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress`` (either, not both) into ``args.progress``: False, True, or
    None, where progress bars are drawn only when standard error is a terminal
    (:func:`cmbench.console.progress_enabled`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", dest="progress", action="store_const", const=False,
                       help="no progress bars and no messages but warnings and errors; results still print")
    group.add_argument("--progress", dest="progress", action="store_const", const=True,
                       help="draw progress bars even when standard error is not a terminal "
                            "(default: only on a terminal)")


def shard_part(text: str):
    """An argparse type: ``--shard INDEX/COUNT`` (:class:`cmbench.shard_part.ShardPart`)."""
    from .shard_part import ShardPart

    try:
        return ShardPart.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--shard {text!r}: ")) from None
