"""Named choices and defaults that the library and the command line share, in a module that
imports nothing heavy: the argument parser is built from it without loading torch, numpy or
scipy, so ``cmbench --help`` and ``cmbench --version`` answer at once."""

from __future__ import annotations

from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
QUANTISATIONS = ("round", "truncate")
"""How images in [-1, 1] become uint8 (:mod:`cmbench.images`)."""

CMBENCH = "cmbench"
ADM, EDM, CLEAN_FID, EDM2 = "adm", "edm", "clean-fid", "edm2"
OFFICIAL_FORMATS = (ADM, EDM, CLEAN_FID, EDM2)
REFERENCE_FORMATS = (CMBENCH, *OFFICIAL_FORMATS)
"""Reference-statistics file formats (:mod:`cmbench.metrics.reference_formats`)."""

STATS_KEEP = 10_000
"""Pool feature rows a reference file keeps for precision/recall, KID, density/coverage (as the
ADM evaluator's reference batches)."""
STATS_BATCH_SIZE = 256
OFFICIAL_REFERENCE_DEST = Path("reference_stats") / "official"
"""Where ``cmbench stats fetch`` puts official reference files (under the current folder)."""

WEIGHTS_NAMES = ("inception", "dinov2-vitl14", "clip-vitl14-336")
"""The feature networks' weights files ``cmbench weights fetch`` knows (:data:`cmbench.weights.WEIGHTS`)."""

TUNE_METHODS = ("robust", "ternary", "golden", "grid")  # cmbench.tuning.greedy: robust, then the line searches
