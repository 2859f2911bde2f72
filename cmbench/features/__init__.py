"""Feature extractor registry. Suites name one under ``features.extractor``.

``toy-classifier`` takes an optional ``checkpoint`` (a native checkpoint path, relative to the
suite file's folder unless absolute); without one it uses the shipped
``cmbench/zoo/toy/checkpoints/classifier.pt``.

``inception-tf`` (TF's 2015-12-05 Inception-v3: ``pool``, ``logits``, ``spatial``) takes an
optional ``weights`` (torch-fidelity's weights file, or a folder holding it; relative to the
suite file's folder unless absolute); without one the file is searched for as
:mod:`cmbench.weights` describes. Either way its sha256 is checked, and a missing file fails
when the extractor is built, before any sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..validate import Checker
from .analytic import MixturePosteriorExtractor, PixelExtractor
from .base import LAYERS, FeatureExtractor
from .inception import InceptionExtractor
from .toy import ToyClassifierExtractor

EXTRACTORS = ("pixels", "gmm-posterior", "toy-classifier", "inception-tf", "inception-tf+clean-resize")
INCEPTION_RESIZES = {"inception-tf": "tf1_bilinear", "inception-tf+clean-resize": "pil_bicubic"}

__all__ = ["EXTRACTORS", "LAYERS", "FeatureExtractor", "build_extractor", "validate_spec"]


def validate_spec(c: Checker, spec: dict[str, Any], path: str, models: dict) -> None:
    c.keys(spec, path, ("extractor",), ("model", "checkpoint", "weights"))
    name = c.choice(spec["extractor"], f"{path}.extractor", EXTRACTORS)
    if name == "gmm-posterior":
        gmms = [n for n, m in models.items() if m.family == "gmm"]
        if "model" not in spec:
            raise c.fail(f"{path}.model", f"gmm-posterior needs the analytic model whose posterior it uses; one of: {', '.join(gmms) or 'none defined'}")
        c.choice(spec["model"], f"{path}.model", gmms)
    elif "model" in spec:
        raise c.fail(f"{path}.model", "only the gmm-posterior extractor takes a model")
    if "checkpoint" in spec:
        if name != "toy-classifier":
            raise c.fail(f"{path}.checkpoint", "only the toy-classifier extractor takes a checkpoint")
        c.string(spec["checkpoint"], f"{path}.checkpoint")
    if "weights" in spec:
        if name not in INCEPTION_RESIZES:
            raise c.fail(f"{path}.weights", "only the inception-tf extractor takes weights (a path to its weights file)")
        c.string(spec["weights"], f"{path}.weights")


def build_extractor(
    spec: dict[str, Any], models: dict[str, Any], *, base_dir: Path | None = None
) -> FeatureExtractor:
    """The extractor a validated ``spec`` names.

    ``models`` maps names to built adapters (only the one the extractor names is used);
    ``base_dir`` (the suite file's folder) anchors a relative ``checkpoint`` or ``weights`` path.
    """
    name = spec["extractor"]
    if name == "pixels":
        return PixelExtractor()
    if name == "toy-classifier":
        return ToyClassifierExtractor(_classifier_checkpoint(spec, base_dir))
    if name in INCEPTION_RESIZES:
        resize = INCEPTION_RESIZES[name]
        if "weights" not in spec:
            return InceptionExtractor(resize=resize)
        path = _relative_to(spec["weights"], base_dir)
        try:
            return InceptionExtractor(path, resize=resize)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"features.weights {spec['weights']!r} (here {path}): {error}") from None
    return MixturePosteriorExtractor(models[spec["model"]].mixture)


def _classifier_checkpoint(spec: dict[str, Any], base_dir: Path | None) -> Path:
    if "checkpoint" not in spec:
        from ..zoo.toy.classifier import DEFAULT_CLASSIFIER

        return DEFAULT_CLASSIFIER
    given = Path(spec["checkpoint"]).expanduser()
    path = given if given.is_absolute() or base_dir is None else Path(base_dir) / given
    if not path.is_file():
        raise FileNotFoundError(
            f"features.checkpoint: toy-classifier checkpoint {path} does not exist"
            + (f" ({given} is resolved against the suite's folder {base_dir})" if path != given else "")
        )
    return path


def _relative_to(given: str, base_dir: Path | None) -> Path:
    path = Path(given).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path
