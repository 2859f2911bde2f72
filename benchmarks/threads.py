"""Wall time of cmbench commands by CPU thread count, on an idle machine and under a competing load.

Each measurement is one fresh ``cmbench`` process into an empty output folder. The load is
started by this script: one busy-looping process per core (what another job on a shared CI
machine looks like), running only while the "loaded" measurements run. Thread settings:

- ``auto``: cmbench's default (``--threads`` not given; the cores idle when the run starts),
- ``1``, ``2``, ..., ``all``: ``--threads N``,
- ``torch``: how cmbench ran before it chose threads: torch's own default thread count and
  OpenMP's default wait policy (torch is imported before cmbench's command line starts).

A run past ``--timeout`` is stopped and printed as ``>TIMEOUT``.

    python benchmarks/threads.py                                # the toy suite: auto, 1, 2, all
    python benchmarks/threads.py --workload toy --workload gmm --workload toy_tune --workload nll \\
        --threads auto --threads 1 --threads all --threads torch --repeats 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

WORKLOADS = {  # name -> cmbench arguments (the output folder is appended where the command has one)
    "toy": ["run", "toy", "--quiet"],
    "toy_tune": ["run", "toy_tune", "--quiet"],
    "gmm": ["run", "gmm", "--quiet"],
    "nll": ["nll", "toy", "--model", "edm", "--data", "toy:test", "--passes", "1", "--quiet"],
}
TORCH_DEFAULT = "torch"
_BEFORE = ("import sys, torch; from cmbench.cli import main; "  # torch loads before cmbench sets its wait policy
           "sys.exit(main(sys.argv[1:] + ['--threads', str(torch.get_num_threads())]))")


def command(workload: str, threads: str, out: Path, small: bool) -> tuple[list[str], dict[str, str]]:
    """The process to start and its environment for one measurement."""
    args = list(WORKLOADS[workload])
    if args[0] == "run":
        args += ["--out", str(out)]
        if small:
            args += ["--set", "num_samples=500"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                                               "OPENBLAS_NUM_THREADS")}
    if threads == TORCH_DEFAULT:
        return [sys.executable, "-c", _BEFORE, *args], env
    if threads != "auto":
        args += ["--threads", str(os.cpu_count() if threads == "all" else int(threads))]
    return [sys.executable, "-m", "cmbench", *args], env


def timed_run(argv: list[str], env: dict[str, str], timeout: float) -> float | None:
    """Seconds the process took, or None past ``timeout``; a failing command stops the benchmark."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


class CompetingLoad:
    """One busy-looping process per core while the block runs."""

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                          for _ in range(os.cpu_count() or 1)]
        time.sleep(1.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
            process.wait()


def measure(workload: str, threads: str, repeats: int, timeout: float, small: bool) -> list[float | None]:
    times = []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="cmbench-threads-"))
        try:
            times.append(timed_run(*command(workload, threads, folder / "out", small), timeout))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if times[-1] is None:
            break  # a second timeout teaches nothing
    return times


def summary(times: list[float | None], timeout: float) -> tuple[str, str, float]:
    """(min, median, median in seconds for ratios) of one cell; timeouts count as the timeout."""
    if any(t is None for t in times):
        return f">{timeout:.0f}", f">{timeout:.0f}", float("inf")
    return f"{min(times):.1f}", f"{statistics.median(times):.1f}", statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: toy")
    parser.add_argument("--threads", action="append", help="auto, a number, all or torch (default: auto, 1, 2, all)")
    parser.add_argument("--load", action="append", choices=("idle", "loaded"), help="default: both")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is stopped")
    parser.add_argument("--small", action="store_true", help="suites at num_samples=500")
    args = parser.parse_args()
    settings = list(dict.fromkeys(args.threads or ["auto", "1", "2", "all"]))
    print(f"{os.cpu_count()} cores; {args.repeats} repetition(s) per cell; seconds of wall time; "
          f"load = {os.cpu_count()} busy processes started by this script")
    print(f"{'workload':<10} {'load':<7} {'threads':<8} {'min':>8} {'median':>8} {'vs best':>8}")
    for workload in args.workload or ["toy"]:
        for load in args.load or ["idle", "loaded"]:
            with CompetingLoad() if load == "loaded" else nullcontext():
                cells = {s: summary(measure(workload, s, args.repeats, args.timeout, args.small), args.timeout)
                         for s in settings}
            best = min(cell[2] for cell in cells.values())
            for setting, (low, median, value) in cells.items():
                ratio = value / best if best not in (0.0, float("inf")) and value != float("inf") else float("inf")
                print(f"{workload:<10} {load:<7} {setting:<8} {low:>8} {median:>8} {ratio:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
