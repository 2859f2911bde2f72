"""Feature extractor registry. Suites name one under ``features.extractor``.

``toy-classifier`` takes an optional ``checkpoint`` (a native checkpoint path, relative to the
suite file's folder unless absolute); without one it uses the shipped
``cmbench/zoo/toy/checkpoints/classifier.pt``.

``inception-tf`` (TF's 2015-12-05 Inception-v3: ``pool``, ``logits``, ``spatial``) takes an
optional ``weights`` (torch-fidelity's weights file, or a folder holding it; relative to the
suite file's folder unless absolute); without one the file is searched for as
:mod:`cmbench.weights` describes. Either way its sha256 is checked, and a missing file fails
when the extractor is built, before any sampling.

Metrics that name their own network read layers no suite extractor has: FD_DINOv2 the
``dinov2`` layer (DINOv2 ViT-L/14, :mod:`cmbench.features.dinov2`), CMMD the ``clip`` layer
(CLIP ViT-L/14@336, :mod:`cmbench.features.clip`). When a suite's metrics need them, those
networks join the suite's extractor (:class:`~cmbench.features.combined.CombinedExtractor`);
``features.dinov2`` and ``features.clip`` (``{extractor: NAME, weights: PATH}``, both optional)
pick the variant and the weights file. Any of them may also be the suite's ``extractor``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..validate import Checker
from .analytic import MixturePosteriorExtractor, PixelExtractor
from .base import LAYERS, FeatureExtractor
from .clip import CLIPExtractor
from .combined import CombinedExtractor
from .dinov2 import DINOv2Extractor
from .inception import InceptionExtractor
from .toy import ToyClassifierExtractor

INCEPTION_RESIZES = {"inception-tf": "tf1_bilinear", "inception-tf+clean-resize": "pil_bicubic"}
DINOV2_RESIZES = {"dinov2-vitl14": "torch", "dinov2-vitl14+pil-resize": "pil"}
"""EDM2's two resize modes: torch's bicubic + antialias (its default), PIL's bicubic (dgm-eval's)."""
CLIP_EXTRACTORS = ("clip-vitl14-336",)
METRIC_NETWORKS = {
    "dinov2": (tuple(DINOV2_RESIZES), ("dinov2", "dinov2_patch_mean")),
    "clip": (CLIP_EXTRACTORS, ("clip",)),
}
"""The networks metrics name for their own layers: ``features.<key>`` → (accepted extractors, the
first the default; the layers they make)."""
WEIGHTED = (*INCEPTION_RESIZES, *DINOV2_RESIZES, *CLIP_EXTRACTORS)
EXTRACTORS = ("pixels", "gmm-posterior", "toy-classifier", *WEIGHTED)

__all__ = ["EXTRACTORS", "LAYERS", "FeatureExtractor", "build_extractor", "validate_spec"]


def validate_spec(c: Checker, spec: dict[str, Any], path: str, models: dict) -> None:
    c.keys(spec, path, ("extractor",), ("model", "checkpoint", "weights", *METRIC_NETWORKS))
    for key, (names, _) in METRIC_NETWORKS.items():
        if key in spec:
            c.keys(c.mapping(spec[key], f"{path}.{key}"), f"{path}.{key}", (), ("extractor", "weights"))
            if "extractor" in spec[key]:
                c.choice(spec[key]["extractor"], f"{path}.{key}.extractor", names)
            if "weights" in spec[key]:
                c.string(spec[key]["weights"], f"{path}.{key}.weights")
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
        if name not in WEIGHTED:
            raise c.fail(f"{path}.weights", f"only the {', '.join(WEIGHTED)} extractors take weights (a path to their "
                                            "weights file)")
        c.string(spec["weights"], f"{path}.weights")


def build_extractor(
    spec: dict[str, Any], models: dict[str, Any], *, base_dir: Path | None = None, layers: tuple[str, ...] = ()
) -> FeatureExtractor:
    """The extractor a validated ``spec`` names, joined by the networks that make those of ``layers``
    it lacks (``dinov2``, ``clip``: :data:`METRIC_NETWORKS`, configured by ``spec[key]``).

    ``models`` maps names to built adapters (only the one the extractor names is used);
    ``base_dir`` (the suite file's folder) anchors a relative ``checkpoint`` or ``weights`` path.
    """
    main = _single_extractor(spec, models, base_dir, "features")
    others = []
    for key, (names, made) in METRIC_NETWORKS.items():
        if set(layers) & (set(made) - set(main.layers)):
            sub = {"extractor": names[0], **spec.get(key, {})}
            others.append(_single_extractor(sub, models, base_dir, f"features.{key}"))
    return CombinedExtractor(main, others) if others else main


def _single_extractor(spec: dict[str, Any], models: dict[str, Any], base_dir: Path | None, where: str) -> FeatureExtractor:
    name = spec["extractor"]
    if name == "pixels":
        return PixelExtractor()
    if name == "toy-classifier":
        return ToyClassifierExtractor(_classifier_checkpoint(spec, base_dir))
    if name == "gmm-posterior":
        return MixturePosteriorExtractor(models[spec["model"]].mixture)
    weights = _relative_to(spec["weights"], base_dir) if "weights" in spec else None
    try:
        if name in INCEPTION_RESIZES:
            return InceptionExtractor(weights, resize=INCEPTION_RESIZES[name])
        if name in DINOV2_RESIZES:
            return DINOv2Extractor(weights, resize=DINOV2_RESIZES[name])
        return CLIPExtractor(weights)
    except FileNotFoundError as error:
        if weights is None:
            raise
        raise FileNotFoundError(f"{where}.weights {spec['weights']!r} (here {weights}): {error}") from None


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
