"""Several feature networks over the same images: the suite's extractor, plus the networks that
metrics such as FD_DINOv2 and CMMD name for their own layers (``dinov2``, ``clip``).

A :class:`CombinedExtractor` answers for the union of its networks' layers; ``extract`` runs each
network once on the images, for the layers it owns. Its ``identity`` is the main network's plus
``layer_extractors`` (layer → the identity of the network that makes it), which reference
statistics are checked against layer by layer; its ``weights_sha256`` hashes all of them, so a
row's fingerprint changes when any of the networks does.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .base import FeatureExtractor


class CombinedExtractor(FeatureExtractor):
    def __init__(self, main: FeatureExtractor, others: list[FeatureExtractor]):
        self.main, self.others = main, list(others)
        self.name = main.name
        owners: dict[str, FeatureExtractor] = {layer: main for layer in main.layers}
        for other in self.others:
            for layer in other.layers:
                owners.setdefault(layer, other)
        self.owners = owners
        self.layers = tuple(owners)

    @property
    def identity(self) -> dict:
        extra = {layer: owner.identity for layer, owner in self.owners.items() if owner is not self.main}
        return {**self.main.identity, "layer_extractors": extra}

    @property
    def weights_sha256(self) -> str:
        text = json.dumps(self.identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def to(self, device: torch.device | str) -> "CombinedExtractor":
        for network in (self.main, *self.others):
            network.to(device)
        return self

    def extract(self, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        return self._each_network(images, layers, lambda network, mine: network.extract(images, mine))

    def extract_on_device(self, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        return self._each_network(images, layers, lambda network, mine: network.extract_on_device(images, mine))

    def _each_network(self, images: torch.Tensor, layers, extract) -> dict[str, torch.Tensor]:
        """``extract(network, its layers)`` for each network that owns some of ``layers``, merged."""
        self.check_layers(layers)
        found: dict[str, torch.Tensor] = {}
        for network in (self.main, *self.others):
            mine = [layer for layer in layers if self.owners[layer] is network]
            if mine:
                found.update(extract(network, mine))
        return {layer: found[layer] for layer in layers}
