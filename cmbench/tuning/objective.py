"""What a tune job minimises: one metric column, a weighted sum of columns, or columns in order.

    metric: fid                       # one column (is_mean, precision, recall, ... are maximised)
    metric: {fid: 1, recall: -100}    # weighted: minimise Σ weight · value (a negative weight rewards a column)
    metric: [fid, recall]             # lexicographic: fid decides; recall breaks ties within fid's noise

A candidate's metric columns become *losses*, the keys the search minimises in priority order:
one for a single column (the value, negated when higher is better) or a weighted sum, one per
column for a lexicographic objective. The same map turns each bootstrap replicate of the columns
into replicates of the losses (:mod:`cmbench.tuning.scores`), so noise follows the objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..metrics import DIRECTIONS

COMBINES = ("single", "weighted", "lexicographic")


@dataclass(frozen=True)
class Objective:
    """``columns`` with their ``weights`` (weighted), or in priority order (lexicographic)."""

    columns: tuple[str, ...]
    combine: str = "single"
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"objective combine {self.combine!r}; accepted: {', '.join(COMBINES)}")
        unknown = [c for c in self.columns if c not in DIRECTIONS]
        if unknown or not self.columns:
            raise ValueError(f"objective columns {list(self.columns)}: each must be a scored column "
                             f"({', '.join(DIRECTIONS)})")
        if self.combine == "single" and len(self.columns) != 1:
            raise ValueError(f"a single objective has one column, got {list(self.columns)}")
        if self.combine == "weighted" and (len(self.weights) != len(self.columns)
                                           or not all(math.isfinite(w) and w != 0 for w in self.weights)):
            raise ValueError(f"a weighted objective needs one finite non-zero weight per column; got "
                             f"{dict(zip(self.columns, self.weights))}")

    @property
    def primary(self) -> str:
        return self.columns[0]

    @property
    def minimised(self) -> bool:
        """Whether ``value`` (what the schedule file records) is lower-is-better."""
        return self.combine == "weighted" or DIRECTIONS[self.primary] == "lower"

    @property
    def label(self) -> str:
        if self.combine == "single":
            return self.primary
        if self.combine == "weighted":
            return " + ".join(f"{w:g}·{c}" for c, w in zip(self.columns, self.weights)).replace("+ -", "− ")
        return " then ".join(self.columns)

    def describe(self) -> dict:
        """The objective as the schedule file records it."""
        return {"metric": self.label, "columns": list(self.columns), "combine": self.combine,
                "weights": list(self.weights) if self.combine == "weighted" else None,
                "direction": "min" if self.minimised else "max"}

    def losses(self, values: Mapping[str, float]) -> tuple[float, ...]:
        """The minimised keys, in priority order, of a candidate's column values."""
        if self.combine == "weighted":
            return (math.fsum(w * values[c] for c, w in zip(self.columns, self.weights)),)
        return tuple(_oriented(c, values[c]) for c in self.columns)

    def value(self, losses: Sequence[float]) -> float:
        """The number the schedule file records: the column itself (single, lexicographic's first)
        or the weighted sum."""
        return losses[0] if self.minimised else -losses[0]


def _oriented(column: str, value: float) -> float:
    return value if DIRECTIONS[column] == "lower" else -value


def parse_objective(raw) -> Objective:
    """``metric:`` as a suite gives it (a column name, a {column: weight} mapping, a list of columns)."""
    if isinstance(raw, str):
        return Objective((raw,))
    if isinstance(raw, Mapping):
        if not raw:
            raise ValueError("an empty mapping; give {column: weight, ...}")
        bad = {k: v for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"weights must be numbers; got {bad}")
        if len(raw) == 1:
            (column, weight), = raw.items()
            if weight > 0:
                return Objective((str(column),))
        return Objective(tuple(map(str, raw)), "weighted", tuple(float(w) for w in raw.values()))
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(c, str) for c in raw):
        if len(set(raw)) != len(raw):
            raise ValueError(f"a column is listed twice in {list(raw)}")
        return Objective(tuple(raw), "lexicographic" if len(raw) > 1 else "single")
    raise ValueError(f"got {raw!r}; accepted: a column name, a {{column: weight}} mapping or a list of columns")
