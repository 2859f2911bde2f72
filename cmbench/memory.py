"""Will it fit? A size check before sampling, so a huge ``num_samples`` is a clear error, not a MemoryError.

A row keeps the features of every sample (float32, all layers its metrics need) and the bootstrap
draws a resampled copy of them, so it needs about 2 × count × (bytes of one image's features).
"""

from __future__ import annotations

import os

GIB = 1 << 30


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), else the physical
    memory, else None when neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def features_bytes(count: int, bytes_per_image: int) -> int:
    """Memory a set of ``count`` images' features needs while it is scored (features + one resample)."""
    return 2 * count * bytes_per_image


def check_fits(what: str, count: int, bytes_per_image: int, *, available: int | None = None, source: str = "") -> None:
    """Raise ValueError when ``count`` images' features cannot fit in the available memory; the
    message names ``source`` (the suite file) and the key ``what``."""
    available = available_memory() if available is None else available
    needed = features_bytes(count, bytes_per_image)
    if available is not None and needed > available:
        raise ValueError(
            f"{source + ': ' if source else ''}{what} = {count:,} images would need about {needed / GIB:,.1f} GiB for their features "
            f"({bytes_per_image:,} bytes each, kept twice while scored); this machine has "
            f"{available / GIB:,.1f} GiB available; lower {what}")
