"""Held-out validation of tuned schedules.

A search picks the best of many candidates on its proxy seeds, so the winner's proxy value is
biased low (the winner's curse), and the official script even tunes on the samples it reports.
Every tuned schedule is therefore scored again on *validation* seeds, disjoint from the proxy
seeds and from the suite's evaluation seeds, beside the sampler's default schedule (a Karras
grid of NFE + 1 points) on the same seeds. The two are paired (same seeds, same bootstrap
resamples), so their difference has a small standard error; a tuned schedule worse than the
default by more than :data:`VERDICT_Z` paired standard errors is marked ``worse`` and the report
flags it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .greedy import TunedSchedule
from .objective import Objective
from .scores import Score, compare, paired_standard_error

VERDICT_Z = 2.0
VERDICTS = {-1: "better", 0: "tied", 1: "worse"}


def validate(score: Callable[[tuple[float, ...], int], tuple[Score, float]], found: Sequence[TunedSchedule],
             default_sigmas: Callable[[int], tuple[float, ...]], objective: Objective, samples: int) -> list[dict]:
    """For each tuned NFE ≥ 2: the tuned and default schedules' values and standard errors on the
    validation seeds, their difference (tuned − default, in the objective's value) with its paired
    standard error, and the verdict (``better``, ``tied`` or ``worse``)."""
    entries = []
    for schedule in found:
        if schedule.nfe < 2:
            continue
        default = default_sigmas(schedule.nfe)
        tuned_score, _ = score(tuple(schedule.sigmas), samples)
        default_score, _ = score(tuple(default), samples)
        tuned_value, default_value = objective.value(tuned_score.losses), objective.value(default_score.losses)
        entries.append({
            "nfe": schedule.nfe, "value": tuned_value, "se": tuned_score.standard_error(),
            "default_sigmas": list(default), "default_value": default_value, "default_se": default_score.standard_error(),
            "difference": tuned_value - default_value,
            "difference_se": paired_standard_error(tuned_score, default_score),
            "verdict": VERDICTS[compare(tuned_score, default_score, VERDICT_Z)],
        })
    return entries
