"""Scoring images made elsewhere: ``cmbench score SAMPLES ... --profile P`` (and :func:`cmbench.api.score`).

The sample sets become a suite with one ``samples`` model and one ``stored`` run per set, scored
by the ordinary run (:func:`cmbench.runner.run_suite`): same metrics, standard errors, results,
report and ``compare`` as sampled rows. The scoring comes from profiles (``--profile``, one or
several) or from a suite file (``--suite``: its extractor, metrics, conventions, reference and
uncertainty, so samples saved by that suite's run are scored exactly as the run scored them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .names import name_problem
from .stats import open_images
from .suite import Suite, apply_override, load_suite, parse_suite
from .yaml_input import load_yaml

# What a suite contributes to scoring others' images; everything else describes its own models.
SCORING_KEYS = ("features", "metrics", "metric_options", "reference", "profile", "profiles", "quantisation",
                "uncertainty", "regression", "batch_size", "device", "grid_images", "seed_start", "checkpoints_dir")


def sample_sets(items: list[str]) -> dict[str, Path]:
    """``PATH`` or ``NAME=PATH`` arguments → {row model name: path}; a bare path is named after
    its file or folder (``samples_50000x64x64x3.npz`` → ``samples_50000x64x64x3``)."""
    sets: dict[str, Path] = {}
    for item in items:
        name, given = _named(item)
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"samples {given}: no such file or folder; give an .npz (arr_0 NHWC images) or an "
                                    "image folder, optionally as NAME=PATH")
        name = name or re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem if path.is_file() else path.name).strip("_") or "samples"
        problem = name_problem(name) or ("'.' is not accepted in a sample set's name" if "." in name else None)
        if problem:
            raise ValueError(f"samples {item}: {problem}")
        if name in sets:
            raise ValueError(f"two sample sets are named {name!r}; name them apart with NAME=PATH")
        sets[name] = path.resolve()
    if not sets:
        raise ValueError("give at least one sample set: an .npz with arr_0 or an image folder")
    return sets


def common_count(sets: dict[str, Path], quantisation: str | None, limit: int | None) -> int:
    """How many images each set is scored on: ``limit``, else the sets' shared size."""
    counts = {name: open_images(str(path), quantisation=quantisation).count for name, path in sets.items()}
    if limit is not None:
        short = {name: n for name, n in counts.items() if n < limit}
        if short:
            raise ValueError(f"--limit {limit}: sample set(s) hold fewer images: "
                             + ", ".join(f"{name} ({n})" for name, n in short.items()))
        return limit
    if len(set(counts.values())) > 1:
        raise ValueError("the sample sets differ in size (" + ", ".join(f"{name}: {n}" for name, n in counts.items())
                         + "); metrics depend on the sample count, so pass --limit N to score the first N of each")
    return next(iter(counts.values()))


def score_suite(
    samples: list[str],
    *,
    profiles: list[str] = (),
    suite: str | Path | None = None,  # a suite file or bundled suite name
    reference: str | list[str] | None = None,
    metrics: list[str] = (),
    nfe: int = 0,
    limit: int | None = None,
    quantisation: str | None = None,
    name: str = "score",
    overrides: list[str] = (),
) -> Suite:
    """The suite that scores ``samples`` (see the module docstring). ``nfe`` is what the images
    were made with, as the caller states it (0: not stated); ``quantisation`` turns float images
    of an .npz into uint8; ``reference`` is a path, or ``PROFILE=PATH`` entries, one per profile."""
    sets = sample_sets(list(samples))
    if bool(profiles) == bool(suite):
        raise ValueError("give the scoring as --profile NAME (repeatable; `cmbench profiles` lists them) or as "
                         "--suite FILE (its features, metrics and reference), one of the two")
    if suite is not None:
        from .cli import resolve_suite

        suite = resolve_suite(str(suite))
        base = load_suite(suite)  # validated as it stands, so its own errors come first
        raw = {k: v for k, v in load_yaml(suite.read_text(encoding="utf-8")).items() if k in SCORING_KEYS}
        source, base_dir = base.source, base.base_dir
    else:
        raw = {"profile": profiles[0]} if len(profiles) == 1 else {"profiles": {p: {} for p in profiles}}
        source, base_dir = "cmbench score", Path.cwd()
    for item in [reference] if isinstance(reference, str) else list(reference or ()):
        _set_reference(raw, item, profiles)
    if metrics:
        raw["metrics"] = list(metrics)
    raw.update(
        name=name,
        num_samples=common_count(sets, quantisation, limit),
        models={key: {"family": "samples", "path": str(path), **({"quantisation": quantisation} if quantisation else {})}
                for key, path in sets.items()},
        runs=[{"model": key, "sampler": "stored", "nfe": [nfe]} for key in sets],
    )
    for item in overrides:
        apply_override(raw, item, source)
    return parse_suite(raw, source, base_dir)


def _set_reference(raw: dict[str, Any], item: str, profiles: list[str]) -> None:
    """``PATH`` (every profile's reference) or ``PROFILE=PATH`` (that profile's, when several
    profiles need files of different formats, e.g. ``adm=VIRTUAL_imagenet64_labeled.npz``)."""
    name, given = _named(item)
    entry = {"path": str(Path(given).expanduser().resolve())}
    if not name:
        raw["reference"] = entry
    elif name not in profiles:
        raise ValueError(f"--reference {item}: {name!r} is not one of the profiles given ({', '.join(profiles) or 'none'})")
    elif "profiles" in raw:
        raw["profiles"][name] = {"reference": entry}
    else:
        raw["reference"] = entry


def _named(item: str) -> tuple[str, str]:
    """``NAME=PATH`` → (NAME, PATH); a bare path (or an existing file whose name holds '=') → ("", PATH)."""
    if "=" in item and not Path(item).exists():
        name, _, path = item.partition("=")
        return name, path
    return "", item
