"""Model zoos shipped with cmbench. ``toy`` is the embedded default: every family on 8×8 digits.

Suites name a shipped checkpoint as ``zoo:<zoo>/<model>`` (e.g. ``zoo:toy/edm``); the zoo's
``manifest.json`` records each file's sha256, which loading verifies.
"""

from __future__ import annotations

import json
from pathlib import Path

ZOO_PREFIX = "zoo:"
ZOO_ROOT = Path(__file__).parent


def zoo_manifest(zoo: str) -> dict:
    path = ZOO_ROOT / zoo / "checkpoints" / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"zoo {zoo!r} has no manifest at {path}; train it with `cmbench zoo train-{zoo}`")
    return json.loads(path.read_text())


def resolve_checkpoint(value: str, base_dir: Path) -> tuple[Path, str | None]:
    """The file a suite's ``checkpoint`` names, and the sha256 a zoo manifest expects (else None).

    ``zoo:toy/edm`` is the shipped toy EDM; any other value is a path, relative to ``base_dir``.
    """
    if not value.startswith(ZOO_PREFIX):
        path = Path(value).expanduser()
        return (path if path.is_absolute() else base_dir / path), None
    zoo, _, name = value[len(ZOO_PREFIX):].partition("/")
    models = zoo_manifest(zoo)["models"]
    if name not in models:
        raise ValueError(f"checkpoint {value!r}: zoo {zoo!r} has no model {name!r}; it has: {', '.join(models)}")
    entry = models[name]
    return ZOO_ROOT / zoo / "checkpoints" / entry["file"], entry["sha256"]
