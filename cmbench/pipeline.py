"""The device side of sampling: each batch's quantisation, feature extraction and copies to the
host queued without waiting, one batch ahead of the host (:func:`one_ahead`), and the sampler's
clock. :func:`cmbench.generate.generate_views` drives it; on the CPU the same code runs and the
copies and waits are no-ops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .features import FeatureExtractor
from .images import to_uint8

if TYPE_CHECKING:
    from .generate import ImageBatch


class Clock:
    """Seconds from its creation to :meth:`stop`: on a GPU between two CUDA events on the device's
    stream (read without waiting until :meth:`seconds`), on the CPU by the wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.stream = torch.cuda.current_stream(device)
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record(self.stream)
        else:
            self.start = time.perf_counter()

    def stop(self) -> "Clock":
        if self.cuda:
            self.end.record(self.stream)
        else:
            self.end = time.perf_counter()
        return self

    def seconds(self) -> float:
        if not self.cuda:
            return self.end - self.start
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1000.0


Pass = tuple[FeatureExtractor, list[str]]


def extraction_passes(views: list[tuple[str, FeatureExtractor, tuple[str, ...]]]) -> dict[tuple[str, int], Pass]:
    """One extraction per (quantisation, extractor) of the views, of the union of their layers
    (those with any), keyed by the quantisation and the extractor's id."""
    passes: dict[tuple[str, int], tuple[FeatureExtractor, set[str]]] = {}
    for quantisation, extractor, layers in views:
        passes.setdefault((quantisation, id(extractor)), (extractor, set()))[1].update(layers)
    return {key: (extractor, sorted(layers)) for key, (extractor, layers) in passes.items() if layers}


@dataclass(frozen=True)
class InFlight:
    """A batch whose quantisation and extraction are queued on the device, with the host copies of
    its labels, finite flags, features (by pass) and kept uint8 images; they hold their values
    once :attr:`arrival` has been waited for. Labels and images are None when not kept."""

    seeds: Sequence[int]
    labels: torch.Tensor | None
    finite: torch.Tensor | None
    features: dict[tuple[str, int], dict[str, torch.Tensor]]
    images: torch.Tensor | None
    arrival: "Arrival"


class Launcher:
    """Queues each batch's quantisations and extractions and their copies to the host; keeps the
    uint8 images under ``quantisation`` (with the labels) of every batch when ``save``, else of
    those among the first ``keep_images``."""

    def __init__(self, passes: dict[tuple[str, int], Pass], quantisation: str, keep_images: int, save: bool,
                 device: torch.device):
        self.passes, self.quantisation, self.keep_images, self.save = passes, quantisation, keep_images, save
        self.device = device
        self.launched = 0  # images launched so far

    def __call__(self, batch: ImageBatch) -> InFlight:
        quantised: dict[str, torch.Tensor] = {}

        def uint8(quantisation: str) -> torch.Tensor:
            if quantisation not in quantised:
                quantised[quantisation] = to_uint8(batch.images, quantisation)
            return quantised[quantisation]

        with torch.no_grad():
            features = {key: extractor.extract_on_device(uint8(key[0]), layers)
                        for key, (extractor, layers) in self.passes.items()}
        keep = self.save or self.launched < self.keep_images
        self.launched += len(batch.seeds)
        return InFlight(
            batch.seeds, to_host(batch.labels) if keep else None, to_host(batch.finite),
            {key: {layer: to_host(values.float()) for layer, values in found.items()} for key, found in features.items()},
            to_host(uint8(self.quantisation)) if keep else None, Arrival(self.device),
        )


def to_host(values: torch.Tensor | None) -> torch.Tensor | None:
    """A host copy of device ``values``, started without waiting (into pinned memory); a CPU
    tensor itself."""
    return None if values is None else values.to("cpu", non_blocking=True)


class Arrival:
    """On a GPU, the point in the device's stream after the copies queued so far: :meth:`wait`
    returns once they have arrived. On the CPU there is nothing to wait for."""

    def __init__(self, device: torch.device):
        self.event = None
        if device.type == "cuda":
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(device))

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


def one_ahead(batches: Iterable[ImageBatch], launch: Callable[[ImageBatch], InFlight]) -> Iterator[InFlight]:
    """Each batch launched, handed on only once the next batch is launched behind it (the last at
    the end): the device always has the next batch queued while the host waits for one."""
    waiting = None
    for batch in batches:
        launched = launch(batch)
        if waiting is not None:
            yield waiting
        waiting = launched
    if waiting is not None:
        yield waiting
