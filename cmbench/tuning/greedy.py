"""Greedy placement of multistep time points (the CM paper's procedure, Song et al. 2023, §6),
then joint refinement.

NFE 1 uses the two ends of the trajectory (σ_max and the terminal σ_min). Each further NFE keeps
every point found so far and adds one. How the point is placed is the *method*:

- ``robust`` (default): one :func:`cmbench.tuning.robust.step` over a lattice of candidates in
  every gap at once (screened on few samples, raced, polished, ties settled by more samples);
- ``ternary`` (the paper's), ``golden`` or ``grid`` (exhaustive): a line search
  (:mod:`cmbench.tuning.search`) in each gap on the proxy samples, the best gap winning.

With ``refine`` the NFE's schedule is then refined jointly by coordinate descent: each point is
searched again between its neighbours with the others fixed, pass after pass, until no point
moves, so an NFE-3 schedule is not locked into the NFE-2 choice. Points live in a *space*:
integer indices of a Karras grid (the official scripts' ``ts``) or the continuous coordinate
u = −ln σ. In both, positions increase along the trajectory (σ decreases).

``evaluate(sigmas, samples)`` scores a whole schedule (its descending σ values, terminal point
included) on the first ``samples`` proxy seeds; each (schedule, sample count) is evaluated once,
charged to the :class:`~cmbench.tuning.budget.Ledger` and recorded in the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..choices import TUNE_METHODS
from ..samplers.schedules import karras_index_sigmas
from .budget import Ledger, OutOfBudget
from .robust import Ladder, float_lattice, integer_lattice, neighbours, step
from .scores import Score, best_of
from .search import FLOAT_SEARCHES, INTEGER_SEARCHES

SPACES = ("karras_index", "sigma")
POLISH_ALLOWANCE = 3.0
"""Evaluations a robust step keeps back from its screen for the polish and the tie-break."""
METHODS = TUNE_METHODS  # "robust", then the line searches (LINE_SEARCHES); named in choices for the parser


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

    def lattice(self, a: int, b: int, points: int) -> list[int]:
        return integer_lattice(a + 1, b - 1, points)


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

    def lattice(self, a: float, b: float, points: int) -> list[float]:
        return float_lattice(a, b, max(1, min(points, math.floor((b - a) / self.tol))))


@dataclass(frozen=True)
class Settings:
    """How a search spends its evaluations: the ``method``, joint ``refine``-ment (at most
    ``max_passes`` passes), the sample :class:`Ladder`, the tie threshold ``z`` (paired standard
    errors) and the candidates per gap of a ``robust`` step's screen (``screen_points``)."""

    method: str = "robust"
    refine: bool = True
    ladder: Ladder = Ladder((500,))
    z: float = 1.0
    screen_points: int = 20
    max_passes: int = 4

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown search method {self.method!r}; accepted: {', '.join(METHODS)}")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: the NFE being searched, the stage (``start``, ``insert`` or ``refine``), the
    gap (0 = after σ_max) and position of the point being placed and its σ, the whole schedule,
    the sample count, the objective value and its standard error, the cost (evaluations, see
    :mod:`cmbench.tuning.budget`) and the seconds it took."""

    nfe: int
    stage: str
    gap: int | None
    position: float | None
    sigma: float | None
    sigmas: tuple[float, ...]
    samples: int
    value: float
    se: float
    cost: float
    seconds: float


@dataclass(frozen=True)
class TunedSchedule:
    """The schedule chosen for one NFE, its objective value and standard error on the proxy
    samples, and the evaluations spent on that NFE (count and cost)."""

    nfe: int
    positions: tuple
    sigmas: tuple[float, ...]
    value: float
    se: float
    evaluations: int
    cost: float


Evaluate = Callable[[tuple[float, ...], int], "tuple[Score, float]"]
"""(schedule σ values, sample count) -> (its score, seconds the evaluation took)."""


class _Search:
    """The memo, trace and ledger one greedy search shares between its steps."""

    def __init__(self, evaluate: Evaluate, space, settings: Settings, value: Callable[[Score], float],
                 ledger: Ledger, on_evaluation: Callable[[Evaluation], None]):
        self.evaluate, self.space, self.settings, self.value = evaluate, space, settings, value
        self.ledger, self.on_evaluation = ledger, on_evaluation
        self.scores: dict[tuple, Score] = {}
        self.largest: dict[tuple, int] = {}  # the most samples each schedule was scored on
        self.trace: list[Evaluation] = []
        self.context: tuple[int, str] = (1, "start")
        self.moving: Callable[[tuple], tuple] | None = None  # schedule -> (gap, position) of the point placed

    def score(self, positions: tuple, samples: int, *, charged: bool = True) -> Score:
        """The memoised score; a new evaluation needs budget unless not ``charged`` against the share
        (the one proxy evaluation that records a schedule chosen when the budget ran out)."""
        key = (positions, samples)
        if key not in self.scores:
            if charged:
                self.ledger.check()
            score, seconds = self.evaluate(tuple(self.space.sigmas(positions)), samples)
            cost = max(0, samples - self.largest.get(positions, 0)) / self.settings.ladder.proxy
            self.largest[positions] = max(samples, self.largest.get(positions, 0))
            self.ledger.charge(cost, seconds)
            self.scores[key] = score
            self._record(positions, samples, score, cost, seconds)
        return self.scores[key]

    def _record(self, positions: tuple, samples: int, score: Score, cost: float, seconds: float) -> None:
        nfe, stage = self.context
        gap, position = self.moving(positions) if self.moving else (None, None)
        sigma = None if position is None else self.space.sigmas([position])[0]
        entry = Evaluation(nfe, stage, gap, position, sigma, tuple(self.space.sigmas(positions)), samples,
                           self.value(score), score.standard_error(), cost, seconds)
        self.trace.append(entry)
        self.on_evaluation(entry)

    def loss(self, positions: tuple) -> float:
        return self.score(positions, self.settings.ladder.proxy).loss

    def insert(self, points: tuple, nfe: int) -> tuple:
        """``points`` with one more point, placed by the method."""
        self.context = (nfe, "insert")
        gaps = [(g, a, b) for g, (a, b) in enumerate(zip(points, points[1:])) if self.space.has_interior(a, b)]
        if not gaps:
            raise ValueError(f"no room for a time point at NFE {nfe}: every gap of {list(points)} is too narrow "
                             f"for the {self.space.kind} space (use more karras_steps or a smaller tol)")
        self.moving = lambda schedule: _added(points, schedule)
        if self.settings.method != "robust":
            best = None
            for _, a, b in gaps:
                x = self.space.search(self.settings.method, lambda y: self.loss(_with(points, y)), a, b)
                if best is None or self.loss(_with(points, x)) < self.loss(best):
                    best = _with(points, x)
            return best
        per_gap = self._affordable(self.settings.screen_points, len(gaps))
        lattices = {g: self.space.lattice(a, b, per_gap) for g, a, b in gaps}
        candidates = [_with(points, x) for g, _, _ in gaps for x in lattices[g]]

        def polish(winner: tuple) -> list[tuple]:
            g, x = _added(points, winner)
            lo, hi = neighbours(x, lattices[g], points[g], points[g + 1])
            return self._polish(lambda y: _with(points, y), lo, hi)

        return step(self.score, candidates, self.settings.ladder, self.settings.z, polish)

    def refine(self, points: tuple, nfe: int) -> tuple:
        """``points`` after coordinate descent: each interior point searched again between its
        neighbours, pass after pass, until no point moves (at most ``max_passes`` passes)."""
        self.context = (nfe, "refine")
        for _ in range(self.settings.max_passes):
            moved = False
            for i in range(1, len(points) - 1):
                a, b = points[i - 1], points[i + 1]
                if not self.space.has_interior(a, b):
                    continue
                fixed = points
                replace = lambda y, i=i, fixed=fixed: (*fixed[:i], y, *fixed[i + 1:])  # noqa: E731
                self.moving = lambda schedule, i=i: (i - 1, schedule[i])
                if self.settings.method != "robust":
                    y = self.space.search(self.settings.method, lambda y: self.loss(replace(y)), a, b)
                    chosen = replace(y) if self.loss(replace(y)) < self.loss(points) else points
                else:
                    lattice = self.space.lattice(a, b, self._affordable(self.settings.screen_points, 1))
                    candidates = list(dict.fromkeys([*map(replace, lattice), points]))

                    def polish(winner, lattice=lattice, a=a, b=b, replace=replace, i=i):
                        lo, hi = neighbours(winner[i], lattice, a, b)
                        return self._polish(replace, lo, hi)

                    chosen = step(self.score, candidates, self.settings.ladder, self.settings.z, polish,
                                  incumbent=points)
                moved |= chosen != points
                points = chosen
            if not moved:
                break
        return points

    def _affordable(self, points: int, gaps: int) -> int:
        """Screen points per gap, fewer (down to 2) when the budget's share cannot pay for a race of
        ``points`` per gap and a few evaluations more to polish and settle."""
        ladder, left = self.settings.ladder, self.ledger.left()
        while points > 2 and ladder.race_cost(points * gaps) + POLISH_ALLOWANCE > left:
            points -= 1
        return points

    def _polish(self, schedule: Callable[[float], tuple], lo, hi) -> list[tuple]:
        """Golden-section (Fibonacci) search strictly between ``lo`` and ``hi`` on the proxy samples;
        the schedules it scored."""
        if not self.space.has_interior(lo, hi):
            return []
        tried: list[tuple] = []

        def loss(y):
            tried.append(schedule(y))
            return self.loss(tried[-1])

        self.space.search("golden", loss, lo, hi)
        return tried

    def best_scored(self, nfe: int) -> tuple | None:
        """The best schedule of ``nfe`` steps on the most samples any of them was scored on up to the
        proxy count (None if none was scored)."""
        rungs = [n for (p, n) in self.scores if len(p) == nfe + 1 and n <= self.settings.ladder.proxy]
        if not rungs:
            return None
        scored = {p: s for (p, n), s in self.scores.items() if n == max(rungs) and len(p) == nfe + 1}
        return best_of(scored, self.settings.z)

    def tuned(self, points: tuple, nfe: int) -> TunedSchedule:
        score = self.score(points, self.settings.ladder.proxy, charged=False)
        mine = [e for e in self.trace if e.nfe == nfe]
        return TunedSchedule(nfe, points, tuple(self.space.sigmas(points)), self.value(score), score.standard_error(),
                             len(mine), sum(e.cost for e in mine))


def _with(points: tuple, x) -> tuple:
    return tuple(sorted((*points, x)))


def _added(points: tuple, schedule: tuple) -> tuple[int, float]:
    """The gap of ``points`` the extra point of ``schedule`` lies in, and that point."""
    (x,) = [p for p in schedule if p not in points] or [None]
    return sum(1 for p in points if p < x) - 1, x


def greedy_time_points(
    evaluate: Evaluate,
    space: KarrasIndexSpace | LogSigmaSpace,
    settings: Settings,
    max_nfe: int,
    *,
    value: Callable[[Score], float] = lambda score: score.loss,
    ledger: Ledger | None = None,
    on_evaluation: Callable[[Evaluation], None] = lambda e: None,
) -> tuple[list[TunedSchedule], list[Evaluation]]:
    """Schedules for NFE 1..``max_nfe`` (fewer when the ledger's budget runs out before an NFE
    has any scored schedule) and the trace of every evaluation. ``value`` maps a score to the
    number recorded (the objective's own orientation)."""
    search = _Search(evaluate, space, settings, value, ledger or Ledger(), on_evaluation)
    points = tuple(space.ends)
    found = [search.tuned(points, 1)]
    for nfe in range(2, max_nfe + 1):
        search.ledger.share(max_nfe - nfe + 1)
        try:
            points = search.insert(points, nfe)
            if settings.refine and nfe > 2:  # at NFE 2 the insertion searched the one gap already
                points = search.refine(points, nfe)
        except OutOfBudget:
            points = search.best_scored(nfe)
            if points is None:
                break
        found.append(search.tuned(points, nfe))
    return found, search.trace
