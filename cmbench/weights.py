"""Where the feature networks' weights files are, whether they are the right ones, and how to fetch them.

Three files come from outside (:data:`WEIGHTS`): torch-fidelity's Inception-v3
(``weights-inception-2015-12-05-6726825d.pth``; FID, IS, sFID, ...), DINOv2's ViT-L/14
(``dinov2_vitl14_pretrain.pth``; FD_DINOv2) and OpenAI's CLIP ViT-L/14@336 in Hugging Face's
layout (CMMD). cmbench never downloads anything on its own. :func:`find_weights` looks for a
file in, in order:

1. an explicit path (e.g. the suite's ``features.weights``), a file or a folder holding it;
2. its environment variable (``$CMBENCH_INCEPTION_WEIGHTS``, ``$CMBENCH_DINOV2_WEIGHTS``,
   ``$CMBENCH_CLIP_WEIGHTS``: a file or a folder);
3. torch hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (default
   ``~/.cache/torch/hub/checkpoints``), where torch-fidelity and torch.hub put them;
4. ``$XDG_CACHE_HOME/cmbench`` (default ``~/.cache/cmbench``).

An explicit path or variable that names no file is an error (never a silent fall-through). A
file found is checked against its sha256; if none is found the error says
which file to put where. :func:`fetch_weights` (``cmbench weights fetch NAME``) downloads one,
only when called.

DINOv2's: Meta publishes no digest (torch.hub loads the file without ``check_hash``); the sha256
and size below are those several independent projects pin beside the official URL, and the size
is what that URL answers and what ViT-L/14's 304,368,640 float32 parameters take. CLIP's: the
Hugging Face repository's ``pytorch_model.bin`` (revision ce19dc9), whose sha256 is its LFS object
id, as independent manifests and Hugging Face cache paths record it. The official CMMD code loads
OpenAI's ``ViT-L-14-336px.pt`` instead, a TorchScript archive whose loading runs code; the Hugging
Face file holds the same network in a plain state dict.

The Inception sha256: torch-fidelity publishes only the URL; its file name carries the first 8 hex digits
of the sha256 (``6726825d``, torch.hub's ``check_hash`` convention). The full digest and size
below are those that several independent projects pin for this file (e.g. in their asset
manifests and checks); they agree with each other and with the name's prefix. cmbench checks
the full digest.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write
from .checkpoints.hashing import sha256_file
from .choices import WEIGHTS_NAMES
from .console import progress_bar

ENV_VAR = "CMBENCH_INCEPTION_WEIGHTS"
FETCH_COMMAND = "cmbench weights fetch"


@dataclass(frozen=True)
class WeightsFile:
    """A weights file cmbench can use: its name, where it is published, what it must hash to, the
    variable and suite key that may name it, and what it is."""

    file_name: str
    url: str
    sha256: str
    size: int  # bytes
    env_var: str = ENV_VAR
    label: str = "Inception weights"
    about: str = "torch-fidelity's port of TF's 2015-12-05 Inception-v3"
    name: str = "inception"  # as `cmbench weights fetch NAME` knows it
    suite_key: str = "features.weights"

    @property
    def hash_prefix(self) -> str:
        """The sha256 prefix in the file name (torch.hub's convention)."""
        return self.sha256[:8]


INCEPTION_WEIGHTS = WeightsFile(
    file_name="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    size=95_628_359,
)


DINOV2_WEIGHTS = WeightsFile(
    file_name="dinov2_vitl14_pretrain.pth",
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
    sha256="d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428",
    size=1_217_586_395,
    env_var="CMBENCH_DINOV2_WEIGHTS",
    label="DINOv2 weights",
    about="facebookresearch/dinov2's ViT-L/14 (torch.hub dinov2_vitl14, as EDM2's FD_DINOv2 loads it)",
    name="dinov2-vitl14",
    suite_key="features.dinov2.weights",
)

CLIP_WEIGHTS = WeightsFile(
    file_name="pytorch_model.bin",
    url="https://huggingface.co/openai/clip-vit-large-patch14-336/resolve/main/pytorch_model.bin",
    sha256="c6032c2e0caae3dc2d4fba35535fa6307dbb49df59c7e182b1bc4b3329b81801",
    size=1_711_974_081,
    env_var="CMBENCH_CLIP_WEIGHTS",
    label="CLIP weights",
    about="OpenAI's CLIP ViT-L/14@336 in Hugging Face's layout (openai/clip-vit-large-patch14-336, as CMMD loads it)",
    name="clip-vitl14-336",
    suite_key="features.clip.weights",
)

WEIGHTS = {spec.name: spec for spec in (INCEPTION_WEIGHTS, DINOV2_WEIGHTS, CLIP_WEIGHTS)}
assert tuple(WEIGHTS) == WEIGHTS_NAMES
"""Every weights file by the name ``cmbench weights fetch`` takes."""


class WeightsHashError(ValueError):
    """A weights file is not the expected one (its sha256 differs)."""


class WeightsDownloadError(OSError):
    """The weights could not be downloaded (offline, or the server failed)."""


def torch_hub_checkpoints() -> Path:
    """torch hub's checkpoint folder: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cmbench_cache() -> Path:
    """cmbench's own cache folder: ``$XDG_CACHE_HOME/cmbench`` (default ``~/.cache/cmbench``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmbench"


def search_locations() -> list[Path]:
    """The cache folders searched when no path is given, in order."""
    return [torch_hub_checkpoints(), cmbench_cache()]


def find_inception_weights(path: str | os.PathLike | None = None, *, sha256: str | None = INCEPTION_WEIGHTS.sha256) -> Path:
    """The verified Inception weights file (:func:`find_weights` of :data:`INCEPTION_WEIGHTS`)."""
    return find_weights(INCEPTION_WEIGHTS, path, sha256=sha256)


def find_weights(spec: WeightsFile, path: str | os.PathLike | None = None, *, sha256: str | None) -> Path:
    """The verified file ``spec`` names: ``path`` if given, else ``$<spec.env_var>``, else the caches.

    ``sha256`` is the digest the file must have (``spec.sha256`` for the official file; ``None``
    skips the check, for files made by tests). Raises :class:`FileNotFoundError` saying which file
    to put where, or :class:`WeightsHashError` naming a file with the wrong content.
    """
    for given, origin in ((path, "the given path"), (os.environ.get(spec.env_var) or None, f"${spec.env_var}")):
        if given is not None:
            found = _as_file(Path(given).expanduser(), spec.file_name)
            if not found.is_file():
                raise FileNotFoundError(
                    f"{spec.label}: {origin} {given} is not a file"
                    + (f" (nor a folder holding {spec.file_name})" if found != Path(given).expanduser() else "")
                    + f". {_where_to_get_it(spec)}"
                )
            _check(found, sha256, spec)
            return found
    for folder in search_locations():
        found = folder / spec.file_name
        if found.is_file():
            _check(found, sha256, spec)
            return found
    looked = ", ".join(str(folder) for folder in search_locations())
    raise FileNotFoundError(
        f"{spec.label} not found: {spec.file_name} is in none of {looked} and "
        f"${spec.env_var} is not set. {_where_to_get_it(spec)}"
    )


def verify_weights(path: str | os.PathLike, sha256: str = INCEPTION_WEIGHTS.sha256,
                   spec: WeightsFile = INCEPTION_WEIGHTS) -> str:
    """The file's sha256, after checking it is ``sha256``; :class:`WeightsHashError` if not."""
    digest = sha256_file(path)
    if digest != sha256:
        raise WeightsHashError(
            f"{path}: sha256 {digest} is not the expected {sha256} (a damaged or partial download, or "
            f"another file under this name); delete it and run `{FETCH_COMMAND} {spec.name}`, or put the file "
            f"from {spec.url} there"
        )
    return digest


def fetch_inception_weights(
    dest_dir: str | os.PathLike | None = None,
    *,
    progress: bool | None = None,
    timeout: float = 60.0,
    spec: WeightsFile = INCEPTION_WEIGHTS,
) -> Path:
    """:func:`fetch_weights` of the Inception weights (``spec``: tests give another file)."""
    return fetch_weights(spec, dest_dir, progress=progress, timeout=timeout)


def fetch_weights(spec: WeightsFile, dest_dir: str | os.PathLike | None = None, *, progress: bool | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``spec``'s file into ``dest_dir`` (default torch hub's checkpoint folder) and verify it.

    A file already there with the right sha256 is kept (nothing is downloaded). The download goes to a temporary file that is renamed into
    place only after its sha256 checked out, so an interrupted or wrong download leaves nothing
    behind. Raises :class:`WeightsDownloadError` when offline, :class:`WeightsHashError` when the
    server sends another file.
    """
    target = Path(dest_dir).expanduser() if dest_dir is not None else torch_hub_checkpoints()
    target = target / spec.file_name
    if target.is_file():
        try:
            verify_weights(target, spec.sha256, spec)
            return target
        except WeightsHashError:
            pass  # replaced below by a verified download
    try:
        response = urllib.request.urlopen(spec.url, timeout=timeout)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsDownloadError(
            f"could not download {spec.url} ({getattr(error, 'reason', error)}). Without network access, "
            f"download {spec.file_name} on another machine (sha256 {spec.sha256}, {spec.size:,} bytes) and "
            f"put it at {target} (or anywhere, naming it with ${spec.env_var})"
        ) from error

    def write(out) -> None:
        digest = hashlib.sha256()
        total = int(response.headers.get("Content-Length") or 0) or None
        with response, progress_bar(progress=progress, total=total, unit="B", unit_scale=True, desc=spec.file_name) as bar:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
                bar.update(len(block))
        if digest.hexdigest() != spec.sha256:
            raise WeightsHashError(
                f"downloaded {spec.url}: sha256 {digest.hexdigest()} is not the expected {spec.sha256}; "
                "nothing was written"
            )

    try:
        atomic_write(target, write)
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets, short reads
        raise WeightsDownloadError(f"download of {spec.url} failed ({error}); nothing was written to {target}") from error
    return target


def _as_file(path: Path, file_name: str) -> Path:
    return path / file_name if path.is_dir() else path


def _check(path: Path, sha256: str | None, spec: WeightsFile = INCEPTION_WEIGHTS) -> None:
    if sha256 is not None:
        verify_weights(path, sha256, spec)


def _where_to_get_it(spec: WeightsFile = INCEPTION_WEIGHTS) -> str:
    return (
        f"cmbench needs {spec.file_name} (sha256 {spec.sha256}, {spec.size:,} bytes; {spec.about}). Run "
        f"`{FETCH_COMMAND} {spec.name}` to download it from {spec.url} into {torch_hub_checkpoints()}, or download it "
        f"yourself and put it at {torch_hub_checkpoints() / spec.file_name} (or anywhere, naming it with "
        f"${spec.env_var} or the suite's {spec.suite_key})"
    )
