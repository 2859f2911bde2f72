"""One family adapter around a network, whatever brought the network: a checkpoint file, the
user's builder (an entry point) or a model in memory (the Python API).

``options`` are a suite model entry's model options merged over what the file or preset says:
``image_shape``, ``label_dim``, the σ range and σ_data, ``time_input`` / ``noise_label_scale``
(and the VP constants), ``preconditioning``, for PD ``prediction`` and ``role``, and for a
one-step generator whose network is an EDM denoiser ``sigma_init`` (:mod:`.denoiser_generator`).
``preconditioning: trigflow`` (EDM, CD and CT) reads the network in sCM's TrigFlow form
(:mod:`.trigflow`) whatever the family.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import ModelAdapter, NoiseRange
from .denoiser_generator import DenoiserGeneratorModel
from .networks import ConsistencyModel, CTMModel, EDMModel, GeneratorModel
from .pd import ProgressiveDistillationModel
from .preconditioning import TimeInput
from .trigflow import TRIGFLOW, TRIGFLOW_TIME, TrigFlowModel

DEFAULT_PRECONDITIONING = {"edm": "edm", "cd": "cm", "ct": "cm", "ctm": "edm", "generator": "none"}


def network_adapter(family: str, net: nn.Module, options: dict[str, Any], *, sha256: str | None,
                    precision: str = "fp32", compile: bool = False, channels_last: bool = False) -> ModelAdapter:
    """The ``family`` adapter of ``net`` under ``options`` (which must hold ``image_shape``); how the
    network runs: :data:`~cmbench.models.networks.RUN_OPTIONS`."""
    preconditioning = options.get("preconditioning", DEFAULT_PRECONDITIONING.get(family))
    default_time = {"none": "sigma", TRIGFLOW: TRIGFLOW_TIME}.get(preconditioning, "log_sigma")
    common = dict(
        image_shape=tuple(options["image_shape"]),
        label_dim=int(options.get("label_dim", 0)),
        noise_range=NoiseRange(
            float(options.get("sigma_min", 0.002)), float(options.get("sigma_max", 80.0)),
            float(options.get("sigma_data", 0.5)),
        ),
        checkpoint_sha256=sha256,
        time_input=TimeInput(
            options.get("time_input", default_time), float(options.get("noise_label_scale", 1.0)),
            **{k: options[k] for k in ("beta_d", "beta_min", "M") if k in options},
        ),
        precision=precision,
        compile=compile,
        channels_last=channels_last,
    )
    if preconditioning == TRIGFLOW:
        return TrigFlowModel(net, family=family, **common)
    if family == "edm":
        return EDMModel(net, preconditioning=preconditioning, **common)
    if family in ("cd", "ct"):
        return ConsistencyModel(net, family=family, preconditioning=preconditioning, **common)
    if family == "ctm":
        return CTMModel(net, preconditioning=preconditioning, **common)
    if family == "generator" and preconditioning != "none":  # an EDM denoiser run once (SiD, DMD2)
        return DenoiserGeneratorModel(net, sigma_init=options.get("sigma_init"), preconditioning=preconditioning,
                                      **common)
    if family == "generator":
        return GeneratorModel(net, **common)
    return ProgressiveDistillationModel(net, prediction=options.get("prediction", "v"), role=options["role"], **common)
