"""Starting cmbench as real processes: under torchrun (gloo, CPU) or alone, for the scale-out tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a launcher's variables, one thread per process, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def torchrun_command(argv: Sequence[str], nproc: int = 2) -> list[str]:
    """``torchrun --nproc_per_node NPROC -m cmbench ARGV`` on this interpreter (``python -m
    torch.distributed.run`` is torchrun; the script itself may not be on PATH)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "cmbench", *argv]


def torchrun(argv: Sequence[str], cwd: Path, *, nproc: int = 2, check: bool = True, timeout: float = 240,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmbench ARGV`` as ``nproc`` gloo processes; with ``check`` a failure shows its standard error."""
    proc = subprocess.run(torchrun_command(argv, nproc), cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def cmbench_process(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m cmbench ARGV`` started in the background (standard output and error captured)."""
    return subprocess.Popen([sys.executable, "-m", "cmbench", *argv], cwd=cwd, env=env or clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
