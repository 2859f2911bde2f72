"""Per-sample random streams (EDM's convention).

Sample ``i`` draws its latent, its class label and every later noise (churn, multistep
re-noising) from its own generator seeded with ``seeds[i]``, so an image depends only on its
seed: not on the batch size, the device, the number of processes or the resume point. The
generators live on the CPU so that the same seed gives the same noise on every device.
Per sample, the order of draws is: latent, then label, then sampler noise (as EDM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SampleNoise:
    """A batch of per-sample generators; each draw returns one stacked tensor ``[B, ...]``."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self._generators = [torch.Generator().manual_seed(s % (1 << 32)) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise of per-sample ``shape``."""
        draws = [torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self._generators]
        return to_device(torch.stack(draws), self.device)

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) draws of per-sample ``shape``."""
        draws = [torch.rand(tuple(shape), generator=g, dtype=dtype) for g in self._generators]
        return to_device(torch.stack(draws), self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped and typed like ``x`` (whose first axis is the batch)."""
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)

    def randint(self, high: int) -> torch.Tensor:
        """One integer in ``[0, high)`` per sample (int64, shape ``[B]``)."""
        draws = [torch.randint(high, size=(), generator=g) for g in self._generators]
        return to_device(torch.stack(draws), self.device)


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU ``values`` on ``device``. To a GPU they go through pinned memory without waiting: a copy
    from ordinary (pageable) memory would first wait for all the work queued on the GPU, so the host
    could not queue the next step or batch behind it (:mod:`cmbench.generate`)."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def seed_range(seed_start: int, num_samples: int) -> range:
    """The seeds of a run: ``seed_start, ..., seed_start + num_samples - 1`` (a range: no memory per seed)."""
    return range(seed_start, seed_start + num_samples)
