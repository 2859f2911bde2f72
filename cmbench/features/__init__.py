"""Feature extractor registry. Suites name one under ``features.extractor``."""

from __future__ import annotations

from typing import Any

from ..validate import Checker
from .analytic import MixturePosteriorExtractor, PixelExtractor
from .base import LAYERS, FeatureExtractor

EXTRACTORS = ("pixels", "gmm-posterior")

__all__ = ["EXTRACTORS", "LAYERS", "FeatureExtractor", "build_extractor", "validate_spec"]


def validate_spec(c: Checker, spec: dict[str, Any], path: str, models: dict) -> None:
    c.keys(spec, path, ("extractor",), ("model",))
    name = c.choice(spec["extractor"], f"{path}.extractor", EXTRACTORS)
    if name == "gmm-posterior":
        gmms = [n for n, m in models.items() if m.family == "gmm"]
        if "model" not in spec:
            raise c.fail(f"{path}.model", f"gmm-posterior needs the analytic model whose posterior it uses; one of: {', '.join(gmms) or 'none defined'}")
        c.choice(spec["model"], f"{path}.model", gmms)
    elif "model" in spec:
        raise c.fail(f"{path}.model", "only the gmm-posterior extractor takes a model")


def build_extractor(spec: dict[str, Any], models: dict[str, Any]) -> FeatureExtractor:
    """``models`` maps names to built adapters (only the one the extractor names is used)."""
    if spec["extractor"] == "pixels":
        return PixelExtractor()
    return MixturePosteriorExtractor(models[spec["model"]].mixture)
