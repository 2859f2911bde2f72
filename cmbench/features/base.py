"""Feature extractors: uint8 images in, named feature layers out.

Layer names are shared across extractors so metrics can ask for what they need without
knowing the network:

- ``pool``: one global feature vector per image (Inception pool3, 2048-d; the toy classifier's
  penultimate layer; raw pixels). FID, KID, precision/recall use it.
- ``logits``: class logits (Inception's bias-free 1008-way fc). Inception Score uses it.
- ``spatial``: spatial features for sFID (ADM's mixed_6/conv, first 7 channels).

An extractor declares the layers it has; ``extract`` computes the union of the requested layers
in one pass over the images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

LAYERS = ("pool", "logits", "spatial")


def check_images(images: torch.Tensor) -> None:
    """Extractors take what the generator's quantisation produced: uint8 NCHW images."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"feature extractors take uint8 NCHW images, got {images.dtype} with shape {tuple(images.shape)}")


def check_grey_or_rgb(images: torch.Tensor, name: str) -> None:
    """The image networks take NCHW images with 1 (grey) or 3 (RGB) channels."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{name} takes images with 1 (grey) or 3 (RGB) channels, got shape {tuple(images.shape)}")


def grey_or_rgb(images: torch.Tensor, name: str) -> torch.Tensor:
    """NCHW images with 3 channels: grey ones repeated to RGB (a view), others refused."""
    check_grey_or_rgb(images, name)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FeatureExtractor:
    """Base class. ``identity`` names what produced the features; reference statistics record it."""

    name: str = "?"
    layers: tuple[str, ...] = ()

    @property
    def identity(self) -> dict[str, str]:
        """What makes two feature sets comparable: the extractor's name and a hash of its weights."""
        return {"extractor": self.name, "extractor_sha256": self.weights_sha256}

    @property
    def weights_sha256(self) -> str:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "FeatureExtractor":
        return self

    def check_layers(self, layers: Iterable[str]) -> None:
        missing = sorted(set(layers) - set(self.layers))
        if missing:
            raise ValueError(
                f"feature extractor {self.name!r} has no layer(s) {', '.join(missing)}; "
                f"it has: {', '.join(self.layers)}"
            )

    def extract(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features of uint8 NCHW ``images`` for each requested layer, as float tensors ``[N, ...]``."""
        raise NotImplementedError

    def extract_on_device(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The same features as :meth:`extract`, which may stay on the extractor's device with
        their computation only queued there (the pipeline copies them to the host a batch later,
        :mod:`cmbench.generate`). By default :meth:`extract` itself."""
        return self.extract(images, layers)


class NetworkExtractor(FeatureExtractor):
    """An extractor around one network loaded from a weights file: the file's sha256 is
    ``weights_sha256``, and ``to`` moves the network. Subclasses set ``net`` and ``_sha256`` and
    compute the features on the network's device (``extract_on_device``); ``extract`` brings
    them to the host."""

    net: torch.nn.Module
    _sha256: str
    _device: torch.device = torch.device("cpu")

    @property
    def weights_sha256(self) -> str:
        return self._sha256

    def to(self, device: torch.device | str) -> "NetworkExtractor":
        self._device = torch.device(device)
        self.net.to(self._device)
        return self

    def extract(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return {layer: values.cpu() for layer, values in self.extract_on_device(images, layers).items()}

    def extract_on_device(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
