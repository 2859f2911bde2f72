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

:func:`load_reference` also reads the official formats (ADM reference batches, EDM and clean-fid
statistics; :mod:`cmbench.metrics.reference_formats`), detected from the arrays a file holds.
Those record no extractor hash: their ``meta`` names the format and the extractor convention the
numbers assume, and :meth:`ReferenceStats.check_compatible` accepts them only for that extractor.
Every format's arrays are checked when loaded: finite, and sigma a symmetric positive
semi-definite covariance the size of mu (:func:`cmbench.metrics.reference_formats.check_statistics`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmbench.atomic import atomic_write
from cmbench.metrics.fid import feature_statistics
from cmbench.choices import EDM2
from cmbench.metrics.edm2_stats import is_pickle
from cmbench.metrics.npz_array import npz_keys
from cmbench.metrics.reference_formats import (CMBENCH, FORMAT_LABELS, FORMATS, OFFICIAL_FORMATS, READERS,
                                               ReferenceImages, check_features, check_statistics, detect_format)

REQUIRED_META = ("extractor", "extractor_sha256", "num_images", "resolution", "source")
ARRAY_KINDS = ("mu", "sigma", "features")
FILE_FORMAT = (
    "a cmbench reference file is an .npz with arrays 'mu.<layer>', 'sigma.<layer>', optional "
    "'features.<layer>', and 'meta' (a JSON string with keys " + ", ".join(REQUIRED_META) + "); "
    "write one with `cmbench stats compute` (or cmbench.metrics.reference.save_reference)"
)


def _missing_meta(meta: dict) -> list[str]:
    return [key for key in REQUIRED_META if key not in meta]


@dataclass
class ReferenceStats:
    """Per-layer real-data statistics (``mu``, ``sigma``), optional real features, provenance.

    ``images`` (official ADM batches only) gives access to the stored real images whose features
    precision/recall need; they are extracted at run time with the run's extractor
    (:func:`cmbench.stats.attach_image_features`), never at load time.
    """

    mu: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    images: ReferenceImages | None = None
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """Quantities computed from these statistics during a run and reused by its rows (the real
    set's nearest neighbours, :func:`cmbench.metrics.neighbours.reference_nearest`); never saved."""

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

    @property
    def format(self) -> str:
        """``cmbench`` for cmbench's own files, else the official format (adm, edm, clean-fid)."""
        return self.meta.get("format", CMBENCH)

    @property
    def is_official(self) -> bool:
        return self.format in OFFICIAL_FORMATS

    def layer_identity(self, layer: str) -> dict:
        """The extractor that made ``layer``'s numbers: the file's ``layer_extractors`` entry for it
        (a file holding several networks' layers, e.g. Inception's ``pool`` and DINOv2's ``dinov2``),
        else its ``extractor`` and ``extractor_sha256``."""
        return layer_identity(self.meta, layer)

    def check_compatible(self, identity: dict, source: str, layers=None) -> None:
        """Raise if the statistics of ``layers`` (default: every layer the file has) came from
        another extractor than the run's ``identity`` gives for them (its ``layer_extractors``
        entry, else its ``extractor``).

        cmbench files must match the extractor's name and weights hash. Official files record no
        hash, only the extractor convention their numbers assume; they are accepted for the
        extractor of that name (e.g. ``inception-tf``) whatever its weights file, refused for any other.
        """
        layers = sorted(set(self.mu) | set(self.features)) if layers is None else list(layers)
        for layer in layers:
            ours, theirs = self.layer_identity(layer), layer_identity(identity, layer)
            if self.is_official:
                self._check_official(layer, ours, theirs, source)
                continue
            ours_pair = (ours["extractor"], ours["extractor_sha256"])
            theirs_pair = (theirs["extractor"], theirs["extractor_sha256"])
            if ours_pair != theirs_pair:
                raise ValueError(
                    f"reference statistics {source} were computed with extractor {ours_pair[0]!r} "
                    f"(sha256 {ours_pair[1]}) but this run extracts {_layer_text(layer)} with {theirs_pair[0]!r} "
                    f"(sha256 {theirs_pair[1]}); recompute them with the run's extractor "
                    f"(`cmbench stats compute`, or ReferenceStats.from_features + save_reference), or use "
                    f"the evaluator profile whose extractor is {ours_pair[0]!r}"
                )

    def _check_official(self, layer: str, ours: dict, theirs: dict, source: str) -> None:
        if ours["extractor"] == theirs["extractor"]:
            return
        convention = self.meta.get("extractor_convention", "an unrecorded extractor convention")
        if isinstance(convention, dict):
            convention = convention.get(layer, "an unrecorded extractor convention")
        raise ValueError(
            f"reference statistics {source} are an official {FORMAT_LABELS[self.format]} file (format "
            f"{self.format!r}, no extractor hash recorded): its {_layer_text(layer)} assume {convention}, i.e. "
            f"cmbench's extractor {ours['extractor']!r}, but this run extracts them with {theirs['extractor']!r} "
            f"(sha256 {theirs['extractor_sha256']}); use features: {{extractor: {ours['extractor']}}} with this file, "
            f"or recompute statistics with the run's extractor (`cmbench stats compute`)"
        )


def layer_identity(identity: dict, layer: str) -> dict:
    """The extractor that makes ``layer`` under ``identity`` (an extractor's identity, or a reference
    file's meta, which records the same keys): its ``layer_extractors`` entry, else the main one."""
    return dict((identity.get("layer_extractors") or {}).get(layer) or
                {"extractor": identity.get("extractor"), "extractor_sha256": identity.get("extractor_sha256")})


def _layer_text(layer: str) -> str:
    return f"features (layer {layer!r})"


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


def load_reference(path: str | os.PathLike, format: str = "auto") -> ReferenceStats:
    """Read reference statistics, running no code from the file: one written by
    :func:`save_reference`, or an official one (``adm``, ``edm``, ``clean-fid`` .npz files; ``edm2``
    pickles, read by a restricted unpickler). ``format="auto"`` tells them apart by the pickle
    header, the arrays the file holds (and, for files with only ``mu`` and ``sigma``, clean-fid's
    file naming); give the format to insist on one. Statistics that are not finite, or a sigma that is
    not a symmetric positive semi-definite covariance of mu's size, raise a ValueError naming the
    file and the array."""
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown reference format {format!r}; accepted: auto, {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics file {path} not found")
    if format == EDM2 or (format == "auto" and is_pickle(path)):
        found = READERS[EDM2](path)
        return ReferenceStats(mu=found.mu, sigma=found.sigma, meta=found.meta)
    try:
        keys = npz_keys(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not an .npz file ({err}); {FILE_FORMAT}") from err
    fmt = detect_format(path, keys) if format == "auto" else format
    if fmt != CMBENCH:
        found = READERS[fmt](path, keys)
        return ReferenceStats(mu=found.mu, sigma=found.sigma, meta=found.meta, images=found.images)
    return _load_cmbench(path)


def _load_cmbench(path: Path) -> ReferenceStats:
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
        stats = ReferenceStats(meta=meta, **parts)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; {FILE_FORMAT}") from err
    for layer in stats.mu:
        check_statistics(path, f"mu.{layer}", stats.mu[layer], f"sigma.{layer}", stats.sigma[layer])
    for layer, features in stats.features.items():
        dim = stats.mu[layer].shape[0] if layer in stats.mu else None
        check_features(path, f"features.{layer}", features, dim)
    return stats
