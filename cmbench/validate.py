"""Small checks for user-written configuration, each raising :class:`ConfigError` with the file,
the key path and what is accepted."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .names import name_problem


class ConfigError(ValueError):
    """A configuration value is wrong. The message names the file, the key path and what is accepted."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path = source, path
        shown = path if path.isprintable() else path.encode("unicode_escape").decode("ascii")  # one line
        super().__init__(f"{source}: {shown or '<top level>'}: {message}")


class Checker:
    """Validation helpers bound to one source file, so every error names it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.source, path, message)

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping (key: value), got {_kind(value)}")
        return value

    def keys(self, value: Mapping[str, Any], path: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        required, optional = list(required), list(optional)
        accepted = ", ".join(required + optional)
        for key in value:
            if key not in required and key not in optional:
                raise self.fail(_join(path, str(key)), f"unknown key; accepted keys here: {accepted}")
        for key in required:
            if key not in value:
                raise self.fail(_join(path, key), f"missing required key; required here: {', '.join(required)}")

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"expected an integer ≥ {minimum}, got {value}")
        return value

    def number(self, value: Any, path: str, minimum: float | None = None, exclusive: bool = False) -> float:
        """A finite number (NaN and ±inf are refused: they would only become NaN results)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, got {value}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise self.fail(path, f"expected a number {'>' if exclusive else '≥'} {minimum}, got {value}")
        return float(value)

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        return value

    def name(self, value: Any, path: str) -> str:
        """A name that becomes part of file names (:mod:`cmbench.names`)."""
        problem = name_problem(value)
        if problem:
            raise self.fail(path, problem)
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_kind(value)}")
        return value

    def choice(self, value: Any, path: str, choices: Iterable[str]) -> str:
        choices = list(choices)
        if value not in choices:
            raise self.fail(path, f"{value!r} is not accepted; accepted: {', '.join(choices)}")
        return value

    def sequence(self, value: Any, path: str, nonempty: bool = True) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        if nonempty and not value:
            raise self.fail(path, "expected a non-empty list")
        return list(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"[:80]
