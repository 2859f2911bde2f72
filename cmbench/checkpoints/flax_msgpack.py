"""A reader of flax msgpack checkpoints (``flax.serialization.to_bytes``) that needs neither JAX nor flax.

openai/consistency_models_cifar10 saves its training state with ``flax.serialization.to_bytes``:
one msgpack map of the state's fields (a flax struct dataclass turned into nested string-keyed
maps; tuples and named tuples become maps keyed "0", "1", ... or by field name). Arrays are
msgpack extension values, as flax's ``serialization`` module writes them:

- type 1, an ndarray: the msgpack triple (shape, dtype name, C-order bytes);
- type 2, a Python complex: the msgpack pair (real, imag);
- type 3, a NumPy scalar: an ndarray triple of shape ();
- an array larger than 2^30 bytes is split into a map ``{"__msgpack_chunked_array__": true,
  "shape": {"0": ..}, "chunks": {"0": flat array, ..}}``.

Reading is data only: maps, lists, strings, numbers and those three extension types; anything
else (another extension type, a timestamp, an object or bfloat16 dtype, a malformed array) is
refused with the file and the entry's path. Top-level entries not asked for are skipped without
being decoded, so loading one parameter tree of a 1 GB state does not decode the optimiser's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

NDARRAY, NATIVE_COMPLEX, NUMPY_SCALAR = 1, 2, 3  # flax.serialization._MsgpackExtType
CHUNKED_MARKER = "__msgpack_chunked_array__"
ACCEPTED_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)
MAX_DEPTH = 64


class _Skipped:
    def __repr__(self) -> str:
        return "<skipped>"


SKIPPED = _Skipped()
"""The value of a top-level entry that :func:`read_flax_msgpack` was asked not to decode."""


class _Refused(Exception):
    """A well-formed msgpack value that a flax checkpoint does not hold (message names the entry)."""


class _BadExtension:
    """An extension value the reader refuses; the tree walk reports it with its path."""

    def __init__(self, reason: str):
        self.reason = reason


def read_flax_msgpack(data: bytes, source: str | Path, *, keep: Collection[str] | None = None) -> dict[str, Any]:
    """The state dict in ``data`` (the bytes of the file ``source``) as nested dicts of NumPy arrays.

    With ``keep``, only those top-level entries are decoded; the others are present as
    :data:`SKIPPED`, so the caller still sees every top-level key. Arrays are read-only views of
    the file's bytes, in the file's dtype. Raises ValueError naming ``source`` for a file that
    is not msgpack, is truncated, has bytes after the state, or holds something a flax
    checkpoint cannot (naming the entry's path and what was found).
    """
    try:
        return _read_state(data, keep)
    except _Refused as err:
        raise ValueError(f"{source}: {err}") from None
    except msgpack.OutOfData:
        raise ValueError(f"{source} is truncated: its msgpack data ends inside an entry "
                         f"(the file has {len(data)} bytes)") from None
    except (msgpack.UnpackException, ValueError, TypeError) as err:
        raise ValueError(f"{source} is not a flax msgpack checkpoint: {err}") from None


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a/b/c": leaf}`` for the nested mappings of ``tree`` (keys joined with "/" after
    ``prefix``); an empty mapping contributes nothing."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, path))
        else:
            flat[path] = value
    return flat


def _read_state(data: bytes, keep: Collection[str] | None) -> dict[str, Any]:
    if not data:
        raise _Refused("the file is empty; expected a flax msgpack checkpoint")
    if not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise _Refused(f"not a flax msgpack checkpoint: it starts with {data[:4]!r}{_format_hint(data)}, "
                       "not a msgpack map")
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, ext_hook=_decode_extension, strict_map_key=False,
                                max_buffer_size=min(max(len(data), 1), 2**32 - 1))
    state: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if not isinstance(key, str):
            raise _Refused(f"a top-level key is a {type(key).__name__} ({key!r}); a flax state has string keys")
        if keep is None or key in keep:
            state[key] = _checked(unpacker.unpack(), key, 1)
        else:
            unpacker.skip()
            state[key] = SKIPPED
    if unpacker.tell() != len(data):
        raise _Refused(f"not a flax msgpack checkpoint: {len(data) - unpacker.tell()} bytes follow the "
                       f"msgpack map that ends at byte {unpacker.tell()}{_format_hint(data)}")
    return state


def _format_hint(data: bytes) -> str:
    if data[:2] == b"PK":
        return " (a zip archive, as torch.save writes)"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return " (a Python pickle)"
    return ""


def _checked(value: Any, path: str, depth: int) -> Any:
    """``value`` with chunked arrays joined, after refusing what a flax state cannot hold."""
    if depth > MAX_DEPTH:
        raise _Refused(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, _BadExtension):
        raise _Refused(f"{path}: {value.reason}")
    if isinstance(value, dict):
        if CHUNKED_MARKER in value:
            return _joined_chunks(value, path)
        for key in value:
            if not isinstance(key, str):
                raise _Refused(f"{path}: a key is a {type(key).__name__} ({key!r}); a flax state has string keys")
        return {key: _checked(item, f"{path}/{key}", depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_checked(item, f"{path}/{i}", depth + 1) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str, bytes, complex, np.ndarray, np.generic)):
        return value
    raise _Refused(f"{path}: a msgpack {type(value).__name__}, which flax checkpoints do not hold")


def _decode_extension(code: int, payload: bytes) -> Any:
    if code == NDARRAY:
        return _decode_array(payload)
    if code == NUMPY_SCALAR:
        array = _decode_array(payload)
        if isinstance(array, np.ndarray) and array.shape != ():
            return _BadExtension(f"a NumPy scalar (msgpack extension 3) of shape {array.shape}")
        return array[()] if isinstance(array, np.ndarray) else array
    if code == NATIVE_COMPLEX:
        try:
            parts = msgpack.unpackb(payload)
        except Exception as err:  # any decoding failure of the payload is a malformed entry
            return _BadExtension(f"a malformed complex number (msgpack extension 2): {err}")
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, (int, float)) for p in parts)):
            return _BadExtension("a malformed complex number (msgpack extension 2): expected a (real, imag) pair")
        return complex(parts[0], parts[1])
    return _BadExtension(f"msgpack extension type {code}; flax checkpoints use 1 (ndarray), "
                         "2 (complex) and 3 (NumPy scalar)")


def _decode_array(payload: bytes) -> np.ndarray | _BadExtension:
    """flax's ndarray encoding: msgpack (shape, dtype name, C-order bytes), native byte order."""
    try:
        fields = msgpack.unpackb(payload, raw=True)
    except Exception as err:  # any decoding failure of the payload is a malformed entry
        return _BadExtension(f"a malformed array (msgpack extension 1): {err}")
    if not (isinstance(fields, list) and len(fields) == 3):
        return _BadExtension("a malformed array: expected the triple (shape, dtype, bytes)")
    shape, dtype_name, buffer = fields
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        return _BadExtension(f"a malformed array: its shape is {shape!r}")
    if not isinstance(dtype_name, bytes) or dtype_name.decode("ascii", "replace") not in ACCEPTED_DTYPES:
        return _BadExtension(f"an array of dtype {dtype_name!r}; accepted: {', '.join(ACCEPTED_DTYPES)}")
    dtype = np.dtype(dtype_name.decode("ascii"))
    if not isinstance(buffer, bytes) or len(buffer) != math.prod(shape) * dtype.itemsize:
        size = len(buffer) if isinstance(buffer, bytes) else type(buffer).__name__
        return _BadExtension(f"a malformed array: shape {tuple(shape)} of {dtype.name} needs "
                             f"{math.prod(shape) * dtype.itemsize} bytes, it has {size}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _joined_chunks(entry: dict, path: str) -> np.ndarray:
    """An array flax split into flat chunks (``_chunk``), joined and reshaped."""
    if set(entry) != {CHUNKED_MARKER, "shape", "chunks"} or entry[CHUNKED_MARKER] is not True:
        raise _Refused(f"{path}: a malformed chunked array with keys {sorted(map(str, entry))}")
    shape, chunks = _indexed(entry["shape"], f"{path}/shape"), _indexed(entry["chunks"], f"{path}/chunks")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _Refused(f"{path}: a chunked array of shape {shape!r}")
    for i, chunk in enumerate(chunks):
        _checked(chunk, f"{path}/chunks/{i}", 1)
        if not (isinstance(chunk, np.ndarray) and chunk.ndim == 1 and chunk.dtype == chunks[0].dtype):
            raise _Refused(f"{path}/chunks/{i}: expected a flat array like the first chunk")
    if not chunks or sum(c.size for c in chunks) != math.prod(shape):
        raise _Refused(f"{path}: chunks of {sum(c.size for c in chunks)} values for shape {tuple(shape)}")
    return np.concatenate(chunks).reshape(shape)


def _indexed(entry: Any, path: str) -> list:
    """The values of a map keyed "0", "1", ... (flax's encoding of a tuple), in order."""
    if not isinstance(entry, dict) or set(entry) != {str(i) for i in range(len(entry))}:
        raise _Refused(f"{path}: expected a map keyed 0..n-1 (a tuple), found {type(entry).__name__}")
    return [entry[str(i)] for i in range(len(entry))]
