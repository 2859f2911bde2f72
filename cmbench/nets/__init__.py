"""Network architectures, looked up by name so that a checkpoint can say which one it holds.

``build_network(arch, kwargs)`` checks the keyword arguments against the constructor's
signature before calling it, so a checkpoint or suite with a misspelt argument fails with a
message naming the architecture, the argument and the accepted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from cmbench.nets.adm_unet import ADMUNet
from cmbench.nets.dhariwal_unet import DhariwalUNet
from cmbench.nets.ncsnpp import NCSNpp
from cmbench.nets.small_unet import SmallUNet
from cmbench.nets.song_unet import SongUNet
from cmbench.nets.toy_classifier import ToyClassifier
from cmbench.nets.toy_mlp import ToyMLP

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "adm_unet": ADMUNet,
    "dhariwal_unet": DhariwalUNet,
    "ncsnpp": NCSNpp,
    "small_unet": SmallUNet,
    "song_unet": SongUNet,
    "toy_classifier": ToyClassifier,
    "toy_mlp": ToyMLP,
}


def accepted_arguments(arch: str) -> tuple[list[str], list[str]]:
    """(all keyword argument names, the required ones) of architecture ``arch``'s constructor."""
    params = list(inspect.signature(_architecture(arch).__init__).parameters.values())[1:]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in params if p.name in names and p.default is p.empty]
    return names, required


def build_network(arch: str, kwargs: Mapping) -> nn.Module:
    """A freshly initialised ``ARCHITECTURES[arch](**kwargs)``, with the arguments checked first."""
    names, required = accepted_arguments(arch)
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"network {arch!r}: arguments must be a mapping, got {type(kwargs).__name__}")
    unknown = sorted(k for k in kwargs if k not in names)
    missing = [k for k in required if k not in kwargs]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown argument(s) {', '.join(map(repr, unknown))}")
        if missing:
            problems.append(f"missing required argument(s) {', '.join(map(repr, missing))}")
        raise ValueError(
            f"network {arch!r}: {'; '.join(problems)}; accepted arguments: {', '.join(names)} "
            f"(required: {', '.join(required) or 'none'})"
        )
    return ARCHITECTURES[arch](**dict(kwargs))


def _architecture(arch: str) -> type[nn.Module]:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown network architecture {arch!r}; accepted: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


__all__ = ["ARCHITECTURES", "SmallUNet", "accepted_arguments", "build_network"]
