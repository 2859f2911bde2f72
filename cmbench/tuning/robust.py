"""The default search step: screen many candidates cheaply, race the good ones up, polish, settle.

One step chooses among candidate schedules that differ in one time point (every position of a
lattice in every gap when a point is added, or every position between its neighbours when one
point moves). Objectives here are noisy (a metric of a few hundred samples) and, on real and toy
models alike, not unimodal in a time point, so the step does not trust a bracket:

1. **Screen** every candidate on the lattice with few samples (the first rung of the
   :class:`Ladder`; per-sample seeds make a rung's seeds the first ones of every later rung).
2. **Race**: at each rung keep the better half, and every candidate tied with the best (within
   ``z`` paired standard errors, :mod:`cmbench.tuning.scores`), and score them again on the next
   rung's samples, up to the proxy count.
3. **Polish** the winner between its lattice neighbours by golden-section (Fibonacci) search on
   the proxy samples, for the positions the lattice skipped.
4. **Settle**: while candidates scored on the proxy samples are tied with the best, score them
   on twice as many samples (the ladder's tie-break rungs); the best on the most samples wins.
   Ties are resolved by more samples, never by order; only on the last rung does the lower value
   decide.

A step that starts from an incumbent (a point being moved) keeps it unless a candidate beats it
beyond noise on the rung where the step ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from .scores import Score, best_of, contenders, order_key

Scorer = Callable[[Hashable, int], Score]  # (candidate, sample count) -> its score


@dataclass(frozen=True)
class Ladder:
    """Sample counts: ``race`` rungs ascending to the proxy count (its last), then ``tie_break`` rungs."""

    race: tuple[int, ...]
    tie_break: tuple[int, ...] = ()

    @property
    def proxy(self) -> int:
        return self.race[-1]

    @classmethod
    def build(cls, proxy: int, *, screen: int, max_samples: int) -> "Ladder":
        """Rungs halving from ``proxy`` down to no fewer than ``screen`` samples, and doubling up to
        ``max_samples``."""
        race = [proxy]
        while race[0] // 2 >= screen:
            race.insert(0, race[0] // 2)
        tie_break = []
        while 2 * (tie_break or [proxy])[-1] <= max_samples:
            tie_break.append(2 * (tie_break or [proxy])[-1])
        return cls(tuple(race), tuple(tie_break))


    def race_cost(self, candidates: int) -> float:
        """Evaluations (in proxy-sample units) a race of ``candidates`` costs when each rung keeps half."""
        cost, alive, had = 0.0, candidates, 0
        for rung in self.race:
            cost += alive * (rung - had) / self.proxy
            alive, had = math.ceil(alive / 2), rung
        return cost


def race(score: Scorer, candidates: Sequence[Hashable], ladder: Ladder, z: float) -> list[Hashable]:
    """The candidates that reach the proxy rung after screening and racing, best first."""
    survivors = list(candidates)
    for rung in ladder.race:
        scores = {c: score(c, rung) for c in survivors}
        if rung == ladder.proxy or len(survivors) == 1:
            best = best_of(scores, z)
            return [best, *(c for c in survivors if c != best)]
        half = sorted(survivors, key=lambda c: order_key(scores[c]))[: math.ceil(len(survivors) / 2)]
        tied = contenders(scores, z)
        survivors = [c for c in survivors if c in half or c in tied]
    raise AssertionError("unreachable: the last rung is the proxy")


def settle(score: Scorer, candidates: Sequence[Hashable], ladder: Ladder, z: float,
           incumbent: Hashable | None = None) -> Hashable:
    """The best of ``candidates`` (all scored on the proxy rung already): ties with the best are
    scored on the tie-break rungs until one candidate is ahead or the rungs run out. With an
    ``incumbent`` among them, it is kept unless beaten beyond noise on the last rung scored."""
    alive = list(dict.fromkeys(candidates))
    rung = ladder.proxy
    for rung in (ladder.proxy, *ladder.tie_break):
        scores = {c: score(c, rung) for c in alive}
        alive = contenders(scores, z)
        if len(alive) == 1:
            break
    if incumbent is not None and incumbent in alive:
        return incumbent
    return alive[0]


def step(score: Scorer, candidates: Sequence[Hashable], ladder: Ladder, z: float,
         polish: Callable[[Hashable], Sequence[Hashable]], incumbent: Hashable | None = None) -> Hashable:
    """Screen, race, polish and settle ``candidates`` (the incumbent, if any, among them).

    ``polish(winner)`` searches around the race's winner on the proxy rung and returns the
    candidates it scored."""
    finishers = race(score, candidates, ladder, z)
    extra = [] if incumbent is None else [incumbent]
    scored = list(dict.fromkeys([*finishers, *polish(finishers[0]), *extra]))
    finalists = contenders({c: score(c, ladder.proxy) for c in scored}, z)
    return settle(score, finalists, ladder, z, incumbent=incumbent)


def integer_lattice(lo: int, hi: int, points: int) -> list[int]:
    """At most ``points`` evenly spaced integers of ``lo..hi`` (all of them when they fit), centred."""
    count = hi - lo + 1
    if count <= 0:
        return []
    stride = max(1, math.ceil(count / points))
    used = (count - 1) // stride + 1
    first = lo + ((count - 1) - stride * (used - 1)) // 2
    return [first + i * stride for i in range(used)]


def float_lattice(lo: float, hi: float, points: int) -> list[float]:
    """``points`` evenly spaced midpoints of the open interval (lo, hi)."""
    return [lo + (hi - lo) * (i + 0.5) / points for i in range(points)]


def neighbours(position, lattice: Sequence, lo, hi) -> tuple:
    """The lattice points (or the bracket's ends ``lo``/``hi``) on either side of ``position``."""
    below = [p for p in lattice if p < position]
    above = [p for p in lattice if p > position]
    return (max(below) if below else lo), (min(above) if above else hi)
