"""``--set key.path=value``: overrides applied to a raw suite before it is validated; each value
is parsed as YAML, and a path that does not exist names the key."""

from __future__ import annotations

from typing import Any

import yaml

from .validate import ConfigError
from .yaml_input import describe_yaml_error, load_yaml


def apply_override(raw: Any, item: str, source: str) -> None:
    """Set ``a.b.0.c=value`` in the raw suite; the value is parsed as YAML (``nfe=[1,2]``)."""
    if "=" not in item:
        raise ConfigError(source, item, "--set needs key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(source, key, "--set: the key path has an empty part; give key.path=value, e.g. "
                                       "--set runs.0.nfe=[1,2] (names with dots cannot be set this way)")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), source)
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(source, key, f"--set: index {last!r} is not in a list of {len(node)} items")
        node[int(last)] = _override_value(value, key, source)
    elif isinstance(node, dict):
        node[last] = _override_value(value, key, source)
    else:
        raise ConfigError(source, key, "--set: the parent of this key is not a mapping or list")


def _override_value(text: str, key: str, source: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(source, key, f"--set: the value {text!r} is not valid YAML ({describe_yaml_error(err)}); "
                                       "e.g. --set num_samples=500 or --set runs.0.nfe=[1,2]") from None


def _child(node: Any, part: str, path: str, source: str) -> Any:
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise ConfigError(source, path, "--set: no such key or list index")
