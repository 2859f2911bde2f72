"""What a search may spend, and what it spent.

Cost is counted in *evaluations*: samples drawn divided by the proxy sample count, so a candidate
scored on the proxy samples costs 1, a screen on a quarter of them 0.25, and a tie-break that
extends a candidate from the proxy count to twice as many costs 1 more. Seconds are the wall
time of sampling and scoring. A ``budget`` caps either or both; each NFE of a greedy search may
spend an equal share of what is left when it starts, so a budget never leaves the later NFEs
with nothing. Spending is charged as evaluations finish, and evaluations replayed from a killed
search's log charge what they cost then, so a resumed search makes the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class OutOfBudget(Exception):
    """Raised instead of starting an evaluation once the current share is spent."""


@dataclass
class Ledger:
    """Evaluations and seconds spent, against optional caps (None: unlimited)."""

    max_evaluations: float | None = None
    max_seconds: float | None = None
    evaluations: float = 0.0
    seconds: float = 0.0
    exhausted: bool = False
    _stop_evaluations: float = math.inf
    _stop_seconds: float = math.inf

    def share(self, parts: int) -> None:
        """Let the next part spend 1/``parts`` of what is left (the rest waits for later parts)."""
        if self.max_evaluations is not None:
            self._stop_evaluations = self.evaluations + (self.max_evaluations - self.evaluations) / parts
        if self.max_seconds is not None:
            self._stop_seconds = self.seconds + (self.max_seconds - self.seconds) / parts

    def check(self) -> None:
        """Raise :class:`OutOfBudget` if the current share is spent."""
        if self.evaluations >= self._stop_evaluations - 1e-9 or self.seconds >= self._stop_seconds:
            self.exhausted = True
            raise OutOfBudget

    def left(self) -> float:
        """Evaluations the current share has left (infinite without an evaluation cap)."""
        return self._stop_evaluations - self.evaluations

    def charge(self, evaluations: float, seconds: float) -> None:
        self.evaluations += evaluations
        self.seconds += seconds

    def describe(self) -> dict:
        return {"evaluations": round(self.evaluations, 4), "seconds": round(self.seconds, 3),
                "budget": {"evaluations": self.max_evaluations, "seconds": self.max_seconds},
                "budget_exhausted": self.exhausted}
