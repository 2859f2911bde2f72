"""The AlexNet and VGG16 convolution stacks LPIPS measures with, laid out as torchvision's ``features``.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", Sec. 3 and Eq. 1) compares images through five ReLU activations of an ImageNet
classifier: AlexNet's relu1..relu5 (Krizhevsky 2014, torchvision's "one weird trick" variant) or
VGG16's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (Simonyan & Zisserman 2015, configuration D).

:class:`LPIPSTrunk` holds the stack as ``features``, an ``nn.Sequential`` whose indices are
torchvision's, so the ``features.*`` entries of torchvision's weight files
(``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) load strictly
(:func:`load_torchvision_features`; their ``classifier.*`` entries are not part of the trunk).
The forward pass stops at the last tapped ReLU: AlexNet's final max pool (index 12) and VGG16's
(index 30) are in the stack, as in torchvision, but never run.

:data:`MIN_IMAGE_SIZE` is the smallest height (and width) for which every tapped activation is
at least 1×1: AlexNet's conv1 (11×11, stride 4, padding 2) and two 3×3 stride-2 max pools need
31 pixels (31 → 7 → 3 → 1); VGG16's four 2×2 max pools before relu5_3 need 16 (16 → 8 → 4 →
2 → 1). One pixel less and a max pool has no output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class TrunkSpec:
    """One LPIPS trunk: its tapped layers (indices into ``features``), their names and channels."""

    name: str
    taps: tuple[int, ...]
    tap_names: tuple[str, ...]
    channels: tuple[int, ...]
    min_image_size: int


TRUNKS: dict[str, TrunkSpec] = {
    "alex": TrunkSpec(
        "alexnet", (1, 4, 7, 9, 11), ("relu1", "relu2", "relu3", "relu4", "relu5"), (64, 192, 384, 256, 256), 31
    ),
    "vgg": TrunkSpec(
        "vgg16", (3, 8, 15, 22, 29), ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), (64, 128, 256, 512, 512),
        16,
    ),
}

MIN_IMAGE_SIZE: dict[str, int] = {net: spec.min_image_size for net, spec in TRUNKS.items()}

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""torchvision's ``cfgs["D"]``: a number is a 3×3 convolution (padding 1) and a ReLU; "M" a 2×2 max pool."""


def alexnet_features() -> nn.Sequential:
    """torchvision's ``AlexNet().features`` (13 layers; convolutions at 0, 3, 6, 8, 10)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (31 layers, no batch norm)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = item
    return nn.Sequential(*layers)


FEATURES = {"alex": alexnet_features, "vgg": vgg16_features}


class LPIPSTrunk(nn.Module):
    """``features`` (torchvision's layout) returning the five tapped ReLU activations of an image batch."""

    def __init__(self, net: str):
        super().__init__()
        self.spec = trunk_spec(net)
        self.features = FEATURES[net]()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tapped = []
        for index, layer in enumerate(self.features[: self.spec.taps[-1] + 1]):
            x = layer(x)
            if index in self.spec.taps:
                tapped.append(x)
        return tapped


def trunk_spec(net: str) -> TrunkSpec:
    """The :class:`TrunkSpec` of ``net`` ("alex" or "vgg")."""
    try:
        return TRUNKS[net]
    except KeyError:
        raise ValueError(f"unknown LPIPS network {net!r}; accepted: {', '.join(map(repr, TRUNKS))}") from None


def load_torchvision_features(trunk: LPIPSTrunk, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load the ``features.*`` entries of a torchvision state dict into ``trunk``, strictly.

    ``classifier.*`` entries are skipped (the trunk has no classifier); any other key, a missing
    ``features.*`` key or a shape that differs is a ValueError naming ``source`` and the keys.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{source}: expected a torchvision state dict (a mapping of names to tensors), got {type(state).__name__}"
        )
    wanted = trunk.state_dict()
    features = {key: value for key, value in state.items() if key.startswith("features.")}
    missing = sorted(set(wanted) - set(features))
    unexpected = sorted(key for key in state if key not in wanted and not key.startswith("classifier."))
    if missing or unexpected:
        raise ValueError(
            f"{source} is not a torchvision {trunk.spec.name} state dict: "
            + "; ".join(
                part
                for part in (
                    f"missing {_listing(missing)}" if missing else "",
                    f"unexpected {_listing(unexpected)}" if unexpected else "",
                )
                if part
            )
            + f". Expected the keys {_listing(list(wanted))} (plus classifier.*)"
        )
    wrong = [
        f"{key} {tuple(getattr(features[key], 'shape', ()))} (expected {tuple(wanted[key].shape)})"
        for key in wanted
        if not isinstance(features[key], torch.Tensor) or features[key].shape != wanted[key].shape
    ]
    if wrong:
        raise ValueError(
            f"{source} is not a torchvision {trunk.spec.name} state dict: wrong shapes: {'; '.join(wrong)}"
        )
    trunk.load_state_dict(features, strict=True)


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
