"""The registry of official reference-statistics files, and fetching them on request.

``reference_stats/registry.yaml`` (shipped as ``cmbench.reference_stats``) lists each file the
papers' evaluators use: its name, URL, sha256 where one is published, format, evaluator
profile, data set, resolution and which repository documents it. Nothing is downloaded unless
``cmbench stats fetch NAME`` asks for it; the download goes to a folder the user sees (default
``reference_stats/official`` under the current folder), is written atomically, and is checked
against the registry's sha256 when the registry has one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib import request

import yaml

from cmbench.atomic import atomic_write
from cmbench.choices import EDM2, OFFICIAL_REFERENCE_DEST
from cmbench.console import progress_bar
from cmbench.metrics.reference_formats import FORMATS
from cmbench.validate import Checker
from cmbench.yaml_input import load_yaml

REGISTRY_FORMAT = "cmbench-reference-registry/1"
REQUIRED_KEYS = ("name", "file", "url", "sha256", "format", "profile", "dataset", "resolution", "source")
OPTIONAL_KEYS = ("split", "num_images", "notes")
DEFAULT_DEST = OFFICIAL_REFERENCE_DEST
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    file: str
    url: str
    sha256: str | None
    format: str
    profile: str
    dataset: str
    resolution: tuple[int, int]
    source: str
    split: str | None = None
    num_images: int | None = None
    notes: str | None = None


def default_registry_path() -> Path:
    """The shipped registry: package data of ``cmbench.reference_stats`` when installed, else the
    ``reference_stats/`` folder of the source checkout this package runs from."""
    try:
        return Path(str(resources.files("cmbench.reference_stats") / "registry.yaml"))
    except ModuleNotFoundError:  # a checkout on PYTHONPATH, or an install older than the package
        return Path(__file__).resolve().parents[2] / "reference_stats" / "registry.yaml"


def load_registry(path: str | os.PathLike | None = None) -> dict[str, RegistryEntry]:
    """Entries by name, validated; every error names the file and the entry's key path."""
    path = Path(path) if path is not None else default_registry_path()
    if not path.is_file():
        raise FileNotFoundError(f"reference registry {path} not found")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    c = Checker(str(path))
    c.keys(c.mapping(raw, ""), "", ("format", "entries"))
    if raw["format"] != REGISTRY_FORMAT:
        raise c.fail("format", f"expected {REGISTRY_FORMAT!r}, got {raw['format']!r}")
    if not isinstance(raw["entries"], list) or not raw["entries"]:
        raise c.fail("entries", "expected a non-empty list of entries")
    entries: dict[str, RegistryEntry] = {}
    for i, item in enumerate(raw["entries"]):
        entry = _parse_entry(c, item, f"entries[{i}]")
        if entry.name in entries:
            raise c.fail(f"entries[{i}].name", f"duplicate name {entry.name!r}")
        entries[entry.name] = entry
    return entries


def _parse_entry(c: Checker, item, where: str) -> RegistryEntry:
    c.keys(c.mapping(item, where), where, REQUIRED_KEYS, OPTIONAL_KEYS)
    name = c.string(item["name"], f"{where}.name")
    if not NAME_PATTERN.match(name):
        raise c.fail(f"{where}.name", f"{name!r}: use lower-case letters, digits, '.', '_' and '-'")
    file = c.string(item["file"], f"{where}.file")
    if "/" in file or not file.endswith(".pkl" if item.get("format") == EDM2 else ".npz"):
        suffix = ".pkl (EDM2's statistics)" if item.get("format") == EDM2 else ".npz"
        raise c.fail(f"{where}.file", f"{file!r}: expected a plain {suffix} file name")
    url = c.string(item["url"], f"{where}.url")
    if not url.startswith("https://") or not url.endswith("/" + file):
        raise c.fail(f"{where}.url", f"{url!r}: expected an https:// URL ending in /{file}")
    sha256 = item["sha256"]
    if sha256 is not None and not (isinstance(sha256, str) and SHA256_PATTERN.match(sha256)):
        raise c.fail(f"{where}.sha256", f"expected 64 lower-case hex digits, or null where none is published; got {sha256!r}")
    fmt = c.choice(item["format"], f"{where}.format", FORMATS)
    resolution = item["resolution"]
    if not (isinstance(resolution, list) and len(resolution) == 2):
        raise c.fail(f"{where}.resolution", f"expected [height, width], got {resolution!r}")
    for j, side in enumerate(resolution):
        c.integer(side, f"{where}.resolution[{j}]", minimum=1)
    num_images = item.get("num_images")
    if num_images is not None:
        c.integer(num_images, f"{where}.num_images", minimum=2)
    optional = {key: c.string(item[key], f"{where}.{key}") for key in ("split", "notes") if item.get(key) is not None}
    return RegistryEntry(
        name=name, file=file, url=url, sha256=sha256, format=fmt,
        profile=c.string(item["profile"], f"{where}.profile"), dataset=c.string(item["dataset"], f"{where}.dataset"),
        resolution=(resolution[0], resolution[1]), source=c.string(item["source"], f"{where}.source"),
        num_images=num_images, **optional,
    )


def find_entry(registry: dict[str, RegistryEntry], name: str) -> RegistryEntry:
    """The entry called ``name`` (or whose file is ``name``)."""
    if name in registry:
        return registry[name]
    for entry in registry.values():
        if entry.file == name:
            return entry
    raise ValueError(f"no reference file {name!r} in the registry; known: {', '.join(sorted(registry))} "
                     "(`cmbench stats list` shows them)")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch_reference(entry: RegistryEntry, dest_dir: str | os.PathLike = DEFAULT_DEST, *, progress: bool | None = None,
                    timeout: float = 60.0) -> tuple[Path, str, bool]:
    """Download ``entry`` into ``dest_dir`` unless it is there; returns (path, sha256, downloaded).

    The file is written atomically and checked against the registry's sha256 when one is known
    (a mismatch leaves nothing behind). Without a network the error names the URL and where to
    put a copy fetched by other means."""
    dest = Path(dest_dir) / entry.file
    if dest.exists():
        digest = _sha256_file(dest)
        if entry.sha256 and digest != entry.sha256:
            raise ValueError(f"{dest} exists but its sha256 is {digest}, not the registry's {entry.sha256}; "
                             "delete it to download it again")
        return dest, digest, False

    def offline(err: Exception) -> RuntimeError:
        return RuntimeError(
            f"could not download {entry.name} from {entry.url} ({err}). cmbench may be offline or the URL may have "
            f"moved: download the file by other means and put it at {dest} (or give its path as a suite's "
            "reference: {path: ...})"
        )

    try:
        response = request.urlopen(entry.url, timeout=timeout)
    except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
        raise offline(err) from err
    digest = hashlib.sha256()

    def write(f) -> None:
        size = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        with progress_bar(progress=progress, total=int(size) if size else None, unit="B", unit_scale=True,
                          desc=entry.file) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                digest.update(block)
                bar.update(len(block))
        if entry.sha256 and digest.hexdigest() != entry.sha256:
            raise ValueError(f"download of {entry.url} has sha256 {digest.hexdigest()}, not the registry's "
                             f"{entry.sha256}; nothing was written to {dest}")

    try:
        with response:
            atomic_write(dest, write, overwrite=False)
    except OSError as err:
        if isinstance(err, FileExistsError):
            raise
        raise offline(err) from err
    return dest, digest.hexdigest(), True

