"""``--shard INDEX/COUNT``: which part of every row a shard job makes (:mod:`cmbench.shards`).
Kept apart from the shard store so the command line parses it without loading numpy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardPart:
    """``--shard index/count``: this process makes the ``index``-th of ``count`` equal runs of batches."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "ShardPart":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: give INDEX/COUNT, e.g. 0/4 (shards 0/4 .. 3/4)") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text!r}: INDEX must be in 0..COUNT-1 and COUNT at least 1")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
