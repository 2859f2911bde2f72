"""Where the Inception weights file is, whether it is the right one, and how to fetch it.

cmbench never downloads anything on its own. :func:`find_inception_weights` looks for
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` in, in order:

1. an explicit path (the suite's ``features.weights``), a file or a folder holding it;
2. ``$CMBENCH_INCEPTION_WEIGHTS`` (a file or a folder);
3. torch hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (default
   ``~/.cache/torch/hub/checkpoints``), where torch-fidelity and torch.hub put it;
4. ``$XDG_CACHE_HOME/cmbench`` (default ``~/.cache/cmbench``).

An explicit path or variable that names no file is an error (never a silent fall-through). A
file found is checked against the sha256 in :data:`INCEPTION_WEIGHTS`; if none is found the
error says which file to put where. :func:`fetch_inception_weights` (the ``cmbench weights
fetch`` command) downloads it, only when called.

The sha256: torch-fidelity publishes only the URL; its file name carries the first 8 hex digits
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
from .console import progress_bar

ENV_VAR = "CMBENCH_INCEPTION_WEIGHTS"
FETCH_COMMAND = "cmbench weights fetch"


@dataclass(frozen=True)
class WeightsFile:
    """A weights file cmbench can use: its name, where it is published and what it must hash to."""

    file_name: str
    url: str
    sha256: str
    size: int  # bytes

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
    """The verified weights file: ``path`` if given, else ``$CMBENCH_INCEPTION_WEIGHTS``, else the caches.

    ``sha256`` is the digest the file must have (``None`` skips the check, for files made by
    tests). Raises :class:`FileNotFoundError` saying which file to put where, or
    :class:`WeightsHashError` naming a file with the wrong content.
    """
    spec = INCEPTION_WEIGHTS
    for given, origin in ((path, "the given path"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if given is not None:
            found = _as_file(Path(given).expanduser(), spec.file_name)
            if not found.is_file():
                raise FileNotFoundError(
                    f"Inception weights: {origin} {given} is not a file"
                    + (f" (nor a folder holding {spec.file_name})" if found != Path(given).expanduser() else "")
                    + f". {_where_to_get_it()}"
                )
            _check(found, sha256)
            return found
    for folder in search_locations():
        found = folder / spec.file_name
        if found.is_file():
            _check(found, sha256)
            return found
    looked = ", ".join(str(folder) for folder in search_locations())
    raise FileNotFoundError(
        f"Inception weights not found: {spec.file_name} is in none of {looked} and "
        f"${ENV_VAR} is not set. {_where_to_get_it()}"
    )


def verify_weights(path: str | os.PathLike, sha256: str = INCEPTION_WEIGHTS.sha256) -> str:
    """The file's sha256, after checking it is ``sha256``; :class:`WeightsHashError` if not."""
    digest = sha256_file(path)
    if digest != sha256:
        raise WeightsHashError(
            f"{path}: sha256 {digest} is not the expected {sha256} (a damaged or partial download, or "
            f"another file under this name); delete it and run `{FETCH_COMMAND}`, or put the file from "
            f"{INCEPTION_WEIGHTS.url} there"
        )
    return digest


def fetch_inception_weights(
    dest_dir: str | os.PathLike | None = None,
    *,
    progress: bool | None = None,
    timeout: float = 60.0,
    spec: WeightsFile = INCEPTION_WEIGHTS,
) -> Path:
    """Download the weights into ``dest_dir`` (default torch hub's checkpoint folder) and verify them.

    A file already there with the right sha256 is kept (nothing is downloaded). The download goes
    to a temporary file that is renamed into place only after its sha256 checked out, so an
    interrupted or wrong download leaves nothing behind. Raises :class:`WeightsDownloadError`
    when offline, :class:`WeightsHashError` when the server sends another file. ``spec`` names
    the file (the Inception weights; tests give another).
    """
    target = Path(dest_dir).expanduser() if dest_dir is not None else torch_hub_checkpoints()
    target = target / spec.file_name
    if target.is_file():
        try:
            verify_weights(target, spec.sha256)
            return target
        except WeightsHashError:
            pass  # replaced below by a verified download
    try:
        response = urllib.request.urlopen(spec.url, timeout=timeout)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsDownloadError(
            f"could not download {spec.url} ({getattr(error, 'reason', error)}). Without network access, "
            f"download {spec.file_name} on another machine (sha256 {spec.sha256}, {spec.size:,} bytes) and "
            f"put it at {target} (or anywhere, naming it with ${ENV_VAR})"
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


def _check(path: Path, sha256: str | None) -> None:
    if sha256 is not None:
        verify_weights(path, sha256)


def _where_to_get_it() -> str:
    spec = INCEPTION_WEIGHTS
    return (
        f"cmbench needs {spec.file_name} (sha256 {spec.sha256}, {spec.size:,} bytes; torch-fidelity's "
        f"port of TF's 2015-12-05 Inception-v3). Run `{FETCH_COMMAND}` to download it from {spec.url} "
        f"into {torch_hub_checkpoints()}, or download it yourself and put it at "
        f"{torch_hub_checkpoints() / spec.file_name} (or anywhere, naming it with ${ENV_VAR} or the "
        "suite's features.weights)"
    )
