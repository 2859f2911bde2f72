"""YAML as cmbench reads it from users: plain data, no aliases, no duplicate keys.

PyYAML's safe loader accepts two things a suite file should never contain: aliases (``*name``),
whose expansion lets a kilobyte file describe gigabytes of runs ("billion laughs"), and a key
given twice in one mapping, whose second value silently replaces the first. Both are refused with
the line and column where they occur.
"""

from __future__ import annotations

from typing import Any

import yaml


class StrictYAMLError(yaml.YAMLError):
    """A YAML feature cmbench refuses, with where it occurs."""


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise StrictYAMLError(f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}: "
                                  f"alias *{event.anchor} is not accepted; write the value out in full "
                                  "(aliases can expand a small file into a huge one)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise StrictYAMLError(f"line {line}: key {key!r} is given twice in one mapping (first on line "
                                      f"{seen[key]}); keep one")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse ``text`` as YAML data, refusing aliases, duplicate keys and nesting too deep for the
    parser's recursion (:class:`StrictYAMLError`)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise StrictYAMLError("lists or mappings are nested too deeply to read; a suite needs a few levels") from None


def describe_yaml_error(error: Exception) -> str:
    """One line for a YAML error: ``line 3, column 7: <problem>``."""
    if isinstance(error, StrictYAMLError):
        return str(error)
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(error).split())
