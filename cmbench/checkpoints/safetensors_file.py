"""A small reader of the safetensors format (huggingface/safetensors), so cmbench needs neither
that package nor diffusers to load a ``.safetensors`` file.

The format: an unsigned 64-bit little-endian header length N; N bytes of UTF-8 JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus an optional
``"__metadata__"`` of strings); then the data section, every tensor's little-endian bytes at
its offsets relative to the section's start. Nothing in the file is executed. Every entry is
checked: a known dtype, a shape of non-negative ints, offsets inside the data section spanning
exactly shape × item size, no two tensors overlapping and no byte left unaccounted for (as the
safetensors library requires), so a truncated or padded file is refused by name.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
}
ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def read_safetensors(data: bytearray, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file whose bytes are ``data``, as views into ``data``
    where a tensor's offset is aligned to its item size (copies otherwise).

    Raises ValueError naming ``path`` (and the tensor) for anything that is not a well-formed file.
    """
    if sys.byteorder != "little":
        raise ValueError(f"{path}: cmbench reads safetensors files on little-endian machines only")
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file: {len(data)} bytes, fewer than the 8-byte header length")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_HEADER_BYTES):
        raise ValueError(f"{path}: not a safetensors file or truncated: its header length {size} exceeds the "
                         f"{len(data) - 8} bytes that follow (and the {MAX_HEADER_BYTES}-byte limit)")
    header = _header(bytes(data[8:8 + size]), path)
    start = 8 + size
    section = len(data) - start
    spans = []
    tensors = {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = _entry(name, entry, path)
        needed = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end <= section:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] lie outside the {section}-byte "
                             f"data section (a truncated file?)")
        if end - begin != needed:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets span {end - begin} bytes, but "
                             f"{entry['dtype']} {list(shape)} needs {needed}")
        spans.append((begin, end, name))
        tensors[name] = _tensor(data, start + begin, dtype, shape)
    _check_layout(spans, section, path)
    return tensors


def _header(raw: bytes, path: Path) -> dict:
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"{path}: safetensors header names {', '.join(map(repr, repeated))} more than once")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a safetensors file: its header is not UTF-8 JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: safetensors __metadata__ must map strings to strings")
    return header


def _entry(name: str, entry, path: Path) -> tuple[torch.dtype, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
        raise ValueError(f"{path}: tensor {name!r}: expected an object with keys {', '.join(sorted(ENTRY_KEYS))}, "
                         f"got {entry!r:.200}")
    if entry["dtype"] not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r}: dtype {entry['dtype']!r} is not read; accepted: {', '.join(DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise ValueError(f"{path}: tensor {name!r}: shape must be a list of non-negative ints, got {shape!r:.200}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets):
        raise ValueError(f"{path}: tensor {name!r}: data_offsets must be [begin, end] (non-negative ints), got {offsets!r:.200}")
    return DTYPES[entry["dtype"]], tuple(shape), (offsets[0], offsets[1])


def _natural(value) -> bool:
    return type(value) is int and value >= 0


def _tensor(data: bytearray, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    count = math.prod(shape)
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    if offset % dtype.itemsize:
        return torch.frombuffer(bytearray(data[offset:offset + count * dtype.itemsize]), dtype=dtype).reshape(shape)
    return torch.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def _check_layout(spans: list[tuple[int, int, str]], section: int, path: Path) -> None:
    """Tensors may not overlap, and together they must cover the data section exactly."""
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise ValueError(f"{path}: tensors {previous!r} and {name!r} overlap in the data section")
        if begin > position:
            raise ValueError(f"{path}: bytes {position}–{begin} of the data section belong to no tensor")
        position, previous = end, name
    if position != section:
        raise ValueError(f"{path}: the data section has {section} bytes but its tensors end at byte {position} "
                         f"(trailing bytes belong to no tensor)")
