"""Readers for the official reference-statistics files, and telling the formats apart.

Three formats besides cmbench's own (:mod:`cmbench.metrics.reference`) are published with the
papers cmbench reproduces (shared/reference/facts.md §4). None records the extractor's weights
hash; each assumes an extractor convention, which the reader writes into ``meta`` so that
:meth:`ReferenceStats.check_compatible` can refuse features from any other extractor:

- ``adm``: the ADM evaluator's reference batches (``VIRTUAL_*.npz``, openai/guided-diffusion):
  ``mu``, ``sigma`` (pool_3, 2048-d) → layer ``pool``; ``mu_s``, ``sigma_s`` (mixed_6/conv, first 7
  channels, 2023-d) → layer ``spatial``; ``arr_0``: 10,000 uint8 NHWC real images, the set
  precision/recall compare against. The images are not read here (2 GB at 256²): ``images`` is
  a :class:`ReferenceImages` that streams them when features are extracted at run time.
- ``edm``: EDM's ``fid.py ref`` output (``cifar10-32x32.npz``, ``imagenet-64x64.npz``, ...):
  ``mu``, ``sigma`` only → layer ``pool``.
- ``clean-fid``: clean-fid's statistics, ``mu``, ``sigma`` → ``pool``, in files named
  ``{dataset}_{mode}[_{model}]_{split}_{res}.npz`` (cleanfid/features.py); the mode (``clean``,
  ``legacy_tensorflow``, ``legacy_pytorch``) decides the preprocessing the numbers assume.

All Inception conventions above use the TF Inception-v3 graph of 2015-12-05 (or a faithful
port) with the images resized to 299 inside the network: cmbench's extractor for that is
``inception-tf``. clean-fid's ``clean`` mode resizes outside the network (PIL bicubic) and its
``legacy_pytorch`` mode uses pytorch-fid's network; no cmbench extractor matches those, so they
get extractor names that no run has and are refused, with a message that says why.

Every reader checks the arrays it returns (:func:`check_statistics`, :func:`check_features`):
finite, mu ``[D]``, sigma a symmetric positive semi-definite ``[D, D]`` covariance, so that a
corrupt file is refused by name at load time, not later inside an eigensolver.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from cmbench.choices import ADM, CLEAN_FID, CMBENCH, EDM, EDM2, OFFICIAL_FORMATS, REFERENCE_FORMATS
from cmbench.metrics import edm2_stats
from cmbench.metrics.fid import nonfinite_text
from cmbench.metrics.npz_array import NpzArray

INCEPTION_TF = "inception-tf"
FORMATS = REFERENCE_FORMATS
UNRECORDED = None  # official files carry no extractor hash: meta["extractor_sha256"] is null

FORMAT_DESCRIPTIONS = {
    CMBENCH: "cmbench reference file: 'mu.<layer>', 'sigma.<layer>', optional 'features.<layer>', 'meta' (JSON)",
    ADM: "ADM reference batch (VIRTUAL_*.npz): 'arr_0' (uint8 NHWC images), 'mu', 'sigma', 'mu_s', 'sigma_s'",
    EDM: "EDM reference statistics (fid.py ref): exactly 'mu' and 'sigma'",
    CLEAN_FID: "clean-fid statistics: exactly 'mu' and 'sigma', file named {dataset}_{mode}[_{model}]_{split}_{res}.npz",
    EDM2: edm2_stats.FORMAT_TEXT,
}
FORMAT_LABELS = {ADM: "ADM reference batch", EDM: "EDM reference statistics", CLEAN_FID: "clean-fid statistics",
                 EDM2: "EDM2 reference statistics"}

COVARIANCE_RTOL_PER_DIM = 2.0 ** -23
"""Round-off allowed in a [D, D] covariance, per dimension, relative to its largest entry or
eigenvalue: float32's unit round-off, so D·2⁻²³ bounds what storing a PSD covariance in float32
can move its eigenvalues by; corruption (a NaN, a sign flip, a wrong array) is far larger."""
STATISTICS_ACCEPTED = (
    "accepted: finite float arrays, mu of shape [D] and sigma a symmetric positive semi-definite [D, D] "
    "covariance (eigenvalues ≥ −D·2⁻²³ × the largest in magnitude: round-off), kept features [N, D]"
)

TF_GRAPH = "TF Inception-v3 graph of 2015-12-05"
CONVENTIONS = {
    ADM: f"{TF_GRAPH} as the ADM evaluator runs it (classify_image_graph_def.pb): float NHWC input in "
         "[0, 255], resized bilinearly to 299 inside the graph; pool_3 (2048-d) and mixed_6/conv first 7 "
         "channels (17·17·7 = 2023-d)",
    EDM: f"{TF_GRAPH} in NVIDIA's PyTorch port (inception-2015-12-05.pkl, EDM fid.py): uint8 input, "
         "1-channel images repeated to 3, resized to 299 inside the network; pool_3 (2048-d)",
}
CLEAN_FID_MODES = {
    "legacy_tensorflow": (INCEPTION_TF, f"{TF_GRAPH} (clean-fid's TorchScript port) with the TF-style bilinear "
                                        "resize to 299 inside the network (clean-fid mode legacy_tensorflow); pool_3 (2048-d)"),
    "clean": ("inception-tf+clean-resize", f"{TF_GRAPH} fed images resized to 299 outside the network with PIL "
                                            "bicubic and no requantisation (clean-fid mode clean); pool_3 (2048-d)"),
    "legacy_pytorch": ("inception-pytorch-fid", "pytorch-fid's Inception-v3 with PyTorch bilinear resizing "
                                                "(clean-fid mode legacy_pytorch); pool3 (2048-d)"),
}
CLEAN_FID_NAME = re.compile(
    r"^(?P<dataset>.+?)_(?P<mode>clean|legacy_tensorflow|legacy_pytorch)(?:_(?P<model>.+?))?"
    r"_(?P<split>[a-z0-9]+)_(?P<res>\d+|na)\.npz$"
)
EDM2_NAME = re.compile(r"^img(\d+)\.pkl$")
EDM_NAME = re.compile(r"^(?P<dataset>.+?)-(?P<width>\d+)x(?P<height>\d+)(?:-(?P<variant>[a-z0-9]+))?\.npz$")


@dataclass(frozen=True)
class ReferenceImages:
    """Real uint8 images stored beside official statistics (an ADM batch's ``arr_0``), read in
    batches only when features are extracted from them."""

    path: Path
    key: str
    shape: tuple[int, int, int, int]  # N, H, W, C as stored

    @classmethod
    def open(cls, path: str | Path, key: str = "arr_0") -> "ReferenceImages":
        array = NpzArray(path, key)
        if array.dtype != np.uint8 or len(array.shape) != 4 or array.shape[-1] not in (1, 3):
            raise ValueError(
                f"{array.where}: expected uint8 NHWC images with 1 or 3 channels (an ADM reference batch's "
                f"arr_0), got {array.dtype} with shape {list(array.shape)}"
            )
        return cls(Path(path), key, array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def resolution(self) -> list[int]:
        return [self.shape[1], self.shape[2]]

    def batches(self, batch_size: int = 256, limit: int | None = None) -> Iterator[torch.Tensor]:
        """uint8 NCHW tensors of at most ``batch_size`` images, in stored order."""
        for block in NpzArray(self.path, self.key).batches(batch_size, limit):
            yield torch.from_numpy(block.transpose(0, 3, 1, 2).copy())

    def describe(self) -> dict:
        return {"path": str(self.path), "key": self.key, "count": len(self), "shape": list(self.shape), "dtype": "uint8"}


@dataclass
class OfficialStats:
    """What a reader found: per-layer statistics, provenance, and real images if the file has some."""

    mu: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    meta: dict
    images: ReferenceImages | None = None


def detect_format(path: Path, keys: list[str]) -> str:
    """The format of a reference file from its array names (and, for mu/sigma files, its name)."""
    present = set(keys)
    if "meta" in present:
        return CMBENCH
    if {"mu", "sigma", "mu_s", "sigma_s"} <= present:
        return ADM
    if present == {"mu", "sigma"}:
        return CLEAN_FID if CLEAN_FID_NAME.match(path.name) else EDM
    hint = ""
    if present == {"feats"}:
        hint = " It looks like a clean-fid KID features file (*_kid.npz): it holds features, not statistics."
    elif present and present <= {"arr_0", "arr_1"}:
        hint = (" It looks like an image batch (arr_0 images, arr_1 labels), not statistics: compute statistics "
                f"from it with `cmbench stats compute --images {path} ...`.")
    raise ValueError(
        f"{path}: not a reference-statistics file cmbench can read; it has arrays {sorted(present) or 'none'}.{hint} "
        "Accepted formats: " + "; ".join(f"{name}: {text}" for name, text in FORMAT_DESCRIPTIONS.items())
    )


def _require(path: Path, keys: list[str], needed: tuple[str, ...], fmt: str) -> None:
    missing = [k for k in needed if k not in keys]
    if missing:
        raise ValueError(
            f"{path}: not a {FORMAT_LABELS[fmt]} file: it lacks {', '.join(missing)} (it has {sorted(keys)}); "
            f"expected {FORMAT_DESCRIPTIONS[fmt]}"
        )


def _matrix_pair(path: Path, data, mu_key: str, sigma_key: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = data[mu_key], data[sigma_key]
    check_statistics(path, mu_key, mu, sigma_key, sigma)
    return np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)


def check_statistics(path: Path, mu_key: str, mu: np.ndarray, sigma_key: str, sigma: np.ndarray) -> None:
    """Raise a ValueError naming ``path`` and the array when ``mu``/``sigma`` are not the mean and
    covariance of some features: not float, wrongly shaped, not finite, not symmetric, or not
    positive semi-definite beyond round-off (:data:`COVARIANCE_RTOL_PER_DIM`)."""
    for key, array in ((mu_key, mu), (sigma_key, sigma)):
        _refuse(path, key, _dtype_problem(array))
    if np.ndim(mu) != 1 or mu.shape[0] == 0:
        _refuse(path, mu_key, f"has shape {list(np.shape(mu))}; a mean is a non-empty vector [D]")
    if np.ndim(sigma) != 2 or sigma.shape[0] != sigma.shape[1]:
        _refuse(path, sigma_key, f"has shape {list(np.shape(sigma))}; a covariance is a square matrix [D, D]")
    if sigma.shape[0] != mu.shape[0]:
        _refuse(path, sigma_key, f"has shape {list(sigma.shape)} but {mu_key!r} has {mu.shape[0]} entries; "
                                 f"the covariance of a [D] mean is [D, D]")
    for key, array in ((mu_key, mu), (sigma_key, sigma)):
        _refuse(path, key, nonfinite_text(array))
    sigma = np.asarray(sigma, dtype=np.float64)
    tol = COVARIANCE_RTOL_PER_DIM * sigma.shape[0]
    _refuse(path, sigma_key, _asymmetry_problem(sigma, tol))
    _refuse(path, sigma_key, psd_problem(sigma, tol))


def check_features(path: Path, key: str, features: np.ndarray, dim: int | None) -> None:
    """Raise a ValueError naming ``path`` and ``key`` unless ``features`` are finite float rows
    ``[N, dim]`` (``dim`` None: any width)."""
    _refuse(path, key, _dtype_problem(features))
    if np.ndim(features) != 2 or (dim is not None and features.shape[1] != dim):
        width = "D" if dim is None else str(dim)
        _refuse(path, key, f"has shape {list(np.shape(features))}; kept features are rows [N, {width}]")
    _refuse(path, key, nonfinite_text(features))


def psd_problem(sigma: np.ndarray, tol: float) -> str | None:
    """None when every eigenvalue of the symmetric ``sigma`` (its lower triangle is read) is
    ≥ −tol × the largest in magnitude, else what is wrong. A Cholesky factorisation of
    sigma + tol·max|diag|·I proves it cheaply (max|diag| ≤ max|λ|); only when that fails are the
    eigenvalues computed, to decide and to report them (about 0.1 s and 0.7 s at D = 2048)."""
    shifted = np.array(sigma, dtype=np.float64)
    shifted[np.diag_indices_from(shifted)] += tol * np.abs(np.diagonal(sigma)).max()
    try:
        scipy.linalg.cholesky(shifted, lower=True, overwrite_a=True, check_finite=False)
        return None
    except np.linalg.LinAlgError:
        pass
    eig = scipy.linalg.eigh(sigma, eigvals_only=True, driver="evr", check_finite=False)
    if eig[0] >= -tol * np.abs(eig).max():
        return None
    return (f"is not positive semi-definite: smallest eigenvalue {eig[0]:.3g} vs largest {eig[-1]:.3g} "
            f"(round-off allowed: {tol:.2g} × the largest in magnitude)")


def _asymmetry_problem(sigma: np.ndarray, tol: float) -> str | None:
    gap, largest = float(np.abs(sigma - sigma.T).max()), float(np.abs(sigma).max())
    if gap <= tol * largest:
        return None
    return f"is not symmetric: entries differ from their transposes by up to {gap:.3g} (largest entry {largest:.3g})"


def _dtype_problem(array: np.ndarray) -> str | None:
    if np.asarray(array).dtype.kind in "fiu":
        return None
    return f"has dtype {np.asarray(array).dtype}; statistics are real numbers (a float array)"


def _refuse(path: Path, key: str, problem: str | None) -> None:
    if problem is not None:
        raise ValueError(f"{path}: array {key!r} {problem}; {STATISTICS_ACCEPTED}")


def _official_meta(path: Path, fmt: str, extractor: str, convention: str, resolution, **extra) -> dict:
    return {
        "format": fmt,
        "extractor": extractor,
        "extractor_sha256": UNRECORDED,
        "extractor_convention": convention,
        "num_images": None,  # the files do not say how many images the statistics cover
        "resolution": resolution,
        "source": str(path),
        **extra,
    }


def read_adm(path: Path, keys: list[str]) -> OfficialStats:
    """An ADM reference batch: pool and spatial statistics, and its real images (not loaded)."""
    _require(path, keys, ("mu", "sigma", "mu_s", "sigma_s"), ADM)
    with np.load(path, allow_pickle=False) as data:
        mu, sigma = _matrix_pair(path, data, "mu", "sigma")
        mu_s, sigma_s = _matrix_pair(path, data, "mu_s", "sigma_s")
    images = ReferenceImages.open(path, "arr_0") if "arr_0" in keys else None
    meta = _official_meta(
        path, ADM, INCEPTION_TF, CONVENTIONS[ADM], images.resolution if images else None,
        layers={"pool": int(mu.shape[0]), "spatial": int(mu_s.shape[0])},
        images=images.describe() if images else None,
    )
    return OfficialStats({"pool": mu, "spatial": mu_s}, {"pool": sigma, "spatial": sigma_s}, meta, images)


def read_edm(path: Path, keys: list[str]) -> OfficialStats:
    """EDM's ``fid.py ref`` statistics: pool only."""
    _require(path, keys, ("mu", "sigma"), EDM)
    with np.load(path, allow_pickle=False) as data:
        mu, sigma = _matrix_pair(path, data, "mu", "sigma")
    named = EDM_NAME.match(path.name)
    resolution = [int(named["height"]), int(named["width"])] if named else None
    meta = _official_meta(path, EDM, INCEPTION_TF, CONVENTIONS[EDM], resolution,
                          layers={"pool": int(mu.shape[0])}, dataset=named["dataset"] if named else None)
    return OfficialStats({"pool": mu}, {"pool": sigma}, meta)


def parse_clean_fid_name(name: str) -> dict | None:
    """``{dataset, mode, model, split, resolution}`` from a clean-fid statistics file name, or None."""
    named = CLEAN_FID_NAME.match(name)
    if not named:
        return None
    res = named["res"]
    return {
        "dataset": named["dataset"], "mode": named["mode"], "model": named["model"] or "inception_v3",
        "split": named["split"], "resolution": None if res == "na" else [int(res), int(res)],
    }


def read_clean_fid(path: Path, keys: list[str]) -> OfficialStats:
    """clean-fid statistics: pool only; the mode in the file name decides the convention."""
    _require(path, keys, ("mu", "sigma"), CLEAN_FID)
    parsed = parse_clean_fid_name(path.name)
    if parsed is None:
        raise ValueError(
            f"{path}: clean-fid statistics are only usable when the file name says the mode; clean-fid names them "
            "{dataset}_{mode}[_{model}]_{split}_{res}.npz with mode clean, legacy_tensorflow or legacy_pytorch "
            "(e.g. cifar10_legacy_tensorflow_train_32.npz); rename the file as clean-fid wrote it"
        )
    with np.load(path, allow_pickle=False) as data:
        mu, sigma = _matrix_pair(path, data, "mu", "sigma")
    if parsed["model"] == "inception_v3":
        extractor, convention = CLEAN_FID_MODES[parsed["mode"]]
    else:
        extractor = f"clean-fid:{parsed['model']}"
        convention = f"clean-fid's {parsed['model']} feature network (mode {parsed['mode']})"
    meta = _official_meta(
        path, CLEAN_FID, extractor, convention, parsed["resolution"], layers={"pool": int(mu.shape[0])},
        clean_fid={k: parsed[k] for k in ("dataset", "mode", "model", "split")},
    )
    return OfficialStats({"pool": mu}, {"pool": sigma}, meta)


def read_edm2(path: Path, keys: list[str] | None = None) -> OfficialStats:
    """EDM2's statistics pickle (:mod:`cmbench.metrics.edm2_stats`): ``pool`` (Inception) and ``dinov2``
    (DINOv2 ViT-L/14), each layer recording the extractor its numbers assume."""
    mu, sigma, count = edm2_stats.read_edm2_pickle(path)
    keys = {layer: key for key, layer in edm2_stats.EDM2_METRIC_LAYERS.items()}
    for layer in mu:
        check_statistics(path, f"{keys[layer]}.mu", mu[layer], f"{keys[layer]}.sigma", sigma[layer])
        mu[layer], sigma[layer] = mu[layer].astype(np.float64), sigma[layer].astype(np.float64)
    main = "pool" if "pool" in mu else next(iter(mu))
    named = EDM2_NAME.match(Path(path).name)  # EDM2's img64.pkl, img512.pkl: square ImageNet crops
    meta = _official_meta(
        path, EDM2, edm2_stats.EDM2_LAYER_EXTRACTORS[main], {layer: edm2_stats.EDM2_CONVENTIONS[layer] for layer in mu},
        [int(named[1])] * 2 if named else None, layers={layer: int(value.shape[0]) for layer, value in mu.items()},
        layer_extractors={layer: {"extractor": edm2_stats.EDM2_LAYER_EXTRACTORS[layer], "extractor_sha256": UNRECORDED}
                          for layer in mu},
    )
    meta["num_images"] = count
    return OfficialStats(mu, sigma, meta)


READERS = {ADM: read_adm, EDM: read_edm, CLEAN_FID: read_clean_fid, EDM2: read_edm2}
