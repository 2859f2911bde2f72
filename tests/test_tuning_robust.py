"""The robust search, noise-aware comparisons, objectives and budgets on constructed objectives.

The constructed objective mimics a metric on common random numbers: candidate x on n samples
scores f(x) plus noise that every candidate shares (the seeds) and a smaller part of its own,
both shrinking as 1/√n; its bootstrap replicates carry the same structure, so paired standard
errors are small and single ones large, as on the toy zoo.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmbench.tuning.budget import Ledger, OutOfBudget
from cmbench.tuning.greedy import KarrasIndexSpace, LogSigmaSpace, Settings, greedy_time_points
from cmbench.tuning.objective import Objective, parse_objective
from cmbench.tuning.robust import Ladder, float_lattice, integer_lattice, neighbours, settle, step
from cmbench.tuning.scores import Score, best_of, compare, contenders, paired_standard_error
from cmbench.tuning.validation import validate

RESAMPLES = 30
SPACE = KarrasIndexSpace(40, 0.002, 80.0)
INDEX = {round(s, 12): i for i, s in enumerate(SPACE.sigmas(range(40)))}


def noisy(f, shared: float = 20.0, own: float = 2.0):
    """``evaluate(sigmas, samples)`` of a landscape ``f`` over interior Karras indices, with noise
    shared by all candidates on the same seeds plus a candidate's own, both ∝ 1/√samples."""
    calls = []

    def evaluate(sigmas, samples):
        indices = tuple(INDEX[round(s, 12)] for s in sigmas)
        calls.append((indices, samples))
        scale = 1.0 / math.sqrt(samples)
        common = np.random.default_rng([samples, 0]).normal(0, shared, RESAMPLES + 1)
        mine = np.random.default_rng([samples, *indices]).normal(0, own, RESAMPLES + 1)
        draws = f(indices[1:-1]) + scale * (common + mine)
        return Score(samples, (float(draws[0]),), (tuple(draws[1:]),)), 0.01

    evaluate.calls = calls
    return evaluate


def dip(interior) -> float:
    """A CT-like landscape: rough everywhere, a deep one-index dip at 25 and a broad shallow valley at 31."""
    total = 0.0
    for x in interior:
        total += 100.0 - 40.0 * (x == 25) - 25.0 * math.exp(-((x - 31) / 3.0) ** 2) + 6.0 * math.sin(1.7 * x)
    return total


ROBUST = Settings(ladder=Ladder.build(500, screen=62, max_samples=1000))


def test_robust_finds_a_one_index_dip_that_ternary_search_misses_for_under_a_third_of_the_grid():
    robust, robust_trace = greedy_time_points(noisy(dip), SPACE, ROBUST, 2)
    ternary, _ = greedy_time_points(noisy(dip), SPACE, Settings("ternary", refine=False, ladder=Ladder((500,))), 2)
    grid, _ = greedy_time_points(noisy(dip), SPACE, Settings("grid", refine=False, ladder=Ladder((500,))), 2)
    assert grid[1].positions == (0, 25, 39) and grid[1].cost == 38
    assert robust[1].positions == (0, 25, 39)
    assert ternary[1].positions != (0, 25, 39)  # the failure: the bracket skips the dip
    assert robust[1].cost < grid[1].cost / 3
    assert {e.samples for e in robust_trace if e.nfe == 2} >= {62, 125, 250, 500}  # screened, then raced


def test_every_evaluation_is_made_once_and_costs_only_its_new_samples():
    evaluate = noisy(dip)
    found, trace = greedy_time_points(evaluate, SPACE, ROBUST, 3)
    assert len(evaluate.calls) == len(set(evaluate.calls)) == len(trace)
    by_schedule: dict[tuple, list[int]] = {}
    for e in trace:
        by_schedule.setdefault(e.sigmas, []).append(e.samples)
    for e in trace:  # a schedule scored again on more samples pays for the new ones only
        earlier = [n for n in by_schedule[e.sigmas] if n < e.samples]
        assert e.cost == pytest.approx((e.samples - max(earlier, default=0)) / 500)
    assert sum(s.cost for s in found) == pytest.approx(sum(e.cost for e in trace))


def test_ties_are_settled_by_more_samples_not_by_order():
    flat = noisy(lambda interior: sum(50.0 - 10.0 * (x in (21, 31)) for x in interior), own=30.0)
    found, trace = greedy_time_points(flat, SPACE, Settings(ladder=ROBUST.ladder, z=2.0), 2)
    tie_break = [e for e in trace if e.samples == 1000]
    assert {e.position for e in tie_break} >= {21, 31}  # both went on to twice the proxy samples
    assert found[1].positions in ((0, 21, 39), (0, 31, 39))


def test_joint_refinement_moves_the_nfe2_point_when_the_best_pair_does_not_hold_it():
    def pair(interior):  # alone, 25 is best; as a pair, (15, 30) is far better than anything with 25
        if not interior:
            return 200.0
        if len(interior) == 1:
            return 100.0 - 30.0 * math.exp(-((interior[0] - 25) / 4.0) ** 2)
        a, b = interior
        return 80.0 - 40.0 * math.exp(-(((a - 15) / 3.0) ** 2 + ((b - 30) / 3.0) ** 2))

    greedy_only, _ = greedy_time_points(noisy(pair), SPACE, Settings(refine=False, ladder=ROBUST.ladder), 3)
    refined, trace = greedy_time_points(noisy(pair), SPACE, ROBUST, 3)
    assert greedy_only[1].positions == (0, 25, 39) and 25 in greedy_only[2].positions
    assert refined[2].positions == (0, 15, 30, 39)
    assert any(e.stage == "refine" for e in trace)


def test_refinement_keeps_points_that_nothing_beats_beyond_noise():
    flat = noisy(lambda interior: 10.0, own=0.0)  # every schedule scores the same: all ties
    kept, _ = greedy_time_points(flat, SPACE, Settings(refine=False, ladder=ROBUST.ladder), 3)
    refined, _ = greedy_time_points(flat, SPACE, ROBUST, 3)
    assert refined[2].positions == kept[2].positions


def test_a_budget_is_shared_between_the_nfes_and_the_search_says_it_ran_out():
    ledger = Ledger(max_evaluations=6.0)
    found, trace = greedy_time_points(noisy(dip), SPACE, ROBUST, 3, ledger=ledger)
    assert ledger.exhausted and [s.nfe for s in found] == [1, 2, 3]
    assert ledger.evaluations <= 6.0 + 2.0  # an evaluation under way when the share ran out still finishes
    nfe2 = sum(e.cost for e in trace if e.nfe == 2)
    assert nfe2 <= 1.0 + (6.0 - 1.0) / 2 + 1.0  # NFE 2 kept to about half of what was left after NFE 1


def test_a_budget_too_small_for_any_schedule_stops_at_the_last_nfe_found():
    ledger = Ledger(max_evaluations=1.0)  # NFE 1 spends it all
    found, _ = greedy_time_points(noisy(dip), SPACE, ROBUST, 3, ledger=ledger)
    assert [s.nfe for s in found] == [1] and ledger.exhausted


def test_ledger_checks_the_current_share():
    ledger = Ledger(max_evaluations=10.0)
    ledger.share(2)
    ledger.charge(4.9, 0.0)
    ledger.check()
    ledger.charge(0.2, 0.0)
    with pytest.raises(OutOfBudget):
        ledger.check()
    ledger.share(1)  # the last part may spend the rest
    ledger.check()
    assert Ledger(max_seconds=1.0).describe()["budget"] == {"evaluations": None, "seconds": 1.0}


def test_continuous_space_screens_and_polishes_to_tolerance():
    space = LogSigmaSpace(0.002, 80.0, tol=0.01)
    target = math.log(0.7)

    def evaluate(sigmas, samples):
        value = sum((math.log(s) - target) ** 2 for s in sigmas[1:-1])
        return Score(samples, (value,)), 0.0

    found, _ = greedy_time_points(evaluate, space, Settings(ladder=Ladder((100,))), 2)
    assert found[1].sigmas[1] == pytest.approx(0.7, rel=0.02)


def score(loss, replicates, samples=100):
    return Score(samples, tuple(loss) if isinstance(loss, tuple) else (loss,),
                 tuple(tuple(r) for r in replicates) if replicates else ())


def test_paired_standard_error_is_small_when_the_noise_is_shared():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 5, 50)
    a = score(10.0, [10.0 + shared + rng.normal(0, 0.1, 50)])
    b = score(10.5, [10.5 + shared + rng.normal(0, 0.1, 50)])
    assert a.standard_error() > 3 and paired_standard_error(a, b) < 0.3
    assert compare(a, b, z=1.0) == -1 and compare(b, a, z=1.0) == 1
    c = score(10.05, [10.05 + shared + rng.normal(0, 0.1, 50)])
    assert compare(a, c, z=1.0) == 0
    with pytest.raises(ValueError, match="not paired"):
        paired_standard_error(a, score(10.0, [shared], samples=200))


def test_lexicographic_best_goes_to_the_second_loss_only_among_ties_on_the_first():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 40)
    scores = {
        "a": score((10.0, 5.0), [10.0 + noise, 5.0 + noise]),
        "b": score((10.2, 1.0), [10.2 + noise + rng.normal(0, 0.5, 40), 1.0 + noise]),  # tied on the first
        "c": score((20.0, 0.0), [20.0 + noise, 0.0 + noise]),  # far worse on the first
    }
    assert best_of(scores, z=1.0) == "b"
    assert contenders(scores, z=1.0) == ["b"]  # a ties on fid but loses on recall
    assert best_of({"a": scores["a"], "c": scores["c"]}, z=1.0) == "a"


def test_a_non_finite_loss_never_wins():
    scores = {"nan": score(float("nan"), []), "one": score(1.0, [])}
    assert best_of(scores, z=1.0) == "one" and compare(scores["nan"], scores["one"], 1.0) == 1


def test_settle_keeps_an_incumbent_that_is_only_tied():
    rng = np.random.default_rng(2)
    noise = {"old": rng.normal(0, 1, 30), "new": rng.normal(0, 1, 30)}

    def evaluate(candidate, samples):
        level = {"old": 5.0, "new": 4.9}[candidate]
        return Score(samples, (level,), (tuple(level + noise[candidate]),))

    ladder = Ladder((100,), (200,))
    assert settle(evaluate, ["new", "old"], ladder, z=1.0, incumbent="old") == "old"
    assert settle(evaluate, ["new", "old"], ladder, z=0.0, incumbent="old") == "new"
    assert step(evaluate, ["new", "old"], Ladder((100,)), 0.0, polish=lambda w: []) == "new"


def test_lattices_and_ladders():
    assert integer_lattice(1, 38, 20) == list(range(1, 38, 2))
    assert integer_lattice(1, 5, 20) == [1, 2, 3, 4, 5] and integer_lattice(4, 3, 5) == []
    assert integer_lattice(1, 10, 3) == [2, 6, 10] or len(integer_lattice(1, 10, 3)) <= 4
    assert float_lattice(0.0, 1.0, 4) == [0.125, 0.375, 0.625, 0.875]
    assert neighbours(7, [1, 3, 5, 7, 9], 0, 10) == (5, 9) and neighbours(1, [1, 3], 0, 10) == (0, 3)
    assert Ladder.build(500, screen=62, max_samples=1000) == Ladder((62, 125, 250, 500), (1000,))
    assert Ladder.build(200, screen=200, max_samples=200) == Ladder((200,), ())


@pytest.mark.parametrize("raw, combine, columns", [
    ("fid", "single", ("fid",)),
    ({"fid": 2.0}, "single", ("fid",)),
    ({"fid": 1, "recall": -100}, "weighted", ("fid", "recall")),
    (["fid", "recall"], "lexicographic", ("fid", "recall")),
    (["is_mean"], "single", ("is_mean",)),
])
def test_objectives_parse(raw, combine, columns):
    objective = parse_objective(raw)
    assert (objective.combine, objective.columns) == (combine, columns)


def test_objective_losses_are_minimised_and_values_keep_the_metric_orientation():
    values = {"fid": 12.0, "recall": 0.5, "is_mean": 8.0}
    assert parse_objective("is_mean").losses(values) == (-8.0,)
    assert parse_objective("is_mean").value((-8.0,)) == 8.0 and not parse_objective("is_mean").minimised
    weighted = parse_objective({"fid": 1, "recall": -100})
    assert weighted.losses(values) == (12.0 - 50.0,) and weighted.describe()["direction"] == "min"
    assert weighted.label == "1·fid − 100·recall"
    assert parse_objective(["fid", "recall"]).losses(values) == (12.0, -0.5)
    assert parse_objective(["fid", "recall"]).label == "fid then recall"


@pytest.mark.parametrize("raw, message", [
    ({}, "empty mapping"),
    ({"fid": "1"}, "weights must be numbers"),
    (["fid", "fid"], "listed twice"),
    (3, "accepted: a column name"),
    ("nope", "scored column"),
])
def test_bad_objectives_say_what_is_accepted(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_objective(raw)


def test_objective_rejects_zero_weights():
    with pytest.raises(ValueError, match="non-zero weight"):
        Objective(("fid", "kid"), "weighted", (1.0, 0.0))


def test_validation_compares_each_tuned_schedule_with_the_default_on_paired_seeds():
    evaluate = noisy(dip)
    found, _ = greedy_time_points(evaluate, SPACE, ROBUST, 3)
    default = lambda nfe: tuple(SPACE.sigmas([0, 10, 39] if nfe == 2 else [0, 10, 20, 39]))  # noqa: E731
    entries = validate(evaluate, found, default, parse_objective("fid"), 2000)
    assert [e["nfe"] for e in entries] == [2, 3]
    for e in entries:
        assert e["verdict"] == "better" and e["difference"] < -2 * e["difference_se"]
        assert e["difference_se"] < e["se"]  # pairing removes the shared noise
    worse = validate(evaluate, found, lambda nfe: found[nfe - 1].sigmas if nfe == 2 else tuple(SPACE.sigmas([0, 25, 31, 39])),
                     parse_objective("fid"), 2000)
    assert worse[0]["verdict"] == "tied" and worse[0]["difference"] == 0
