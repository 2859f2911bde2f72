"""A suite's ``batch_size``: a positive number, or ``auto``, the largest batch the device has room for.

The batch size decides which images share a batch, never which noise an image gets (per-sample
seeds, :mod:`cmbench.seeds`), so no image changes with it; batched kernels may round features
differently in the last float32 bits, which is why shards are kept apart by batch size
(:mod:`cmbench.shards`). ``auto`` is resolved once per run for each model and sampler and recorded
in each result row (``batch_size``):

- on the CPU, and for a stored sample set (nothing is sampled): :data:`DEFAULT_BATCH_SIZE`;
- on a GPU: the row's sampler and the extractor run on two probe batches
  (:data:`PROBE_SIZES` images) while torch counts the peak memory allocated; the growth per image
  against the memory free on the device (``torch.cuda.mem_get_info``, plus what torch's allocator
  holds unused), less :data:`HEADROOM`, gives the size, rounded down to a power of two;

at most :data:`MAX_AUTO` and never more than the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .validate import Checker

AUTO = "auto"
DEFAULT_BATCH_SIZE = 256
MAX_AUTO = 1024
PROBE_SIZES = (4, 16)
HEADROOM = 0.25
"""The share of free memory ``auto`` leaves unused: the batch in flight beside the one being
sampled (:mod:`cmbench.generate`), the allocator's fragmentation and kernels' workspaces."""


def parse_batch_size(c: Checker, raw: Any, path: str = "batch_size") -> int | str:
    """A suite's ``batch_size``: a positive integer or ``auto``."""
    if raw == AUTO:
        return AUTO
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise c.fail(path, f'batch_size must be a positive integer or "auto", got {raw!r}')
    return raw


def unsampled_batch_size(declared: int | str) -> int:
    """``declared``, with ``auto`` as :data:`DEFAULT_BATCH_SIZE`: for batches that sample no network
    (an analytic reference set, LPIPS distances)."""
    return DEFAULT_BATCH_SIZE if declared == AUTO else int(declared)


def resolve_batch_size(declared: int | str, count: int, device: torch.device,
                       probe: Callable[[int], None] | None) -> int:
    """``declared`` itself, or for ``auto`` the batch size for ``count`` samples on ``device``;
    ``probe(size)`` makes one batch of ``size`` images as the run will (None: nothing is sampled)."""
    if declared != AUTO:
        return int(declared)
    if device.type != "cuda" or probe is None:
        return min(DEFAULT_BATCH_SIZE, count)
    return min(fitting_batch_size(probe, device), MAX_AUTO, count)


def fitting_batch_size(probe: Callable[[int], None], device: torch.device) -> int:
    """The largest power of two of images whose batch fits the free memory of the GPU ``device``
    with :data:`HEADROOM` to spare, from the peak memory of ``probe`` at :data:`PROBE_SIZES`."""
    small, large = (_peak_bytes(probe, size, device) for size in PROBE_SIZES)
    per_image = max(large - small, 1) / (PROBE_SIZES[1] - PROBE_SIZES[0])
    fixed = max(large - per_image * PROBE_SIZES[1], 0)
    images = int(((1 - HEADROOM) * _free_bytes(device) - fixed) // per_image)
    return 1 << (max(images, 1).bit_length() - 1)


def _peak_bytes(probe: Callable[[int], None], size: int, device: torch.device) -> int:
    """The peak memory ``probe(size)`` allocates beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    probe(size)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _free_bytes(device: torch.device) -> int:
    """Memory the device has free, plus what torch's caching allocator holds without using it."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
