"""``cmbench stats compute``: reference statistics of a set of real images, streamed.

Images come from an image folder, an ``.npz`` batch or the toy dataset (:func:`open_images`),
batch by batch; every batch's features go into float64 streaming accumulators
(:class:`cmbench.metrics.fid.StatsAccumulator`, as EDM's ``fid.py`` streams float64 sums), so
50k or a million images need no feature matrix in memory. Only the first ``keep`` ``pool``
rows are kept, the real set of precision/recall, KID and density/coverage (10,000 as the ADM
evaluator's reference batches). The result is a cmbench reference file with its provenance.
Under ``torchrun`` each rank streams its share of the batches and rank 0 merges the sums
(:func:`compute_reference_stats`).

:func:`attach_image_features` does the run-time half of the ADM protocol: it extracts the
features of an official reference batch's stored images with the run's extractor.
"""

from __future__ import annotations

import datetime
import itertools
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoints.hashing import sha256_file
from .choices import STATS_BATCH_SIZE, STATS_KEEP
from .console import progress_bar
from .distributed import SINGLE, World
from .features.base import FeatureExtractor
from .images import QUANTISATIONS, to_uint8
from .metrics.fid import StatsAccumulator
from .metrics.npz_array import NpzArray
from .metrics.reference import ReferenceStats

DEFAULT_KEEP, DEFAULT_BATCH_SIZE = STATS_KEEP, STATS_BATCH_SIZE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TOY_PREFIX = "toy:"
INCEPTION_CHANNELS = 3


@dataclass
class ImageSource:
    """Real images to compute statistics of: ``count`` uint8 NCHW images of ``shape`` (C, H, W),
    delivered in stored order by :meth:`batches`; ``provenance`` says where they came from.
    ``read(batch_size, start)`` yields the batches of ``batch_size`` images from image ``start`` on."""

    description: str
    count: int
    shape: tuple[int, int, int]
    read: Callable[[int, int], Iterator[torch.Tensor]]
    provenance: dict = field(default_factory=dict)

    def num_batches(self, batch_size: int) -> int:
        return -(-self.count // batch_size)

    def batches(self, batch_size: int, numbers: range | None = None) -> Iterator[torch.Tensor]:
        """The images in batches of ``batch_size`` (the last may be smaller): all of them, or the
        consecutive batches ``numbers`` of that grid (a rank's share), the ones before left unread."""
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if numbers is None:
            numbers = range(self.num_batches(batch_size))
        if numbers.step != 1 or numbers.start < 0:
            raise ValueError(f"batches are read in consecutive runs from 0 on, not {numbers}")
        if numbers:
            yield from itertools.islice(self.read(batch_size, numbers.start * batch_size), len(numbers))


def input_channels(extractor: FeatureExtractor) -> int | None:
    """How many channels ``extractor`` takes: its ``input_channels`` if it declares one, the toy
    classifier's image shape, 3 for Inception networks; None when any count works (pixels). Several
    networks together (:class:`~cmbench.features.combined.CombinedExtractor`) take what the main one takes."""
    extractor = getattr(extractor, "main", extractor)
    declared = getattr(extractor, "input_channels", None)
    if declared:
        return int(declared)
    shape = getattr(getattr(extractor, "net", None), "img_shape", None)
    if shape:
        return int(shape[0])
    return INCEPTION_CHANNELS if extractor.name.startswith("inception") else None


def _match_channels(images: torch.Tensor, channels: int | None, where: str) -> torch.Tensor:
    """Grey images are repeated to 3 channels where the extractor takes colour (as EDM's fid.py);
    colour images for a grey extractor are an error (an image folder converts them with PIL)."""
    have = images.shape[1]
    if channels is None or have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    raise ValueError(f"{where}: images have {have} channel(s) but the extractor takes {channels}")


def _sliced(images: torch.Tensor) -> Callable[[int, int], Iterator[torch.Tensor]]:
    return lambda batch_size, start: (images[i : i + batch_size] for i in range(start, len(images), batch_size))


def _toy_source(spec: str, channels: int | None, limit: int | None) -> ImageSource:
    from .zoo.toy.data import load_toy

    split = spec[len(TOY_PREFIX):]
    images = load_toy(split)[0][:limit]
    stored = images.shape[1]
    images = _match_channels(images, channels, spec)
    return ImageSource(f"toy digits ({split} split, {len(images)} images)", len(images), tuple(images.shape[1:]),
                       _sliced(images), {"kind": "toy", "split": split, "stored_channels": stored})


def _folder_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, as EDM's image folders), sorted by relative path."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_image(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    return array[:, :, None] if array.ndim == 2 else array


def _folder_source(folder: Path, channels: int | None, limit: int | None) -> ImageSource:
    from PIL import Image

    files = _folder_files(folder)[:limit]
    if not files:
        raise ValueError(f"image folder {folder} holds no {', '.join(IMAGE_SUFFIXES)} files")
    if channels is None:
        with Image.open(files[0]) as first:
            channels = 3 if first.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV") else 1
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"image folder {folder}: cannot convert images to {channels} channels (1 or 3 are supported)")
    height, width = _read_image(files[0], mode).shape[:2]

    def read(batch_size: int, first: int) -> Iterator[torch.Tensor]:
        for start in range(first, len(files), batch_size):
            arrays = []
            for path in files[start : start + batch_size]:
                array = _read_image(path, mode)
                if array.shape[:2] != (height, width):
                    raise ValueError(
                        f"{path}: image is {array.shape[1]}×{array.shape[0]} but {files[0].name} (the first, sorted by "
                        f"name) is {width}×{height}; all images of a folder must have one size"
                    )
                arrays.append(array)
            yield torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())

    return ImageSource(f"image folder {folder} ({len(files)} images)", len(files), (channels, height, width), read,
                       {"kind": "folder", "path": str(folder), "color_mode": mode, "first": files[0].name,
                        "last": files[-1].name})


def _npz_source(path: Path, channels: int | None, quantisation: str | None, limit: int | None) -> ImageSource:
    try:
        array = NpzArray(path, "arr_0")
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not an .npz file ({err}); images must be a folder, an .npz with NHWC images "
                         "in arr_0, or toy:<split>") from None
    except KeyError as err:  # no arr_0: the message names the file and the arrays it has
        raise ValueError(f"{err.args[0]}; images must be NHWC in arr_0") from None
    if len(array.shape) != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{array.where}: expected NHWC images with 1 or 3 channels, got shape {list(array.shape)}")
    floating = np.issubdtype(array.dtype, np.floating)
    if not floating and array.dtype != np.uint8:
        raise ValueError(f"{array.where}: expected uint8 images (or float in [-1, 1] with --quantisation), got {array.dtype}")
    if floating and quantisation is None:
        raise ValueError(
            f"{array.where}: holds float images ({array.dtype}); give the quantisation that turns them into uint8 "
            f"(--quantisation {' or '.join(QUANTISATIONS)}: see docs/metrics.md)"
        )
    if not floating and quantisation is not None:
        raise ValueError(f"{array.where}: holds uint8 images already; --quantisation applies to float images only")
    count = len(array) if limit is None else min(limit, len(array))
    _, height, width, have = array.shape
    where = str(path)

    def read(batch_size: int, start: int) -> Iterator[torch.Tensor]:
        done = start
        for block in array.batches(batch_size, count, start=start):
            images = torch.from_numpy(block.transpose(0, 3, 1, 2).copy())
            if floating:
                bad = torch.nonzero(~torch.isfinite(images).flatten(1).all(1)).flatten()
                if len(bad):  # NaN or ±inf would quantise to ordinary grey levels: never a number
                    raise ValueError(f"{array.where}: image {done + int(bad[0])} (of {len(bad)} in rows {done}.."
                                     f"{done + len(images) - 1}) holds NaN or ±inf values; only finite images are scored")
                images = to_uint8(images, quantisation)
            done += len(images)
            yield _match_channels(images, channels, where)

    shape = (channels or have, height, width)
    provenance = {"kind": "npz", "path": str(path), "key": "arr_0", "stored_shape": list(array.shape), "stored_channels": have,
                  "stored_dtype": str(array.dtype), "sha256": sha256_file(path)}
    if floating:
        provenance["quantisation"] = quantisation
    return ImageSource(f"{path} (arr_0, {count} images)", count, shape, read, provenance)


def open_images(spec: str, *, channels: int | None = None, quantisation: str | None = None,
                limit: int | None = None) -> ImageSource:
    """The images ``spec`` names: ``toy:<split>``, a folder of PNG/JPEG files (recursive, sorted
    by relative path, converted to RGB or L to have ``channels``) or an ``.npz`` whose ``arr_0``
    is NHWC images (uint8, or float in [-1, 1] turned into uint8 with ``quantisation``).
    ``limit`` keeps the first images only."""
    if quantisation is not None and quantisation not in QUANTISATIONS:
        raise ValueError(f"unknown quantisation {quantisation!r}; accepted: {', '.join(QUANTISATIONS)}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2 images (statistics need two), got {limit}")
    if spec.startswith(TOY_PREFIX):
        source = _toy_source(spec, channels, limit)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            source = _folder_source(path, channels, limit)
        elif path.is_file():
            if path.suffix.lower() != ".npz":
                raise ValueError(f"{path}: images must be a folder, an .npz with arr_0, or toy:<split>")
            source = _npz_source(path, channels, quantisation, limit)
        else:
            raise FileNotFoundError(f"images {spec} not found: give an image folder, an .npz with NHWC images in arr_0, "
                                    "or toy:train / toy:test / toy:all")
    if source.count < 2:
        raise ValueError(f"{source.description}: statistics need at least 2 images, found {source.count}")
    return source


def compute_reference_stats(
    source: ImageSource,
    extractor: FeatureExtractor,
    *,
    layers: Sequence[str] | None = None,
    keep: int = DEFAULT_KEEP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
    world: World = SINGLE,
) -> ReferenceStats | None:
    """Float64 mean and covariance (normaliser N − 1) of every layer in ``layers`` (default: all
    the extractor has), streamed over ``source``; the first ``keep`` ``pool`` rows are kept, and
    every ``clip`` row (CMMD compares against the whole reference set, as google-research/cmmd does).

    Under ``world`` each rank extracts the features of its contiguous share of the batches of
    ``batch_size`` images (``world.part``, the batch grid of one process) into its own
    accumulators; the main rank merges them in rank order (Chan et al.'s pairwise update) and
    returns the statistics, the other ranks return None (the caller saves them on the main rank). The image
    count and the kept ``pool`` rows (the first ``keep`` in image order) are bitwise one
    process's; the mean and covariance are not, as the sums are grouped differently, but agree to
    rounding (to 1e-12 relative in the tests). One process computes exactly what it always did."""
    layers = tuple(layers or extractor.layers)
    extractor.check_layers(layers)
    if keep < 0:
        raise ValueError(f"keep must be ≥ 0 feature rows, got {keep}")
    batches = world.part(source.num_batches(batch_size))
    first = batches.start * batch_size  # the number of images before this rank's share
    keep_rows = {"pool": max(keep - first, 0), "clip": source.count}
    share = _extract_share(source, extractor, layers, keep=keep_rows, batch_size=batch_size,
                           device=device, batches=batches, progress=progress)
    shares = world.gather(share)
    if not world.main:
        return None
    sums, kept = _merged(shares)
    mu, sigma = {}, {}
    for layer, acc in sums.items():
        mu[layer], sigma[layer] = acc.statistics()
    meta = {
        **extractor.identity,
        "format": "cmbench",
        "num_images": int(sums[layers[0]].count),
        "resolution": list(source.shape[1:]),
        "channels": int(source.provenance.get("stored_channels", source.shape[0])),  # grey stays grey: 1
        "source": source.description,
        "source_details": source.provenance,
        "layers": {layer: int(mu[layer].shape[0]) for layer in layers},
        "kept_features": {layer: len(rows) for layer, rows in kept.items()},
        "statistics": "float64 streaming sums (StatsAccumulator), covariance normaliser N − 1",
        "world_size": world.size,
        "cmbench_version": __version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "quantisation" in source.provenance:
        meta["quantisation"] = source.provenance["quantisation"]
    return ReferenceStats(mu=mu, sigma=sigma, features=kept, meta=meta)


@dataclass
class _FeatureShare:
    """One rank's part: float64 accumulators per layer over its images, and its first rows of the
    layers whose rows are kept (none of a layer it kept none of)."""

    sums: dict[str, StatsAccumulator]
    kept: dict[str, np.ndarray]


def _extract_share(source: ImageSource, extractor: FeatureExtractor, layers: tuple[str, ...], *, keep: dict[str, int],
                   batch_size: int, device: torch.device | str, batches: range,
                   progress: bool | None) -> _FeatureShare:
    """Accumulate the features of the images in batches ``batches``; keep their first ``keep[layer]`` rows."""
    sums = {layer: StatsAccumulator() for layer in layers}
    kept: dict[str, list[np.ndarray]] = {layer: [] for layer in keep if layer in layers}
    kept_rows = dict.fromkeys(kept, 0)
    total = max(min(batches.stop * batch_size, source.count) - batches.start * batch_size, 0)
    bar = progress_bar(progress=progress, total=total, desc="reference features", unit="img")
    for images in source.batches(batch_size, batches):
        features = extractor.extract(images.to(device), layers)
        for layer in layers:
            sums[layer].update(features[layer].detach().reshape(len(images), -1).cpu().to(torch.float64).numpy())
        for layer in kept:
            if kept_rows[layer] < keep[layer]:
                rows = features[layer][: keep[layer] - kept_rows[layer]].detach().reshape(-1, features[layer][0].numel())
                kept[layer].append(rows.cpu().numpy().copy())
                kept_rows[layer] += len(rows)
        bar.update(len(images))
    bar.close()
    return _FeatureShare(sums, {layer: np.concatenate(rows) for layer, rows in kept.items() if rows})


def _merged(shares: list[_FeatureShare]) -> tuple[dict[str, StatsAccumulator], dict[str, np.ndarray]]:
    """The ranks' accumulators merged in rank order, and their kept rows one after another (each rank
    kept only what the ranks before it left short of ``keep``, so these are the first rows)."""
    sums = shares[0].sums
    for share in shares[1:]:
        for layer, acc in sums.items():
            acc.merge(share.sums[layer])
    layers = [layer for layer in sums if any(layer in share.kept for share in shares)]
    return sums, {layer: np.concatenate([s.kept[layer] for s in shares if layer in s.kept]) for layer in layers}


def attach_image_features(
    stats: ReferenceStats,
    extractor: FeatureExtractor,
    *,
    layers: Sequence[str] = ("pool",),
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> ReferenceStats:
    """Fill ``stats.features`` with the run's features of the reference file's stored images
    (an ADM batch's ``arr_0``: the real set precision/recall compare against); returns ``stats``.
    The statistics must already be accepted for ``extractor`` (``check_compatible``)."""
    if stats.images is None:
        raise ValueError(f"reference statistics {stats.meta.get('source')} (format {stats.format}) store no real "
                         "images to extract features from; recompute them keeping features (`cmbench stats compute`)")
    extractor.check_layers(layers)
    channels = input_channels(extractor)
    where = f"{stats.images.path}: {stats.images.key}"
    total = len(stats.images) if limit is None else min(limit, len(stats.images))
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    bar = progress_bar(progress=progress, total=total, desc="reference batch features", unit="img")
    for images in stats.images.batches(batch_size, total):
        features = extractor.extract(_match_channels(images, channels, where).to(device), layers)
        for layer in layers:
            parts[layer].append(features[layer].detach().reshape(len(images), -1).cpu().numpy())
        bar.update(len(images))
    bar.close()
    stats.features.update({layer: np.concatenate(blocks) for layer, blocks in parts.items()})
    return stats
