"""Line searches that place one time point: ternary, golden-section and exhaustive grid.

All of them minimise ``f`` over the candidates strictly inside a bracket, either the integers
``lo..hi`` of a grid (Karras indices, as the official CM script searches) or the open interval
``(lo, hi)`` of a continuous coordinate (ln σ). Each returns the best candidate it evaluated.

On integers both fast searches are exact for any unimodal ``f`` (non-increasing then
non-decreasing) whatever the interval's size: ternary search shrinks the bracket until at most
three candidates remain and then compares all of them (the official script's end-game compares
stale probes instead); golden-section search on integers is Fibonacci search, whose bracket
lengths are Fibonacci numbers so that one probe is always reused and each step costs one new
evaluation instead of two. On any other ``f`` they still return the best probe they paid for,
even one the bracket has since left behind. Memoisation (:class:`Memo`) makes repeated probes free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

LINE_SEARCHES = ("ternary", "golden", "grid")
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618…


class Memo:
    """``f`` evaluated at most once per distinct argument; ``calls`` lists the new arguments in order."""

    def __init__(self, f: Callable[[Any], float]):
        self.f = f
        self.values: dict[Hashable, float] = {}
        self.calls: list[Hashable] = []

    def __call__(self, x: Hashable) -> float:
        if x not in self.values:
            self.values[x] = float(self.f(x))
            self.calls.append(x)
        return self.values[x]


def _best(f: Callable[[Any], float], candidates) -> Any:
    """The candidate with the smallest ``f``; ties go to the first."""
    return min(candidates, key=f)


def _recorded(f: Callable[[Any], float]) -> tuple[Callable[[Any], float], list]:
    """``f`` and the list of arguments it is called with, in order."""
    tried: list = []

    def probe(x):
        tried.append(x)
        return f(x)

    return probe, tried


def _check_integer_bracket(lo: int, hi: int) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
        raise ValueError(f"an integer search needs integers lo ≤ hi, got {lo!r}, {hi!r}")


def ternary_search_int(f: Callable[[int], float], lo: int, hi: int) -> int:
    """argmin of a unimodal ``f`` over ``lo..hi`` (inclusive): two probes a third apart per step."""
    _check_integer_bracket(lo, hi)
    probe, tried = _recorded(f)
    while hi - lo > 2:
        third = (hi - lo) // 3
        left, right = lo + third, hi - third
        if probe(left) <= probe(right):  # the minimum is left of ``right``
            hi = right - 1
        else:                            # the minimum is right of ``left``
            lo = left + 1
    return _best(f, [*range(lo, hi + 1), *tried])


def _fibonacci_at_least(n: int) -> list[int]:
    fib = [1, 1]
    while fib[-1] < n:
        fib.append(fib[-1] + fib[-2])
    return fib


def golden_search_int(f: Callable[[int], float], lo: int, hi: int) -> int:
    """argmin of a unimodal ``f`` over ``lo..hi`` (inclusive) by Fibonacci search.

    The open bracket ``(a, a + F_k)`` holds the minimum; its probes sit at ``a + F_{k-2}`` and
    ``a + F_{k-1}``, and whichever side survives, one probe is the next step's. Candidates past
    ``hi`` (padding up to a Fibonacci length) count as +∞ and are never evaluated.
    """
    _check_integer_bracket(lo, hi)
    fib = _fibonacci_at_least(hi - lo + 2)
    k, a = len(fib) - 1, lo - 1
    probe, tried = _recorded(f)

    def value(x: int) -> float:
        return probe(x) if x <= hi else math.inf

    while fib[k] > 2:
        near, far = a + fib[k - 2], a + fib[k - 1]
        if value(near) > value(far):
            a = near
        k -= 1
    return _best(f, [*(x for x in range(a + 1, a + fib[k]) if x <= hi), *tried])


def grid_search_int(f: Callable[[int], float], lo: int, hi: int) -> int:
    """argmin over every integer of ``lo..hi``: the reference the fast searches are measured against."""
    _check_integer_bracket(lo, hi)
    return _best(f, range(lo, hi + 1))


def _check_float_bracket(lo: float, hi: float, tol: float) -> None:
    if not (lo < hi) or not tol > 0:
        raise ValueError(f"a continuous search needs lo < hi and tol > 0, got {lo!r}, {hi!r}, tol {tol!r}")


def ternary_search_float(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """argmin of a unimodal ``f`` on the open interval (lo, hi) to within ``tol``."""
    _check_float_bracket(lo, hi, tol)
    tried = []
    while hi - lo > tol:
        left, right = lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0
        tried += [left, right]
        if f(left) <= f(right):
            hi = right
        else:
            lo = left
    return _best(f, tried or [(lo + hi) / 2.0])


def golden_search_float(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """argmin of a unimodal ``f`` on the open interval (lo, hi) to within ``tol``, one evaluation per step."""
    _check_float_bracket(lo, hi, tol)
    left, right = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    tried = [left, right]
    while hi - lo > tol:
        if f(left) <= f(right):  # keep (lo, right); the old left probe becomes the right one
            hi, right = right, left
            left = hi - GOLDEN * (hi - lo)
            tried.append(left)
        else:                    # keep (left, hi); the old right probe becomes the left one
            lo, left = left, right
            right = lo + GOLDEN * (hi - lo)
            tried.append(right)
    return _best(f, tried)


def grid_search_float(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """argmin over evenly spaced points strictly inside (lo, hi), at most ``tol`` apart."""
    _check_float_bracket(lo, hi, tol)
    n = math.ceil((hi - lo) / tol)
    return _best(f, [lo + (hi - lo) * i / n for i in range(1, n)] or [(lo + hi) / 2.0])


INTEGER_SEARCHES: dict[str, Callable[[Callable[[int], float], int, int], int]] = {
    "ternary": ternary_search_int, "golden": golden_search_int, "grid": grid_search_int,
}
FLOAT_SEARCHES: dict[str, Callable[[Callable[[float], float], float, float, float], float]] = {
    "ternary": ternary_search_float, "golden": golden_search_float, "grid": grid_search_float,
}
