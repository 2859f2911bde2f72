"""Reference statistics of a real data set, with their provenance.

A cmbench reference file is one ``.npz`` (written with ``np.savez``, read with
``allow_pickle=False``, so loading it runs no code) holding, per feature layer:

- ``mu.<layer>`` and ``sigma.<layer>``: float64 mean and covariance (normaliser N − 1, as EDM's
  ``fid.py`` and the ADM evaluator) for FID;
- ``features.<layer>`` (optional): a subset of real features, e.g. the first 10k ``pool`` rows as
  the ADM evaluator's precision/recall reference batch;
- ``meta``: a JSON string with the provenance — at least the extractor name and weights hash
  (features from different extractors are not comparable), the number of images, the
  resolution and the source data set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmbench.atomic import atomic_write
from cmbench.metrics.fid import feature_statistics

REQUIRED_META = ("extractor", "extractor_sha256", "num_images", "resolution", "source")
ARRAY_KINDS = ("mu", "sigma", "features")
FILE_FORMAT = (
    "a cmbench reference file is an .npz with arrays 'mu.<layer>', 'sigma.<layer>', optional "
    "'features.<layer>', and 'meta' (a JSON string with keys " + ", ".join(REQUIRED_META) + "); "
    "write one with cmbench.metrics.reference.save_reference (or `cmbench stats`)"
)


def _missing_meta(meta: dict) -> list[str]:
    return [key for key in REQUIRED_META if key not in meta]


@dataclass
class ReferenceStats:
    """Per-layer real-data statistics (``mu``, ``sigma``), optional real features, provenance."""

    mu: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.mu) != set(self.sigma):
            raise ValueError(
                f"reference statistics need mu and sigma for the same layers; mu has "
                f"{sorted(self.mu)}, sigma has {sorted(self.sigma)}"
            )
        missing = _missing_meta(self.meta)
        if missing:
            raise ValueError(
                f"reference statistics meta lacks required key(s) {', '.join(missing)}; "
                f"required: {', '.join(REQUIRED_META)}"
            )

    @classmethod
    def from_features(
        cls,
        features: dict[str, np.ndarray],
        meta: dict,
        keep_features: dict[str, int] | None = None,
    ) -> "ReferenceStats":
        """Statistics of every layer in ``features``; keep the first n rows of layers in
        ``keep_features`` (e.g. ``{"pool": 10000}`` for precision/recall)."""
        mu, sigma = {}, {}
        for layer, x in features.items():
            mu[layer], sigma[layer] = feature_statistics(x)
        kept = {}
        for layer, n in (keep_features or {}).items():
            if layer not in features:
                raise ValueError(
                    f"cannot keep features of layer {layer!r}: not among the computed layers "
                    f"{sorted(features)}"
                )
            x = np.asarray(features[layer])
            if n < 1 or n > x.shape[0]:
                raise ValueError(
                    f"cannot keep {n} rows of layer {layer!r}: it has {x.shape[0]} rows"
                )
            kept[layer] = x[:n].copy()
        return cls(mu=mu, sigma=sigma, features=kept, meta=dict(meta))

    def check_compatible(self, identity: dict[str, str], source: str) -> None:
        """Raise if these statistics came from another extractor than ``identity`` describes."""
        ours = (self.meta["extractor"], self.meta["extractor_sha256"])
        theirs = (identity.get("extractor"), identity.get("extractor_sha256"))
        if ours != theirs:
            raise ValueError(
                f"reference statistics {source} were computed with extractor {ours[0]!r} "
                f"(sha256 {ours[1]}) but this run extracts features with {theirs[0]!r} "
                f"(sha256 {theirs[1]}); recompute them with the run's extractor "
                f"(`cmbench stats`, or ReferenceStats.from_features + save_reference), or use "
                f"the evaluator profile whose extractor is {ours[0]!r}"
            )


def save_reference(path: str | os.PathLike, stats: ReferenceStats, overwrite: bool = False) -> None:
    """Write ``stats`` to ``path`` as one .npz, atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"reference statistics file {path} exists; pass overwrite=True to replace it")
    try:
        meta_json = json.dumps(stats.meta, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"reference meta must be JSON-serialisable: {err}") from err
    arrays = {"meta": np.array(meta_json)}
    for kind in ARRAY_KINDS:
        for layer, value in getattr(stats, kind).items():
            arrays[f"{kind}.{layer}"] = np.asarray(value)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_reference(path: str | os.PathLike) -> ReferenceStats:
    """Read a reference file written by :func:`save_reference` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics file {path} not found")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if "meta" not in arrays:
        raise ValueError(f"{path} has no 'meta' entry (it has {sorted(arrays)}); {FILE_FORMAT}")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: 'meta' is not valid JSON ({err}); {FILE_FORMAT}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: 'meta' is not a JSON object; {FILE_FORMAT}")
    missing = _missing_meta(meta)
    if missing:
        raise ValueError(f"{path}: meta lacks required key(s) {', '.join(missing)}; {FILE_FORMAT}")
    parts: dict[str, dict[str, np.ndarray]] = {kind: {} for kind in ARRAY_KINDS}
    for key, value in arrays.items():
        kind, _, layer = key.partition(".")
        if kind not in parts or not layer:
            raise ValueError(f"{path}: unexpected array {key!r}; {FILE_FORMAT}")
        parts[kind][layer] = value
    try:
        return ReferenceStats(meta=meta, **parts)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; {FILE_FORMAT}") from err
