"""EDM2's reference statistics (``calculate_metrics.py ref``: ``img64.pkl``, ``img512.pkl``, ...), read
without running code from the file.

EDM2 pickles a plain dict: ``num_images`` (an int) and, per metric, ``{"mu": ndarray, "sigma":
ndarray}`` in float64: ``fid`` (its Inception-v3 detector, NVIDIA's port of TF's 2015-12-05
graph, pool_3 2048-d: cmbench's ``inception-tf``) and ``fd_dinov2`` (torch.hub's DINOv2 ViT-L/14,
the CLS output, 1024-d, images resized to 224 with torch's bicubic + antialias: cmbench's
``dinov2-vitl14``). They become the layers ``pool`` and ``dinov2``.

:class:`_StatsUnpickler` resolves only what pickled numpy arrays and that dict need (numpy's
``_reconstruct`` / ``_frombuffer`` with ``ndarray`` and ``dtype``, numpy scalars) into stand-ins
that build plain arrays of numeric dtypes; any other global is refused by name and nothing from
the file is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

EDM2_METRIC_LAYERS = {"fid": "pool", "fd_dinov2": "dinov2"}
"""EDM2's metric keys → cmbench's layer names."""
EDM2_LAYER_EXTRACTORS = {"pool": "inception-tf", "dinov2": "dinov2-vitl14"}
EDM2_CONVENTIONS = {
    "pool": "the TF Inception-v3 graph of 2015-12-05 in NVIDIA's PyTorch port (inception-2015-12-05.pkl, EDM2's "
            "InceptionV3Detector): uint8 input resized to 299 inside the network; pool_3 (2048-d)",
    "dinov2": "torch.hub's DINOv2 ViT-L/14 (EDM2's DINOv2Detector, resize_mode 'torch'): bicubic + antialias resize to "
              "224, /255, ImageNet mean/std; the CLS output (1024-d)",
}
FORMAT_TEXT = ("EDM2 reference statistics (calculate_metrics.py ref): a pickled dict with 'num_images' and, per metric "
               "('fid', 'fd_dinov2'), {'mu': float array [D], 'sigma': float array [D, D]}")
_NUMERIC_KINDS = "biuf"


class _RefusedGlobal(ValueError):
    pass


class _Dtype:
    """Stands in for ``numpy.dtype(code, align, copy)``; its pickled state sets the byte order."""

    def __init__(self, code, align=False, copy=True):
        self.code, self.byteorder = code, "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def numpy(self) -> np.dtype:
        if not isinstance(self.code, str):
            raise ValueError(f"a dtype code {self.code!r}")
        kind = np.dtype(self.code)
        if kind.kind not in _NUMERIC_KINDS or kind.fields is not None:
            raise ValueError(f"an array of dtype {kind}; statistics are numeric arrays")
        return kind.newbyteorder("=" if self.byteorder == "|" else self.byteorder)


class _Array:
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, shape, b'b')``; ``__setstate__``
    receives ``(version, shape, dtype, fortran, data)`` and makes the array."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise ValueError("an ndarray state that is not (version, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, data = state
        self.array = _array(data, dtype, shape, "F" if fortran else "C")


def _array(data, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, _Dtype) or not isinstance(data, (bytes, bytearray)):
        raise ValueError("an ndarray whose data is not raw bytes of a numeric dtype")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"an ndarray of shape {shape!r}")
    kind = dtype.numpy()
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != count * kind.itemsize:
        raise ValueError(f"an ndarray of shape {list(shape)} and dtype {kind} holding {len(data)} bytes")
    return np.frombuffer(bytes(data), kind).reshape(shape, order=order).astype(kind.newbyteorder("="))


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise ValueError("numpy _reconstruct of a class other than ndarray")
    return _Array()


def _frombuffer(data, dtype, shape, order):
    return _array(data, dtype, tuple(shape), order)


def _scalar(dtype, data):
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes):
        raise ValueError("a numpy scalar that is not raw bytes of a numeric dtype")
    return _array(data, dtype, (), "C").item()


def _latin1(text, encoding="latin1"):
    """``_codecs.encode``, as protocol-2 pickles spell bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode of anything but latin-1 text")
    return text.encode("latin1")


_NDARRAY = object()
_ALLOWED = {
    **{f"{m}.multiarray._reconstruct": _reconstruct for m in ("numpy.core", "numpy._core")},
    **{f"{m}.multiarray.scalar": _scalar for m in ("numpy.core", "numpy._core")},
    **{f"{m}.numeric._frombuffer": _frombuffer for m in ("numpy.core", "numpy._core")},
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _Dtype,
    "_codecs.encode": _latin1,
    "dnnlib.util.EasyDict": dict,
    "dnnlib.EasyDict": dict,
}


class _StatsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[f"{module}.{name}"]
        except KeyError:
            raise _RefusedGlobal(f"refused to unpickle global {module}.{name} (nothing from the file was run); "
                                 f"EDM2's statistics need only numpy arrays and dicts") from None

    def persistent_load(self, pid):
        raise ValueError("the pickle uses persistent ids, which EDM2's statistics do not")


def is_pickle(path: Path) -> bool:
    """Whether the file starts as a pickle of protocol 2 or later does (EDM2 writes protocol 4)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read_edm2_pickle(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int | None]:
    """``(mu, sigma, num_images)`` by cmbench layer from an EDM2 statistics pickle; a ValueError
    naming the file and what is wrong (a refused global, a missing or foreign key, a bad array)."""
    try:
        raw = _unwrapped(_StatsUnpickler(io.BytesIO(Path(path).read_bytes())).load())
    except _RefusedGlobal as error:
        raise ValueError(f"{path}: {error}; expected {FORMAT_TEXT}") from None
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, IndexError, KeyError) as error:
        raise ValueError(f"{path}: not a readable EDM2 statistics pickle ({type(error).__name__}: {error}); "
                         f"expected {FORMAT_TEXT}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: holds a {type(raw).__name__}, not a dict; expected {FORMAT_TEXT}")
    unknown = sorted(str(k) for k in raw if k not in EDM2_METRIC_LAYERS and k != "num_images")
    if unknown:
        raise ValueError(f"{path}: unexpected key(s) {', '.join(unknown)}; expected {FORMAT_TEXT}")
    found = [key for key in EDM2_METRIC_LAYERS if key in raw]
    if not found:
        raise ValueError(f"{path}: holds no statistics (no 'fid' or 'fd_dinov2'); expected {FORMAT_TEXT}")
    mu, sigma = {}, {}
    for key in found:
        entry = raw[key]
        if not isinstance(entry, dict) or set(entry) != {"mu", "sigma"}:
            have = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{path}: '{key}' holds {have}, not exactly 'mu' and 'sigma'; expected {FORMAT_TEXT}")
        layer = EDM2_METRIC_LAYERS[key]
        mu[layer], sigma[layer] = entry["mu"], entry["sigma"]
        for name, value in (("mu", mu[layer]), ("sigma", sigma[layer])):
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{path}: '{key}.{name}' is a {type(value).__name__}, not an array; expected {FORMAT_TEXT}")
    count = raw.get("num_images")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 2):
        raise ValueError(f"{path}: 'num_images' is {count!r}, not a count of at least 2 images")
    return mu, sigma, count


def _unwrapped(obj):
    """Arrays made through ``_reconstruct`` + ``__setstate__`` are stand-ins until here."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise ValueError("an ndarray without its state")
        return obj.array
    if isinstance(obj, dict):
        return {key: _unwrapped(value) for key, value in obj.items()}
    return obj
