"""Non-finite samples are an error, never a number.

A model with NaN weights, or a sampler step that overflows, produces NaN or ±inf images; quantised,
they would become ordinary grey levels and a plausible-looking FID. Each batch is checked once
after sampling (one ``isfinite`` reduction, no cost per step); only when it fails is the batch
sampled again with every model evaluation checked, to name the first evaluation, map and σ where
the values went bad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .models.base import MAPS


class NonFiniteSamples(RuntimeError):
    """A sampler's images (or their features) hold NaN or ±inf values."""


def finite_by_row(values: torch.Tensor) -> torch.Tensor:
    """Whether each entry along the first axis is all finite: a bool tensor ``[N]`` on ``values``'
    device, computed without waiting for it (the pipeline reads it a batch later)."""
    return torch.isfinite(values).flatten(1).all(1)


def non_finite_rows(values: torch.Tensor) -> list[int]:
    """Indices along the first axis whose entries are not all finite."""
    return _false_rows(finite_by_row(values))


def _false_rows(flags: torch.Tensor) -> list[int]:
    return torch.nonzero(~flags).flatten().tolist()


def show_seeds(seeds: Sequence[int], rows: list[int], limit: int = 5) -> str:
    """``seeds 3, 7, 9 (3 of 256)``: the seeds at ``rows``, the first ``limit`` of them."""
    shown = ", ".join(str(seeds[i]) for i in rows[:limit]) + (", …" if len(rows) > limit else "")
    return f"seed{'s' if len(rows) > 1 else ''} {shown} ({len(rows)} of {len(seeds)})"


class _FirstNonFinite(Exception):
    def __init__(self, where: str):
        self.where = where


class _CheckedModel:
    """The model with each map's input and output checked; stops at the first non-finite value."""

    def __init__(self, model):
        self._model, self._calls = model, 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._model, name)
        if name not in MAPS or not callable(attribute):
            return attribute

        def checked(x, *times, **kwargs):
            self._calls += 1
            where = f"model evaluation {self._calls} ({name} at σ = {_sigma(times)})"
            if not torch.isfinite(x).all():
                raise _FirstNonFinite(f"the sampler's input to {where}")
            out = attribute(x, *times, **kwargs)
            if not torch.isfinite(out).all():
                raise _FirstNonFinite(f"the output of {where}")
            return out

        return checked


def _sigma(times: tuple) -> str:
    t = times[0] if times else None
    return f"{float(t.reshape(-1)[0]):.4g}" if isinstance(t, torch.Tensor) and t.numel() else "?"


def first_non_finite(sample, model) -> str:
    """Where ``sample(checked model)`` first meets a non-finite value, in words."""
    try:
        with torch.no_grad():
            sample(_CheckedModel(model))
    except _FirstNonFinite as found:
        return f"the first non-finite value is in {found.where}"
    return "every model evaluation was finite: the sampler's own arithmetic overflowed"


def non_finite_parameters(model) -> str:
    """`` the network holds N non-finite parameter values (first in KEY)``, or "" (none, or no network)."""
    net = getattr(model, "net", None)
    if not isinstance(net, torch.nn.Module):
        return ""
    bad = {name: int((~torch.isfinite(p)).sum()) for name, p in net.state_dict().items()
           if p.is_floating_point() and not torch.isfinite(p).all()}
    if not bad:
        return ""
    return f"; the network holds {sum(bad.values()):,} non-finite parameter value(s) (first in {next(iter(bad))})"


def check_samples(images: torch.Tensor, seeds: Sequence[int], desc: str, locate) -> None:
    """Raise :class:`NonFiniteSamples` naming the row, the seeds and the first bad step (``locate()``)."""
    check_finite_rows(finite_by_row(images), seeds, desc, locate)


def check_finite_rows(finite: torch.Tensor, seeds: Sequence[int], desc: str, locate) -> None:
    """:func:`check_samples` of a batch whose :func:`finite_by_row` flags are ``finite``."""
    rows = _false_rows(finite)
    if rows:
        raise NonFiniteSamples(f"{desc}: non-finite samples for {show_seeds(seeds, rows)}; {locate()}; nothing was scored")


def check_features(features: Mapping[str, torch.Tensor], seeds: Sequence[int], desc: str, extractor: str) -> None:
    """Raise :class:`NonFiniteSamples` when an extractor turned finite images into non-finite features."""
    for layer, values in features.items():
        rows = non_finite_rows(values)
        if rows:
            raise NonFiniteSamples(f"{desc}: the {extractor} extractor's {layer!r} features are non-finite for "
                                   f"{show_seeds(seeds, rows)} (broken extractor weights?); nothing was scored")
