"""Line searches and the greedy time-point procedure on constructed objectives."""

import math
import random

import pytest

from cmbench.tuning.greedy import KarrasIndexSpace, LogSigmaSpace, Settings, greedy_time_points
from cmbench.tuning.robust import Ladder
from cmbench.tuning.scores import Score
from cmbench.tuning.search import (
    FLOAT_SEARCHES,
    INTEGER_SEARCHES,
    Memo,
    golden_search_int,
    ternary_search_int,
)


def unimodal(lo: int, hi: int, argmin: int, rng: random.Random):
    """A random strictly unimodal function on lo..hi with its minimum at ``argmin``."""
    values, level = {argmin: rng.uniform(0, 1)}, None
    level = values[argmin]
    for x in range(argmin - 1, lo - 1, -1):
        level += rng.uniform(0.01, 1)
        values[x] = level
    level = values[argmin]
    for x in range(argmin + 1, hi + 1):
        level += rng.uniform(0.01, 1)
        values[x] = level
    return values


@pytest.mark.parametrize("method", ["ternary", "golden", "grid"])
def test_integer_searches_are_exact_for_every_small_interval(method):
    search, rng = INTEGER_SEARCHES[method], random.Random(0)
    for size in range(1, 41):
        lo, hi = 3, 3 + size - 1
        for argmin in range(lo, hi + 1):
            values = unimodal(lo, hi, argmin, rng)
            f = Memo(lambda x: values[x])
            assert search(f, lo, hi) == argmin, (size, argmin)
            assert all(lo <= x <= hi for x in f.calls)


@pytest.mark.parametrize("method", ["ternary", "golden"])
def test_integer_searches_find_a_minimiser_of_plateaued_unimodal_functions(method):
    search = INTEGER_SEARCHES[method]
    for size in range(1, 25):
        for start in range(size):
            for width in range(1, size - start + 1):  # the minimum is a plateau start..start+width-1
                values = [abs(x - start) if x < start else max(0, x - (start + width - 1)) for x in range(size)]
                assert values[search(lambda x: values[x], 0, size - 1)] == 0


@pytest.mark.parametrize("method", ["ternary", "golden"])
def test_integer_searches_return_their_best_probe_even_outside_the_final_bracket(method):
    """Off unimodality the bracket can walk away from a probe it already paid for; the search
    still returns the best value it saw (as the tuned schedule's recorded value promises)."""
    search = INTEGER_SEARCHES[method]
    base = [abs(x - 80) for x in range(100)]
    first = Memo(lambda x: base[x])
    assert search(first, 0, 99) == 80
    dip = first.calls[0]  # the first probe is placed before any value is known
    values = [-1 if x == dip else v for x, v in enumerate(base)]
    probed = Memo(lambda x: values[x])
    assert search(probed, 0, 99) == dip and abs(dip - 80) > 3
    assert min(probed.values.values()) == -1


def test_golden_search_makes_one_new_evaluation_per_step_and_ternary_about_two():
    values = unimodal(0, 999, 613, random.Random(1))
    golden, ternary = Memo(lambda x: values[x]), Memo(lambda x: values[x])
    assert golden_search_int(golden, 0, 999) == 613 == ternary_search_int(ternary, 0, 999)
    # Fibonacci search: F_16 = 1597 ≥ 1001 → 14 steps with one new probe each, +1 for the last point.
    assert len(golden.calls) <= 16
    assert len(golden.calls) < len(ternary.calls) <= 2 * math.ceil(math.log(1000 / 3, 1.5)) + 3


def test_memo_evaluates_no_candidate_twice():
    calls = []
    values = unimodal(0, 60, 17, random.Random(2))

    def f(x):
        calls.append(x)
        return values[x]

    for method, search in INTEGER_SEARCHES.items():
        calls.clear()
        memo = Memo(f)
        search(memo, 0, 60)
        search(memo, 0, 60)  # a second search over the same memo costs nothing
        assert len(calls) == len(set(calls)) == len(memo.calls), method


@pytest.mark.parametrize("method", ["ternary", "golden", "grid"])
def test_float_searches_land_within_tolerance(method):
    for argmin in (-3.7, 0.0, 1.234, 4.9):
        x = FLOAT_SEARCHES[method](lambda u: (u - argmin) ** 2, -5.0, 5.0, 1e-3)
        assert abs(x - argmin) <= 1e-3


def test_searches_reject_bad_brackets():
    with pytest.raises(ValueError, match="lo ≤ hi"):
        ternary_search_int(lambda x: x, 5, 4)
    with pytest.raises(ValueError, match="tol > 0"):
        FLOAT_SEARCHES["golden"](lambda x: x, 0.0, 1.0, 0.0)


def separable_objective(targets):
    """Distance of a schedule's interior σ to target σ values, in log space (unimodal per point)."""
    def objective(sigmas):
        interior = [math.log(s) for s in sigmas[1:-1]]
        wanted = [math.log(t) for t in targets[: len(interior)]]
        return sum((a - b) ** 2 for a, b in zip(sorted(interior), sorted(wanted))) + 0.1 * (len(targets) - len(interior))
    return objective


def exact(objective):
    """``objective`` (of a schedule's σ values) as a noiseless evaluation on 100 samples."""
    return lambda sigmas, samples: (Score(samples, (objective(sigmas),)), 0.0)


def line_search(method: str) -> Settings:
    return Settings(method, refine=False, ladder=Ladder((100,)))


def test_greedy_keeps_earlier_points_and_matches_the_exhaustive_grid_on_karras_indices():
    space = KarrasIndexSpace(steps=40, sigma_min=0.002, sigma_max=80.0)
    objective = exact(separable_objective([1.0, 0.05]))
    fast, fast_trace = greedy_time_points(objective, space, line_search("ternary"), 3)
    slow, slow_trace = greedy_time_points(objective, space, line_search("grid"), 3)
    assert [s.positions for s in fast] == [s.positions for s in slow]
    assert fast[0].positions == (0, 39) and len(fast[2].positions) == 4
    assert set(fast[1].positions) < set(fast[2].positions)  # greedy: NFE 3 keeps NFE 2's point
    assert [s.evaluations for s in fast] == [sum(e.nfe == n for e in fast_trace) for n in (1, 2, 3)]
    assert len(fast_trace) < len(slow_trace)
    assert len({e.sigmas for e in fast_trace}) == len(fast_trace)  # no schedule evaluated twice
    assert fast[1].sigmas == tuple(space.sigmas(fast[1].positions))


def test_greedy_in_continuous_sigma_reaches_the_targets_and_keeps_exact_ends():
    space = LogSigmaSpace(sigma_min=0.002, sigma_max=80.0, tol=1e-3)
    found, _ = greedy_time_points(exact(separable_objective([1.0])), space, line_search("golden"), 2)
    assert found[1].sigmas[0] == 80.0 and found[1].sigmas[-1] == 0.002
    assert found[1].sigmas[1] == pytest.approx(1.0, rel=2e-3)


def test_greedy_records_values_in_the_objectives_own_orientation():
    space = KarrasIndexSpace(steps=20, sigma_min=0.002, sigma_max=80.0)
    found, trace = greedy_time_points(exact(separable_objective([0.5])), space, line_search("golden"), 2,
                                      value=lambda score: -score.loss)
    best = min(range(1, 19), key=lambda i: abs(math.log(space.sigmas([i])[0] / 0.5)))
    assert found[1].positions == (0, best, 19)
    assert found[1].value == max(e.value for e in trace if e.nfe == 2) <= 0


def test_greedy_says_when_the_grid_has_no_room():
    with pytest.raises(ValueError, match="no room for a time point at NFE 3"):
        greedy_time_points(exact(lambda s: 0.0), KarrasIndexSpace(3, 0.002, 80.0), line_search("ternary"), 4)


def test_the_command_lines_methods_are_robust_then_every_line_search():
    from cmbench.tuning.greedy import METHODS
    from cmbench.tuning.search import LINE_SEARCHES

    assert METHODS == ("robust", *LINE_SEARCHES)
    assert tuple(INTEGER_SEARCHES) == tuple(FLOAT_SEARCHES) == LINE_SEARCHES
