"""Greedy placement of multistep time points, the CM paper's procedure (Song et al. 2023, §6).

NFE 1 uses the two ends of the trajectory (σ_max and the terminal σ_min). Each further NFE keeps
every point found so far and adds one: in every gap between neighbouring points a line search
(:mod:`cmbench.tuning.search`) places a candidate, and the best gap wins. Points live in a
*space*: integer indices of a Karras grid (the official scripts' ``ts``) or the continuous
coordinate u = −ln σ. In both, positions increase along the trajectory (σ decreases).

The objective takes the descending σ values of a whole schedule (terminal point included) and
returns the metric; every distinct schedule is evaluated once and recorded in the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..samplers.schedules import karras_index_sigmas
from .search import FLOAT_SEARCHES, INTEGER_SEARCHES, METHODS, Memo

SPACES = ("karras_index", "sigma")


@dataclass(frozen=True)
class KarrasIndexSpace:
    """Integer indices 0..steps−1 of a ``steps``-point Karras grid from σ_max to σ_min."""

    steps: int
    sigma_min: float
    sigma_max: float
    rho: float = 7.0
    kind: str = field(default="karras_index", init=False)

    @property
    def ends(self) -> tuple[int, int]:
        return 0, self.steps - 1

    def sigmas(self, positions: Sequence[int]) -> list[float]:
        return karras_index_sigmas(positions, self.steps, self.sigma_min, self.sigma_max, self.rho).tolist()

    def has_interior(self, a: int, b: int) -> bool:
        return b - a >= 2

    def search(self, method: str, f: Callable[[int], float], a: int, b: int) -> int:
        return INTEGER_SEARCHES[method](f, a + 1, b - 1)


@dataclass(frozen=True)
class LogSigmaSpace:
    """Continuous u = −ln σ on [−ln σ_max, −ln σ_min]; searches stop at brackets ``tol`` wide."""

    sigma_min: float
    sigma_max: float
    tol: float = 0.05
    kind: str = field(default="sigma", init=False)

    @property
    def ends(self) -> tuple[float, float]:
        return -math.log(self.sigma_max), -math.log(self.sigma_min)

    def sigmas(self, positions: Sequence[float]) -> list[float]:
        exact = {self.ends[0]: self.sigma_max, self.ends[1]: self.sigma_min}  # no exp/log round-off at the ends
        return [exact.get(u, math.exp(-u)) for u in positions]

    def has_interior(self, a: float, b: float) -> bool:
        return b - a > self.tol

    def search(self, method: str, f: Callable[[float], float], a: float, b: float) -> float:
        return FLOAT_SEARCHES[method](f, a, b, self.tol)


@dataclass(frozen=True)
class Evaluation:
    """One objective evaluation: the NFE being searched, the gap (0 = after σ_max), the candidate
    position and its σ, the whole schedule and the metric value."""

    nfe: int
    gap: int | None
    position: float | None
    sigma: float | None
    sigmas: tuple[float, ...]
    value: float


@dataclass(frozen=True)
class TunedSchedule:
    nfe: int
    positions: tuple
    sigmas: tuple[float, ...]
    value: float
    evaluations: int


def greedy_time_points(
    objective: Callable[[tuple[float, ...]], float],
    space: KarrasIndexSpace | LogSigmaSpace,
    method: str,
    max_nfe: int,
    *,
    maximise: bool = False,
    on_evaluation: Callable[[Evaluation], None] = lambda e: None,
) -> tuple[list[TunedSchedule], list[Evaluation]]:
    """Schedules for NFE 1..``max_nfe`` found greedily, and the trace of every evaluation."""
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; accepted: {', '.join(METHODS)}")
    memo = Memo(lambda positions: objective(tuple(space.sigmas(positions))))
    trace: list[Evaluation] = []
    sign = -1.0 if maximise else 1.0

    def score(positions: tuple, nfe: int, gap: int | None, candidate) -> float:
        fresh = positions not in memo.values
        value = memo(positions)
        if fresh:
            sigma = None if candidate is None else space.sigmas([candidate])[0]
            entry = Evaluation(nfe, gap, candidate, sigma, tuple(space.sigmas(positions)), value)
            trace.append(entry)
            on_evaluation(entry)
        return sign * value

    points = tuple(space.ends)
    score(points, 1, None, None)
    found = [_tuned(space, points, memo, trace, 1)]
    for nfe in range(2, max_nfe + 1):
        best = None
        for gap, (a, b) in enumerate(zip(points, points[1:])):
            if not space.has_interior(a, b):
                continue

            def in_gap(x, gap=gap):
                return score(tuple(sorted((*points, x))), nfe, gap, x)

            x = space.search(method, in_gap, a, b)
            if best is None or in_gap(x) < best[0]:
                best = (in_gap(x), tuple(sorted((*points, x))))
        if best is None:
            raise ValueError(f"no room for a time point at NFE {nfe}: every gap of {list(points)} is too "
                             f"narrow for the {space.kind} space (use more karras_steps or a smaller tol)")
        points = best[1]
        found.append(_tuned(space, points, memo, trace, nfe))
    return found, trace


def _tuned(space, points: tuple, memo: Memo, trace: list[Evaluation], nfe: int) -> TunedSchedule:
    return TunedSchedule(nfe, points, tuple(space.sigmas(points)), memo.values[points],
                         sum(1 for e in trace if e.nfe == nfe))
