"""CPU threads for torch and the BLAS libraries: one setting, chosen for the machine as it is now.

The networks cmbench runs on a CPU are mostly small: thousands of tiny calls, each too short to
share between threads. On a machine that other jobs also use, threads that wait for one another
cost far more than they save (the toy suite, 2 cores under a competing load: 21 s with one
thread, 58 s with torch's default of two; ``benchmarks/threads.py``). ``auto`` therefore takes
as many threads as there are idle cores when the run starts (at least one), which is every core
on an idle machine, where big networks (Inception on a CPU) gain from them, and one on a busy one.
An ``OMP_NUM_THREADS`` set in the environment is the user's own choice and wins over ``auto``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

AUTO = "auto"
_PROBE_SECONDS = 0.2


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads a run uses, and why (recorded in ``run.json``)."""

    count: int
    setting: str  # "auto", "OMP_NUM_THREADS" or the number asked for
    cores: int
    idle_cores: float | None  # measured at the start (auto only)

    def as_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])  # guest time is already counted in user time


def idle_cores(seconds: float = _PROBE_SECONDS) -> float | None:
    """Cores left idle by every process on the machine over ``seconds``; None where unmeasurable.

    Read from /proc/stat (Linux); elsewhere the one-minute load average stands in."""
    before = _cpu_times()
    if before is None:
        try:
            return max(0.0, (os.cpu_count() or 1) - os.getloadavg()[0])
        except (AttributeError, OSError):
            return None
    time.sleep(seconds)
    after = _cpu_times()
    total = after[1] - before[1]
    if total <= 0:
        return None
    return (os.cpu_count() or 1) * (after[0] - before[0]) / total


def choose_threads(setting: int | str | None = AUTO) -> ThreadChoice:
    """The thread count for ``setting``: a positive number, or ``auto`` / None (see the module)."""
    cores = usable_cores()
    if setting not in (None, AUTO):
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ValueError(f"threads must be a positive integer or 'auto', not {setting!r}")
        return ThreadChoice(setting, str(setting), cores, None)
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return ThreadChoice(int(from_env), "OMP_NUM_THREADS", cores, None)
    idle = idle_cores()
    count = cores if idle is None else min(cores, max(1, round(idle)))
    return ThreadChoice(count, AUTO, cores, None if idle is None else round(idle, 2))


def parse_threads(value: str) -> int | str:
    """``--threads`` / ``threads:`` values: ``auto`` or a positive integer."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"threads must be a positive integer or 'auto', not {value!r}")


@contextmanager
def using_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads and the BLAS pools at ``count`` within the block, restored after."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def process_threads(count: int) -> Iterator[None]:
    """The process at ``count`` threads within the block, restored after: the thread variables the
    libraries read when they load (the command line enters this before importing torch or numpy),
    and torch's count if torch is loaded already."""
    variables = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update({name: str(count) for name in variables})
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if before is not None:
            torch.set_num_threads(before)


def prefer_passive_waiting() -> None:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the
    environment says otherwise. Only effective before torch is imported; the command line calls it
    first thing. Spinning threads burn the cores a busy machine's other jobs are waiting for."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
