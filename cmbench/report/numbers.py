"""How the report writes numbers: metrics to a precision matched to their standard error, times
per sample in one unit per report, and never a non-finite value as if it were a number.

A metric printed with more digits than its noise allows invites reading differences that are not
there (FID 5.304 against 5.438 when each is ± 1.05). So a metric column gets one number of
decimals for the whole report, chosen so its typical standard error (the median over rows) shows
two significant digits, the usual convention for quoting an uncertainty; every value and se in the
column uses those decimals. Times per sample span orders of magnitude (15 µs for one step, 50 ms
for an ODE), so the report picks one unit for all of them (the largest in which the slowest row
is at least 1) and writes three significant digits without exponents.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MISSING = "—"
"""What a cell shows for a value that is absent, not a number, NaN or infinite."""

SE_SIGNIFICANT_DIGITS = 2
MAX_DECIMALS = 6
TIME_SIGNIFICANT_DIGITS = 3


def is_finite_number(value: Any) -> bool:
    """True for a finite int or float (bools, strings, None, NaN and ±inf are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_standard_error(value: Any) -> bool:
    """True for a usable standard error: a finite number ≥ 0."""
    return is_finite_number(value) and value >= 0


def decimals_for_significant(value: float, digits: int) -> int:
    """Decimals that show ``digits`` significant digits of ``value`` (0 for values ≥ 10^(digits-1)),
    counted after rounding, so 0.0996 at two digits is "0.10", not "0.100"."""
    if value == 0:
        return 0
    rounded = float(f"{abs(value):.{digits - 1}e}")
    return max(0, digits - 1 - math.floor(math.log10(rounded)))


def decimals_for_errors(errors: Iterable[Any], default: int) -> int:
    """The decimals of a metric column: two significant digits of the median positive finite
    standard error, capped at MAX_DECIMALS; ``default`` when there is none."""
    positive = [float(e) for e in errors if is_finite_number(e) and e > 0]
    if not positive:
        return default
    return min(MAX_DECIMALS, decimals_for_significant(statistics.median(positive), SE_SIGNIFICANT_DIGITS))


def format_fixed(value: Any, decimals: int) -> str:
    """``value`` with ``decimals`` decimals; MISSING for anything that is not a finite number."""
    if not is_finite_number(value):
        return MISSING
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text  # no "-0.00"


def format_value_se(value: Any, se: Any, decimals: int) -> str:
    """"value ± se" at ``decimals``; the value alone when the se is not a finite number ≥ 0;
    MISSING when the value is not a finite number."""
    text = format_fixed(value, decimals)
    if text == MISSING or not is_standard_error(se):
        return text
    return f"{text} ± {format_fixed(se, decimals)}"


def format_significant(value: Any, digits: int = TIME_SIGNIFICANT_DIGITS) -> str:
    """``value`` to ``digits`` significant digits in positional notation (no exponent); MISSING for
    anything that is not a finite number."""
    if not is_finite_number(value):
        return MISSING
    return f"{value:.{decimals_for_significant(value, digits)}f}"


def format_general(value: Any, digits: int) -> str:
    """``value`` to ``digits`` significant digits without trailing zeros (80, 24.47, 0.002: a σ
    schedule); MISSING for anything that is not a finite number."""
    return format(value, f".{digits}g") if is_finite_number(value) else MISSING


@dataclass(frozen=True)
class TimeUnit:
    """A unit for times per sample: its symbol and how many of it make a second."""

    symbol: str
    per_second: float

    def format(self, seconds: Any) -> str:
        """``seconds`` in this unit to three significant digits, without the symbol."""
        return format_significant(seconds * self.per_second) if is_finite_number(seconds) else MISSING


TIME_UNITS = (TimeUnit("s", 1.0), TimeUnit("ms", 1e3), TimeUnit("µs", 1e6))


def time_unit_for(seconds: Iterable[Any]) -> TimeUnit:
    """The largest unit in which the largest finite time is at least 1 (µs below that), so every
    time of the report reads in one unit."""
    finite = [float(s) for s in seconds if is_finite_number(s) and s > 0]
    largest = max(finite, default=1.0)
    return next((unit for unit in TIME_UNITS if largest * unit.per_second >= 1), TIME_UNITS[-1])
