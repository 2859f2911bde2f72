"""Regression settings: metric thresholds (:class:`Threshold`), z and where they came from.

Thresholds and z come from a suite's or a baseline file's ``regression:`` block and from the
command line; :func:`resolve_settings` decides which apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..metrics import DIRECTIONS

if TYPE_CHECKING:
    from .sides import Side

DEFAULT_Z = 3.0
THRESHOLD_FORMS = ('a number ≥ 0 (absolute, in the metric\'s units), "N%" (relative to the baseline value), '
                   'a list of one of each, or {absolute: x, relative: y} (y a fraction)')


class CompareError(ValueError):
    """Inputs that cannot be compared (unreadable, no common rows, different protocols): exit status 2."""


@dataclass(frozen=True)
class Threshold:
    """The smallest change that counts: ``absolute`` in the metric's units, ``relative`` as a
    fraction of the baseline value; when both are given the larger applies."""

    absolute: float | None = None
    relative: float | None = None

    def limit(self, baseline: float) -> float:
        return max(self.absolute or 0.0, (self.relative or 0.0) * abs(baseline))

    def merge(self, other: "Threshold", metric: str) -> "Threshold":
        for kind in ("absolute", "relative"):
            if getattr(self, kind) is not None and getattr(other, kind) is not None:
                raise ValueError(f"threshold for {metric}: {kind} value given twice")
        return Threshold(self.absolute if other.absolute is None else other.absolute,
                         self.relative if other.relative is None else other.relative)

    def describe(self) -> str:
        parts = ([f"{self.absolute:g}"] if self.absolute is not None else []) + \
                ([f"{self.relative * 100:g}%"] if self.relative is not None else [])
        return " and ".join(parts) or "0"

    def as_dict(self) -> dict[str, float | None]:
        return {"absolute": self.absolute, "relative": self.relative}


def parse_threshold(metric: str, value: Any) -> Threshold:
    """A threshold from a suite, a baseline file or the command line (see :data:`THRESHOLD_FORMS`)."""
    if metric not in DIRECTIONS:
        raise ValueError(f"no scored metric {metric!r}; accepted: {', '.join(DIRECTIONS)}")
    if isinstance(value, Mapping):
        unknown = set(value) - {"absolute", "relative"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; accepted: absolute, relative")
        parts = [Threshold(absolute=_nonnegative(value["absolute"], metric))] if value.get("absolute") is not None else []
        if value.get("relative") is not None:
            parts.append(Threshold(relative=_nonnegative(value["relative"], metric)))
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"threshold for {metric} is an empty list; accepted: {THRESHOLD_FORMS}")
        parts = [parse_threshold(metric, item) for item in value]
    else:
        parts = [_one_threshold(metric, value)]
    result = Threshold()
    for part in parts:
        result = result.merge(part, metric)
    return result


def _one_threshold(metric: str, value: Any) -> Threshold:
    if not isinstance(value, str):
        return Threshold(absolute=_nonnegative(value, metric))
    text = value.strip()
    relative = text.endswith("%")
    try:
        number = float(text[:-1] if relative else text)
    except ValueError:
        raise ValueError(f"threshold for {metric}: {value!r} is not a number; accepted: {THRESHOLD_FORMS}") from None
    number = _nonnegative(number, metric)
    return Threshold(relative=number / 100.0) if relative else Threshold(absolute=number)


def _nonnegative(value: Any, metric: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold for {metric}: expected a number ≥ 0, got {value!r}; accepted: {THRESHOLD_FORMS}")
    return float(value)


def parse_threshold_option(text: str) -> tuple[str, Threshold]:
    """``--threshold fid=0.5`` or ``--threshold fid=2%``."""
    metric, sep, value = text.partition("=")
    if not sep or not metric.strip() or not value.strip():
        raise ValueError(f"--threshold {text!r}: expected METRIC=VALUE, e.g. fid=0.5 or fid=2%")
    return metric.strip(), parse_threshold(metric.strip(), value.strip())


def parse_regression_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised ``{z, thresholds: {metric: {absolute, relative}}}`` of a suite's
    ``regression:`` block or a baseline file's; raises ValueError naming the key."""
    unknown = set(raw) - {"z", "thresholds"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key; accepted keys here: z, thresholds")
    z = raw.get("z", DEFAULT_Z)
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not z > 0:
        raise ValueError(f"z: expected a number > 0 (standard errors a change must exceed), got {z!r}")
    thresholds = raw.get("thresholds") or {}
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"thresholds: expected a mapping metric: threshold, got {type(thresholds).__name__}")
    parsed = {}
    for metric, value in thresholds.items():
        try:
            parsed[str(metric)] = parse_threshold(str(metric), value).as_dict()
        except ValueError as err:
            raise ValueError(f"thresholds.{metric}: {err}") from None
    return {"z": float(z), "thresholds": parsed}


@dataclass(frozen=True)
class Settings:
    z: float = DEFAULT_Z
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    source: str = "defaults"

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, Threshold())


def resolve_settings(new: "Side", baseline: "Side", *, z: float | None = None,
                     thresholds: Mapping[str, Threshold] | None = None) -> Settings:
    """z and thresholds: the command line's, over the new side's suite (its ``regression:``
    block), else the baseline's, else z = 3 and no thresholds."""
    spec, source = {}, "defaults"
    for side, name in ((new, "new"), (baseline, "baseline")):
        if side.regression:
            try:
                spec = parse_regression_spec(side.regression)
            except ValueError as err:
                raise CompareError(f"{side.source}: regression.{err}") from None
            source = f"{name} ({side.source})"
            break
    merged = {m: parse_threshold(m, t) for m, t in spec.get("thresholds", {}).items()}
    merged.update(thresholds or {})
    if thresholds or z is not None:
        source = "command line" + (f" over {source}" if source != "defaults" else "")
    z_value = float(z) if z is not None else spec.get("z", DEFAULT_Z)
    if not z_value > 0:
        raise CompareError(f"--z must be > 0, got {z_value}")
    return Settings(z=z_value, thresholds=merged, source=source)
