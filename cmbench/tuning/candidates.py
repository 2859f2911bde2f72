"""Scoring one tune job's candidate schedules on its proxy (or validation) seeds.

A candidate is scored with exactly the code a suite row uses (the same sampler, quantisation,
extractor and metrics), on the first N seeds from the job's ``seed_start``, so every candidate
sees the same noise (common random numbers) and a row that later uses the schedule with the same
seeds and sample count reproduces the recorded value exactly. Because seeds are per sample, the
first N seeds of a longer run are the same images: a candidate scored again on more samples only
samples the new seeds (its features are kept in memory, up to :data:`CACHE_BYTES`).

Each evaluation also computes the objective on ``resamples`` bootstrap resamples, drawn from the
sample count alone, so two candidates on the same count are resampled in pairs
(:mod:`cmbench.tuning.scores`).

Every finished evaluation is appended to ``schedules/<job>.evaluations.jsonl`` before the search
goes on; a killed search rerun with the same configuration replays those values (and what they
cost) and continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..distributed import SINGLE, World
from ..generate import gather_views
from ..metrics import compute_metrics, layers_for
from ..metrics.bootstrap import bootstrap_replicates
from .objective import Objective
from .scores import Score

CACHE_BYTES = 1 << 30
"""Most bytes of candidate features kept in memory for scoring on more samples later."""


class EvaluationLog:
    """Finished evaluations of one job on disk (JSON lines), keyed by (first seed, sample count, σ values)."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint
        self.entries: dict[tuple, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: that evaluation reruns
                    continue
                if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint:
                    self.entries[self.key(entry["seed_start"], entry["samples"], entry["sigmas"])] = entry

    @staticmethod
    def key(seed_start: int, samples: int, sigmas) -> tuple:
        return seed_start, samples, tuple(float(s) for s in sigmas)

    def get(self, seed_start: int, samples: int, sigmas) -> dict | None:
        return self.entries.get(self.key(seed_start, samples, sigmas))

    def add(self, entry: dict) -> None:
        entry = {"fingerprint": self.fingerprint, **entry}
        self.entries[self.key(entry["seed_start"], entry["samples"], entry["sigmas"])] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


class CandidateScorer:
    """``scorer(sigmas, samples) -> (Score, seconds)``: a schedule (descending σ, terminal point
    included) scored on the first ``samples`` seeds from ``seed_start``.

    ``run_options(nfe, sigmas)`` are the sampler options that run the schedule; ``reference``
    is called (on the main rank only) for the reference statistics. Under torchrun every rank
    samples its share of the new seeds, the main rank scores and logs, and all return its score.
    """

    def __init__(self, *, model, sampler, run_options: Callable[[int, tuple], dict], objective: Objective,
                 metric_names: tuple[str, ...], suite, extractor, reference: Callable[[], Any], device: torch.device,
                 batch_size: int, seed_start: int, resamples: int, log: EvaluationLog | None, world: World = SINGLE,
                 progress: bool | None = None, desc: str = ""):
        self.model, self.sampler, self.run_options, self.objective = model, sampler, run_options, objective
        self.metric_names, self.suite, self.extractor, self.reference = metric_names, suite, extractor, reference
        self.device, self.batch_size, self.seed_start, self.resamples, self.log = device, batch_size, seed_start, resamples, log
        self.world, self.progress, self.desc = world, progress, desc
        self.layers = tuple(layers_for(metric_names))
        self.features: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()

    def __call__(self, sigmas: tuple[float, ...], samples: int) -> tuple[Score, float]:
        entry = self.world.decide(lambda: self.log.get(self.seed_start, samples, sigmas) if self.log else None)
        if entry is None:
            entry = self._evaluate(sigmas, samples)
        return self.score(entry), entry["seconds"]

    def score(self, entry: dict) -> Score:
        """The :class:`Score` of a logged evaluation."""
        values = entry["values"]
        replicates = entry.get("replicates") or {}
        count = min((len(v) for v in replicates.values()), default=0)
        losses = [self.objective.losses({c: replicates[c][r] for c in replicates}) for r in range(count)]
        return Score(entry["samples"], self.objective.losses(values),
                     tuple(zip(*losses)) if losses else (), tuple(sorted(values.items())))

    def _evaluate(self, sigmas: tuple[float, ...], samples: int) -> dict:
        start = time.perf_counter()
        nfe = len(sigmas) - 1
        have = self.world.decide(self._cached_count, sigmas)
        options = self.run_options(nfe, sigmas)
        grid = self.sampler.schedule(self.model.noise_range, nfe, options)
        made = None
        if have < samples:
            seeds = range(self.seed_start + have, self.seed_start + samples)
            made = gather_views(self.model, self.sampler, grid, options, seeds,
                                [(self.suite.quantisation, self.extractor, self.layers)],
                                batch_size=self.batch_size, device=self.device, progress=self.progress,
                                desc=f"{self.desc} NFE {nfe} · {samples} samples", world=self.world)
        return self.world.decide(self._scored, sigmas, samples, made, start)

    def _scored(self, sigmas: tuple[float, ...], samples: int, made, start: float) -> dict:
        """On the main rank: extend the candidate's features with ``made``, score and log."""
        features = self.features.pop(sigmas, None)
        if made is not None:
            new = made[0][0]
            features = new if features is None else {k: np.concatenate([features[k], new[k]]) for k in new}
        self._keep(sigmas, features)
        subset = {layer: x[:samples] for layer, x in features.items()}
        reference = self.reference()
        options = self.suite.metric_options
        values = _columns(compute_metrics(self.metric_names, subset, reference, options, device=self.device),
                          self.objective)
        bad = {c: v for c, v in values.items() if not math.isfinite(v)}
        if bad:
            raise RuntimeError(f"{self.desc}: the schedule σ {list(sigmas)} scored {bad} on {samples} samples; a "
                               "non-finite objective cannot be compared, so the search stops here")
        replicates = bootstrap_replicates(self.metric_names, subset, reference, options, resamples=self.resamples,
                                          seed=samples, device=self.device) if self.resamples else {}
        entry = {"seed_start": self.seed_start, "samples": samples, "sigmas": [float(s) for s in sigmas],
                 "values": values, "replicates": {c: replicates[c] for c in values if c in replicates},
                 "seconds": round(time.perf_counter() - start, 4)}
        if self.log is not None:
            self.log.add(entry)
        return entry

    def _cached_count(self, sigmas: tuple) -> int:
        """How many of the first seeds' features are in memory for ``sigmas``."""
        features = self.features.get(sigmas)
        return len(next(iter(features.values()))) if features else 0

    def _keep(self, sigmas: tuple, features: dict[str, np.ndarray]) -> None:
        self.features[sigmas] = features
        total = sum(x.nbytes for f in self.features.values() for x in f.values())
        while total > CACHE_BYTES and len(self.features) > 1:
            _, dropped = self.features.popitem(last=False)
            total -= sum(x.nbytes for x in dropped.values())


def _columns(values: dict[str, float], objective: Objective) -> dict[str, float]:
    return {column: float(values[column]) for column in objective.columns}
