"""Several processes under ``torchrun``: who this process is, and the few collectives cmbench needs.

Per-sample seeds make every image independent of the process that makes it (:mod:`cmbench.seeds`),
so scaling out is a split of work: each rank samples and extracts features for its share of the
seeds (or images), the features go to rank 0, and rank 0 alone scores, decides and writes. Its
decisions (which rows are pending, a tuned value, an error) reach the other ranks by broadcast,
so every rank walks the same path.

What travels is CPU data (numpy features, float64 sums, small records), pickled over a gloo
process group, on GPUs as well: features are copied to the host anyway to be scored and stored,
so NCCL would add two copies and gain nothing. A rank that raises outside a shared decision
exits with its error; ``torchrun`` then stops the other ranks, so a failure never hangs the job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(hours=2)
"""How long a rank waits for the others at a gather or broadcast (gloo's default is 30 minutes,
shorter than one shard of a slow model can take on a slower rank)."""

_SHARED_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, OSError, ValueError, RuntimeError)


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` ranks (one per device); ``rank`` 0 is the main one."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def part(self, count: int) -> range:
        """This rank's contiguous share of ``range(count)``; shares differ in length by at most one."""
        return range(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, by rank, on the main rank; None elsewhere."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        received = [None] * self.size if self.main else None
        dist.gather_object(value, received, dst=0)
        return received

    def share(self, value: Any) -> Any:
        """The main rank's ``value`` on every rank (what the others pass is ignored)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def decide(self, decision: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``decision(*args, **kwargs)`` computed on the main rank and returned on every rank; an
        error it raises (a user's error: ValueError, OSError, RuntimeError) is raised on every rank,
        so all ranks stop together with the same message instead of waiting for each other."""
        if not self.distributed:
            return decision(*args, **kwargs)
        outcome: tuple[str, Any]
        if self.main:
            try:
                outcome = ("value", decision(*args, **kwargs))
            except _SHARED_ERRORS as err:
                outcome = ("error", (_error_kind(err), str(err)))
                self.share(outcome)
                raise
        shared = self.share(outcome if self.main else None)
        kind, value = shared
        if kind == "error":
            error_type = next(e for e in _SHARED_ERRORS if e.__name__ == value[0])
            raise error_type(value[1])
        return value

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


SINGLE = World()
"""One process: every collective is the identity."""


def _error_kind(err: BaseException) -> str:
    return next(e.__name__ for e in _SHARED_ERRORS if isinstance(err, e))


def launched_world() -> World:
    """The world ``torchrun`` (or any launcher setting ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) started this process in, its process group joined; SINGLE
    when not launched so, or launched as one process."""
    size = _int_env("WORLD_SIZE", 1)
    if size <= 1:
        return SINGLE
    rank, local_rank = _int_env("RANK", 0), _int_env("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise ValueError(f"environment: RANK={rank} is not in 0..{size - 1} (WORLD_SIZE={size})")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    return World(rank=rank, size=size, local_rank=local_rank)


def leave(world: World) -> None:
    """Leave the process group ``world`` joined (at the end of a command)."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment: {name}={text!r} is not an integer (torchrun sets it)") from None
