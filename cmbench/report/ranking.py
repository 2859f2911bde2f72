"""Which rows of a table are best at a metric, and only beyond noise.

A row is marked "best" when it beats every other row by more than z standard errors of the
difference, ``|a − b| > z·√(se_a² + se_b²)`` (the rows' bootstrap errors are independent: they
come from different samples). Rows that the best does not beat by that much are "tied" with it,
and the best is then "tied" too: no row is singled out. z is the suite's regression z, the one
``cmbench compare`` uses to call a change worse or better (3 unless the suite says otherwise), so
the report and the regression check agree about what noise is.

Fail closed: when a row with a value has no standard error, nothing in that column is ranked (its
noise is unknown, so no difference to it can be called real). Rows repeating the same measurement
(one model's bits/dim copied into each of its sampler rows) count once, so a table whose column
holds a single measurement marks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from cmbench.report.numbers import is_finite_number, is_standard_error

BEST = "best"
TIED = "tied"


@dataclass(frozen=True)
class Measurement:
    """One row's value of a metric with its standard error; ``source`` says which measurement it
    is, so rows that repeat one measurement (same source, value and se) count once."""

    value: float
    se: float | None
    source: Hashable = None


def rank_marks(measurements: Sequence[Measurement | None], direction: str, z: float) -> list[str | None]:
    """BEST, TIED or None for each position (None: no value, or not marked).

    ``direction`` is "lower" or "higher" (which values are better). Positions holding None or a
    non-finite value take no part. Nothing is marked when fewer than two distinct measurements
    remain or when any of them lacks a finite standard error.
    """
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    present = [m if m is not None and is_finite_number(m.value) else None for m in measurements]
    distinct = list(dict.fromkeys(m for m in present if m is not None))
    if len(distinct) < 2 or not all(is_standard_error(m.se) for m in distinct):
        return [None] * len(measurements)
    best = (min if direction == "lower" else max)(distinct, key=lambda m: m.value)
    tied = {m for m in distinct if not differ_beyond_noise(best, m, z)}
    mark = BEST if tied == {best} else TIED
    return [mark if m in tied else None for m in present]


def differ_beyond_noise(a: Measurement, b: Measurement, z: float) -> bool:
    """Whether ``a`` and ``b`` differ by more than z standard errors of their difference;
    identical measurements never do."""
    return a != b and abs(a.value - b.value) > z * math.hypot(a.se or 0.0, b.se or 0.0)
