"""Architecture presets of the released checkpoints that are bare state dicts.

A state dict does not say which network it belongs to; a suite names the preset (``arch:``),
which gives the network (a registered cmbench architecture and its constructor arguments) and
the model defaults the adapter needs: image shape, number of classes, and how the network
receives σ (shared/reference/facts.md §1, §3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from cmbench.nets.adm_unet import ADM_PRESETS
from cmbench.nets.edm_presets import EDM_PRESETS

_ARCH_OF_CLASS = {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}
_OPENAI_TIME = {"noise_label_scale": 1000.0}  # openai's nets take 250·ln σ = 1000 · ln(σ)/4


@dataclass(frozen=True)
class OfficialArch:
    """A preset: ``build_network(arch, kwargs)``, the model defaults, and a key prefix to strip."""

    name: str
    arch: str
    kwargs: dict[str, Any]
    model_options: dict[str, Any]
    source: str
    strip_prefix: str = ""
    notes: list[str] = field(default_factory=list)


def _adm(name: str, image_size: int, label_dim: int, source: str) -> OfficialArch:
    return OfficialArch(name, "adm_unet", ADM_PRESETS[name],
                        {"image_shape": [3, image_size, image_size], "label_dim": label_dim, **_OPENAI_TIME}, source)


def _edm(name: str, source: str, strip_prefix: str = "") -> OfficialArch:
    class_name, kwargs = EDM_PRESETS[name]
    shape = [kwargs["in_channels"], kwargs["img_resolution"], kwargs["img_resolution"]]
    return OfficialArch(name, _ARCH_OF_CLASS[class_name], kwargs,
                        {"image_shape": shape, "label_dim": kwargs.get("label_dim", 0)}, source, strip_prefix)


def _dmd2_imagenet64() -> OfficialArch:
    """DMD2's ImageNet-64 generator (tianweiy/DMD2): ``pytorch_model.bin`` is the state dict of the
    whole ``EDMPrecond`` (keys ``model.``), which ``demo/imagenet_example.py`` loads strictly into
    ``EDMPrecond(**get_imagenet_config())``: EDM's ImageNet ADM net (``main/edm/edm_network.py``
    ``get_imagenet_edm_config``: augment_dim 0, 192 channels, mult 1,2,3,4, 3 blocks, attention at
    32,16,8) with dropout 0 (no effect when sampling). Its preconditioning is EDM's."""
    class_name, kwargs = EDM_PRESETS["edm-imagenet-64x64-cond-adm"]
    shape = [kwargs["in_channels"], kwargs["img_resolution"], kwargs["img_resolution"]]
    return OfficialArch("dmd2-imagenet-64x64-cond", _ARCH_OF_CLASS[class_name], {**kwargs, "dropout": 0.0},
                        {"image_shape": shape, "label_dim": kwargs["label_dim"], "preconditioning": "edm"},
                        "tianweiy/DMD2: pytorch_model.bin (state dict of the whole EDMPrecond generator)", "model.")


OFFICIAL_ARCHS: dict[str, OfficialArch] = {
    a.name: a
    for a in (
        _adm("adm-imagenet64", 64, 1000, "openai/consistency_models: edm/cd_l2/cd_lpips/ct _imagenet64 .pt"),
        _adm("adm-lsun256", 256, 0, "openai/consistency_models: edm/cd_l2/cd_lpips/ct _bedroom256 and _cat256 .pt"),
        _adm("adm-imagenet64-ctm", 64, 1000, "sony/ctm: ema_0.999_049000.pt (ImageNet-64)"),
        *(_edm(name, "NVlabs/edm network (state dict of the preconditioner's .model)")
          for name in EDM_PRESETS if name.startswith("edm-")),
        *(_edm(name, "Kim-Dongjun/ctm-cifar10 (state dict of the whole preconditioner)", strip_prefix="model.")
          for name in EDM_PRESETS if name.startswith("ctm-")),
        _dmd2_imagenet64(),
    )
}


def official_arch(name: str) -> OfficialArch:
    """The preset ``name`` (a deep copy, so callers may not alter the registry)."""
    try:
        return copy.deepcopy(OFFICIAL_ARCHS[name])
    except KeyError:
        raise ValueError(f"unknown architecture preset {name!r}; accepted: {', '.join(OFFICIAL_ARCHS)}") from None
