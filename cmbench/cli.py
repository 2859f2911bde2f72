"""The command line: a thin layer over :mod:`cmbench.runner` and :mod:`cmbench.report`.

:func:`main` parses the arguments (:mod:`cmbench.cli_parser`), runs the command
(:mod:`cmbench.cli_commands`) with cmbench's log messages on standard error
(:func:`cmbench.console.command_line_logging`), and turns what goes wrong into one line and an
exit status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from . import cli_commands as commands
from .cli_commands import DEFAULT_SUITE, Interrupted, bundled_suites, resolve_suite  # noqa: F401 - the public names
from .cli_parser import build_parser
from .cli_stats import stats_compute_command
from .console import close_progress_bars, command_line_logging

SUITE_COMMANDS = (commands.run_command, commands.score_command, commands.tune_command, commands.nll_command)
"""Commands whose suite's ``threads`` key ``--threads`` overrides."""
SCALED_COMMANDS = (*SUITE_COMMANDS, stats_compute_command)
"""Commands that split their work over the ranks ``torchrun`` starts (:mod:`cmbench.distributed`);
the others run whole on every rank."""


def _threads_for(args: argparse.Namespace):
    """Commands without a suite run at ``--threads`` (else auto) for the whole command; the suite
    commands apply the suite's ``threads``, which ``--threads`` overrides."""
    from .threads import choose_threads, process_threads

    if args.func in SUITE_COMMANDS:
        return nullcontext()
    return process_threads(choose_threads(args.threads).count)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a regression or failed rows, 2 bad input or a
    failure cmbench explains, 3 an unexpected error (a bug: its traceback with ``--debug``),
    130 interrupted (Ctrl-C: one line saying what is kept and how to resume). Without ``--debug``
    no traceback is printed. When the reader of standard output goes away (``cmbench ... | head``)
    the command stops silently with status 0."""
    from .threads import prefer_passive_waiting

    prefer_passive_waiting()  # before anything imports torch
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # --help, --version or a usage error, printed: flush it here, where a closed pipe is caught
        _finish(0)
        raise
    from .distributed import SINGLE, launched_world

    try:
        world = launched_world() if args.func in SCALED_COMMANDS else SINGLE
    except (ValueError, RuntimeError) as err:  # the launcher's environment is unusable
        print(f"cmbench: error: {err}", file=sys.stderr)
        return 2
    with _joined(world, args), _threads_for(args), \
            command_line_logging(quiet=getattr(args, "progress", None) is False or not world.main):
        return _call(args, argv, f" (rank {world.rank} of {world.size})" if world.distributed else "")


@contextmanager
def _joined(world, args: argparse.Namespace) -> Iterator:
    """``args.world``: the ranks torchrun started, for the commands that split their work (one
    process otherwise); the process group is left at the end. On the other ranks than the main one
    the command draws no progress bars and prints nothing to standard output (the main rank prints
    the results); errors still show."""
    from .distributed import leave

    args.world = world
    if not world.main:
        args.progress = False
        _discard_stdout()
    try:
        yield world
    finally:
        leave(world)


def _call(args: argparse.Namespace, argv: list[str], where: str = "") -> int:
    """The command's handler, its failures turned into one line and an exit status (see main);
    ``where`` names the rank in a torchrun job."""
    if args.debug:
        return _finish(args.func(args))
    try:
        return _finish(args.func(args))
    except KeyboardInterrupt as interrupt:
        close_progress_bars()
        print(interrupted_message(interrupt, argv), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cmbench ... | head`: the reader left; nothing more to say
        _discard_stdout()
        return 0
    except (ValueError, OSError, RuntimeError) as err:  # incl. config errors, missing files, failed downloads
        print(f"cmbench: error{where}: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("cmbench: error: out of memory; lower num_samples, the reference's num_images or batch_size",
              file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, trace with --debug
        print(f"cmbench: internal error{where}: {type(err).__name__}: {err} (this is a bug in cmbench; "
              "rerun with --debug for the traceback)", file=sys.stderr)
        return 3


def _finish(status: int) -> int:
    """``status``, once standard output is flushed: a reader that left (a broken pipe) is noticed
    here rather than in the interpreter's last flush, and silenced."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    return status


def interrupted_message(interrupt: KeyboardInterrupt, argv: list[str]) -> str:
    """The line a Ctrl-C prints: what is kept, and the command that resumes."""
    if isinstance(interrupt, Interrupted):
        command = shlex.join(["cmbench", *argv])
        return f"cmbench: interrupted; {interrupt.kept}. To resume, run the same command again: {command}"
    return "cmbench: interrupted"


def _discard_stdout() -> None:
    """Point standard output at the null device, so the interpreter's final flush of what is still
    buffered does not fail again ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor behind sys.stdout (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
