"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

The distance between images ``a`` and ``b`` (Eq. 1): both go through an ImageNet trunk
(:mod:`cmbench.nets.lpips_trunks`: AlexNet or VGG16), each of its five tapped activations
``y`` is normalised across channels (``y / (sqrt(sum_c y²) + 1e-10)``), the squared difference
is weighted per channel by a learned non-negative vector ``w_l`` (a 1×1 convolution without
bias, the "lin" heads), averaged over the spatial positions, and summed over the layers.
v0.1 (the lpips package's default and the paper's final version) first maps the input from
[-1, 1] with the ScalingLayer ``(x - shift) / scale``, shift (-0.030, -0.088, -0.188), scale
(0.458, 0.448, 0.450); :data:`LPIPS_CONVENTION` records this for result rows.

Weights (never downloaded here; :func:`find_lpips_weights`): torchvision's ImageNet file for
the trunk and the lpips package's v0.1 heads file, each looked for, in order, at an explicit
path (a file or a folder holding it), in ``$CMBENCH_LPIPS_WEIGHTS`` (a folder), in torch hub's
checkpoint folder (``$TORCH_HOME/hub/checkpoints``, where torch.hub and the lpips package put
the trunk) and in ``~/.cache/cmbench``. Both are opened with ``torch.load(weights_only=True)``:
no pickled code runs.

What the hash checks prove (``check=True``):

- heads: the full sha256 is pinned. The digests are those of ``lpips/weights/v0.1/alex.pth``
  and ``vgg.pth`` in the lpips 0.1.4 wheel (the files of richzhang/PerceptualSimilarity; the
  wheel's RECORD lists the same digests);
- trunk: only torch hub's convention is checked, the 8 hex digits in torchvision's file name
  (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) must begin the file's sha256. The full
  digest is not pinned: 32 bits tell a damaged or different file from the right one, they do not
  prove it is torchvision's.

:func:`lpips_weights_identity` gives both files' full sha256 for result rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoints.hashing import sha256_file
from ..checkpoints.native import load_plain_state
from ..console import progress_bar
from ..features.inception import full_float32
from ..images import from_uint8
from ..nets.lpips_trunks import MIN_IMAGE_SIZE, LPIPSTrunk, load_torchvision_features, trunk_spec
from ..weights import WeightsHashError, search_locations, torch_hub_checkpoints

VERSION = "0.1"
ENV_VAR = "CMBENCH_LPIPS_WEIGHTS"
EPS = 1e-10  # the channel normalisation's epsilon (lpips.normalize_tensor)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
BATCH_SIZE = 32

LPIPS_CONVENTION = {
    "lpips_version": VERSION,
    "lpips_input": "uint8 v -> v / 127.5 - 1 in [-1, 1]; grey repeated to RGB; then (x - shift) / scale, "
    f"shift {list(SHIFT)}, scale {list(SCALE)}",
    "lpips_spatial": "mean over positions of each layer's weighted squared difference, summed over the 5 layers",
}
"""The conventions that change an LPIPS number; the net and the files' hashes come with
:func:`lpips_convention` and :func:`lpips_weights_identity`."""


@dataclass(frozen=True)
class LPIPSFile:
    """A weights file LPIPS needs: its name, where it is published, and how it is checked.

    ``sha256``: the full digest, or None where only ``hash_prefix`` (the file name's) is known.
    """

    what: str
    file_name: str
    published: str
    hash_prefix: str
    sha256: str | None = None
    size: int | None = None  # bytes


BACKBONE_FILES = {
    "alex": LPIPSFile(
        "torchvision's AlexNet ImageNet weights (IMAGENET1K_V1)",
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79",
    ),
    "vgg": LPIPSFile(
        "torchvision's VGG16 ImageNet weights (IMAGENET1K_V1)",
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "397923af",
    ),
}

HEADS_FILES = {
    "alex": LPIPSFile(
        "LPIPS v0.1 linear heads for AlexNet",
        "lpips_v0.1_alex.pth",
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth "
        "(also in the lpips pip package as lpips/weights/v0.1/alex.pth)",
        "df73285e",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        6009,
    ),
    "vgg": LPIPSFile(
        "LPIPS v0.1 linear heads for VGG16",
        "lpips_v0.1_vgg.pth",
        "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth "
        "(also in the lpips pip package as lpips/weights/v0.1/vgg.pth)",
        "a78928a0",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        7289,
    ),
}


@dataclass(frozen=True)
class LPIPSWeights:
    """The two files an LPIPS model is built from."""

    net: str
    backbone: Path
    heads: Path


class LPIPS(nn.Module):
    """LPIPS v0.1 with trunk ``net`` ("alex" or "vgg"); ``forward(a, b)`` gives per-image distances.

    A fresh instance has random weights; :func:`load_lpips` builds one from the weights files.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net = net
        self.trunk = LPIPSTrunk(net)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.trunk.spec.channels)
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.weights: LPIPSWeights | None = None
        self.requires_grad_(False).eval()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances ``[N]`` between float RGB images ``a`` and ``b`` (NCHW, values in [-1, 1])."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS compares two RGB batches of one shape (N, 3, H, W); got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        check_lpips_size(self.net, a.shape[2], a.shape[3])
        distance = 0
        for head, fa, fb in zip(self.heads, self.trunk(self._scaled(a)), self.trunk(self._scaled(b))):
            distance = distance + head((normalise_channels(fa) - normalise_channels(fb)) ** 2).mean(dim=(2, 3))
        return distance.view(-1)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def normalise_channels(features: torch.Tensor) -> torch.Tensor:
    """Each position's feature vector divided by its Euclidean norm (+ 1e-10), as in Eq. 1."""
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + EPS)


def check_lpips_size(net: str, height: int, width: int) -> None:
    """ValueError unless ``height`` × ``width`` images are large enough for every tapped layer of ``net``."""
    spec = trunk_spec(net)
    if min(height, width) < spec.min_image_size:
        raise ValueError(
            f"LPIPS-{net} needs images of at least {spec.min_image_size}×{spec.min_image_size} pixels "
            f"(smaller ones leave {spec.name}'s {spec.tap_names[-1]} with no positions); got {height}×{width}"
            + "".join(f"; LPIPS-{other} accepts down to {n}×{n}" for other, n in _smaller_nets(net, height, width))
        )


def _smaller_nets(net: str, height: int, width: int) -> list[tuple[str, int]]:
    return [(other, size) for other, size in MIN_IMAGE_SIZE.items() if other != net and size <= min(height, width)]


def lpips_distances(
    output: torch.Tensor | np.ndarray,
    truth: torch.Tensor | np.ndarray,
    model: LPIPS,
    *,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str | None = None,
    progress: bool | None = False,
) -> np.ndarray:
    """LPIPS between paired uint8 NCHW images (1 or 3 channels), float64 ``[N]``.

    Images map to [-1, 1] by ``v / 127.5 - 1`` (:func:`cmbench.images.from_uint8`); grey ones
    are repeated to RGB. ``device``: where to compute (default: the model's); the model is
    moved there. On CUDA the convolutions run in full float32 (no TF32).
    """
    output, truth = _as_uint8_images(output, "output"), _as_uint8_images(truth, "truth")
    if output.shape != truth.shape:
        raise ValueError(
            f"lpips_distances pairs images one to one; output has shape {tuple(output.shape)}, "
            f"truth {tuple(truth.shape)}"
        )
    check_lpips_size(model.net, output.shape[2], output.shape[3])
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    distances = []
    starts = range(0, len(output), int(batch_size))
    with torch.no_grad(), full_float32(device):
        for start in progress_bar(starts, progress=progress, desc=f"LPIPS-{model.net}", unit="batch"):
            a, b = (_signed_rgb(x[start : start + int(batch_size)], device) for x in (output, truth))
            distances.append(model(a, b).double().cpu())
    return torch.cat(distances).numpy() if distances else np.zeros(0, dtype=np.float64)


def _as_uint8_images(images: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"LPIPS takes uint8 images of shape (N, C, H, W) with C 1 or 3; {name} is {images.dtype} "
            f"with shape {tuple(images.shape)}"
        )
    return images


def _signed_rgb(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = from_uint8(images.to(device))
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def lpips_convention(net: str) -> dict[str, str]:
    """:data:`LPIPS_CONVENTION` with the net named, for result rows."""
    trunk_spec(net)
    return {**LPIPS_CONVENTION, "lpips_net": net}


# --- weights: finding, checking, loading -------------------------------------------------------


def find_lpips_weights(
    net: str = "alex",
    *,
    backbone: str | os.PathLike | None = None,
    heads: str | os.PathLike | None = None,
    check: bool = True,
) -> LPIPSWeights:
    """The trunk and heads files of LPIPS-``net``, each from its explicit path or the search.

    ``check=False`` skips the hash checks (for files written by tests). Raises
    :class:`FileNotFoundError` saying which file to put where, or
    :class:`cmbench.weights.WeightsHashError` naming a file with the wrong content.
    """
    trunk_spec(net)
    return LPIPSWeights(
        net,
        find_lpips_file(BACKBONE_FILES[net], backbone, check=check),
        find_lpips_file(HEADS_FILES[net], heads, check=check),
    )


def find_lpips_file(spec: LPIPSFile, path: str | os.PathLike | None = None, *, check: bool = True) -> Path:
    """``spec``'s file: ``path`` (a file, or a folder holding it), else in ``$CMBENCH_LPIPS_WEIGHTS``, else the caches.

    A given path or variable that does not lead to the file is an error, never a fall-through.
    """
    if path is not None:
        given = Path(path).expanduser()
        found = given / spec.file_name if given.is_dir() else given
        if not found.is_file():
            raise FileNotFoundError(
                f"{spec.what}: the given path {given} is neither the file nor a folder holding {spec.file_name}. "
                + _where_to_get(spec)
            )
        return _checked(found, spec, check)
    if os.environ.get(ENV_VAR):
        found = Path(os.environ[ENV_VAR]).expanduser() / spec.file_name
        if not found.is_file():
            raise FileNotFoundError(f"{spec.what}: ${ENV_VAR} is set and {found} does not exist. {_where_to_get(spec)}")
        return _checked(found, spec, check)
    for folder in search_locations():
        if (folder / spec.file_name).is_file():
            return _checked(folder / spec.file_name, spec, check)
    looked = ", ".join(str(folder) for folder in search_locations())
    raise FileNotFoundError(
        f"{spec.what} not found: {spec.file_name} is in none of {looked} and ${ENV_VAR} is not set. "
        + _where_to_get(spec)
    )


def verify_lpips_file(path: str | os.PathLike, spec: LPIPSFile) -> str:
    """The file's sha256 after checking it: the full digest if ``spec`` pins one, else the name's prefix."""
    digest = sha256_file(path)
    expected = spec.sha256 or spec.hash_prefix
    if not digest.startswith(expected):
        pinned = "sha256" if spec.sha256 else f"sha256 prefix (torch hub's convention: the {spec.file_name} name's)"
        raise WeightsHashError(
            f"{path}: sha256 {digest} does not match the expected {pinned} {expected}: it is not {spec.what} "
            f"(a damaged or partial download, or another file under this name); replace it with the file "
            f"published at {spec.published}"
        )
    return digest


def lpips_weights_identity(weights: LPIPSWeights) -> dict[str, str]:
    """The files' names and full sha256, for result rows (the trunk's digest is recorded, not pinned)."""
    return {
        "lpips_backbone": weights.backbone.name,
        "lpips_backbone_sha256": sha256_file(weights.backbone),
        "lpips_heads": weights.heads.name,
        "lpips_heads_sha256": sha256_file(weights.heads),
    }


def load_lpips(
    net: str = "alex",
    *,
    backbone: str | os.PathLike | None = None,
    heads: str | os.PathLike | None = None,
    check: bool = True,
) -> LPIPS:
    """LPIPS-``net`` with the weights :func:`find_lpips_weights` finds (arguments as there)."""
    return lpips_from_files(find_lpips_weights(net, backbone=backbone, heads=heads, check=check))


def lpips_from_files(weights: LPIPSWeights) -> LPIPS:
    """An :class:`LPIPS` loaded strictly from ``weights``' files (hashes are checked by :func:`find_lpips_weights`)."""
    model = LPIPS(weights.net)
    load_torchvision_features(model.trunk, _load_state(weights.backbone), weights.backbone)
    load_heads(model, _load_state(weights.heads), weights.heads)
    model.weights = weights
    return model


def load_heads(model: LPIPS, state: dict, source: str | os.PathLike) -> None:
    """Load an lpips heads file (keys ``lin{k}.model.1.weight``, shape [1, C_k, 1, 1]) into ``model``, strictly."""
    expected = {f"lin{k}.model.1.weight": head.weight.shape for k, head in enumerate(model.heads)}
    if not isinstance(state, dict) or set(state) != set(expected):
        found = f"the keys {', '.join(map(str, state))}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(
            f"{source} is not an LPIPS v0.1 heads file for {model.net}: it holds {found}; expected the keys "
            f"{', '.join(expected)}"
        )
    wrong = [f"{key} {tuple(getattr(value, 'shape', ()))} (expected {tuple(expected[key])})"
             for key, value in state.items() if not isinstance(value, torch.Tensor) or value.shape != expected[key]]
    if wrong:
        raise ValueError(f"{source} is not an LPIPS v0.1 heads file for {model.net}: wrong shapes: {'; '.join(wrong)}")
    for k, head in enumerate(model.heads):
        head.weight.copy_(state[f"lin{k}.model.1.weight"])


def _load_state(path: Path) -> dict:
    return load_plain_state(path, path)  # onto the CPU: the official heads files were saved from CUDA tensors


def _checked(path: Path, spec: LPIPSFile, check: bool) -> Path:
    if check:
        verify_lpips_file(path, spec)
    return path


def _where_to_get(spec: LPIPSFile) -> str:
    digest = f"sha256 {spec.sha256}" if spec.sha256 else f"sha256 beginning {spec.hash_prefix}"
    size = f", {spec.size:,} bytes" if spec.size else ""
    return (
        f"cmbench never downloads it: get {spec.file_name} ({digest}{size}) from {spec.published} and put it at "
        f"{torch_hub_checkpoints() / spec.file_name} (or in a folder named by ${ENV_VAR}, or pass its path)"
    )
