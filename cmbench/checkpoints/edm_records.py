"""Restricted unpickling of EDM snapshots: every object as data, no code from the file run.

A snapshot names globals; :class:`_RestrictedUnpickler` resolves only those in
:data:`ALLOWED_GLOBALS` (tensor and storage rebuilding -- storages re-enter
``torch.load(weights_only=True)`` --, ``OrderedDict``, ``set``, torch's module containers as
inert records, numpy scalars, ``dnnlib``'s ``EasyDict`` as ``dict``, torch dtypes, and
``getattr`` on a persistent object as an inert :class:`MethodRecord`) and refuses anything else
before it can be called. EDM's ``_reconstruct_persistent_obj(meta)`` resolves to a
function that returns an :class:`ObjectRecord` (class name, constructor arguments, parameters,
buffers, submodules) instead of executing ``meta['module_src']``.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cmbench.checkpoints.native import _reason

_TRUST_HINT = (
    "If you trust this file and the code embedded in it, pass trust_pickle_code=True (ordinary "
    "unpickling: it runs the file's code and needs EDM's torch_utils and dnnlib on PYTHONPATH)."
)


@dataclass
class ObjectRecord:
    """One pickled object of a snapshot, as data: nothing of its class has been run.

    EDM's persistent objects have ``persistent=True`` and carry their module's source text
    (``module_src``, kept as text, never executed); ``module_name`` is ``None`` for them because
    EDM's persistence (version 6) does not record it. torch's container modules (``ModuleDict``
    ...) have ``persistent=False`` and no constructor arguments. ``attributes`` are the
    instance's public attributes other than ``training`` (e.g. ``sigma_data``, ``use_fp16``).
    """

    module_name: str | None
    class_name: str
    init_args: tuple | None
    init_kwargs: dict | None
    parameters: dict
    buffers: dict
    submodules: dict
    attributes: dict
    non_persistent_buffers: frozenset = frozenset()
    persistent: bool = True
    version: int | None = None
    module_src: str | None = field(default=None, repr=False)

    @classmethod
    def from_state(cls, module_name, class_name, state, **extra) -> ObjectRecord:
        if not isinstance(state, dict):
            raise _FormatError(f"the state of {class_name} is a {type(state).__name__}, not a dict")
        submodules = state.get("_modules") or {}
        init_kwargs = state.get("_init_kwargs")
        return cls(
            module_name=module_name,
            class_name=class_name,
            init_args=None if state.get("_init_args") is None else tuple(state["_init_args"]),
            init_kwargs=None if init_kwargs is None else dict(init_kwargs),
            parameters=dict(state.get("_parameters") or {}),
            buffers=dict(state.get("_buffers") or {}),
            submodules={name: _as_record(sub) for name, sub in dict(submodules).items()},
            attributes={k: v for k, v in state.items() if not k.startswith("_") and k != "training"},
            non_persistent_buffers=frozenset(state.get("_non_persistent_buffers_set") or ()),
            **extra,
        )

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The tensors ``nn.Module.state_dict()`` would give: parameters and persistent buffers
        that are not None, then each submodule's under ``name.``."""
        out = {}
        for name, value in self.parameters.items():
            if value is not None:
                out[prefix + name] = value
        for name, value in self.buffers.items():
            if value is not None and name not in self.non_persistent_buffers:
                out[prefix + name] = value
        for name, sub in self.submodules.items():
            if sub is not None:
                out.update(sub.state_dict(f"{prefix}{name}."))
        return out


class RefusedGlobalError(ValueError):
    """The snapshot names a global outside :data:`ALLOWED_GLOBALS`; nothing of it was run."""


class _FormatError(ValueError):
    """Raised by the unpickling helpers; the loader adds the file name."""


# --- what the restricted unpickler resolves -------------------------------------------------


class _ContainerStub:
    """Stands in for torch's container modules (pickled as NEWOBJ + BUILD): keeps the state."""

    qualname = ""
    state = None

    def __setstate__(self, state):
        self.state = state


def _container(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[1] + "Stub", (_ContainerStub,), {"qualname": qualname})


def _as_record(obj):
    if obj is None or isinstance(obj, ObjectRecord):
        return obj
    if isinstance(obj, _ContainerStub):
        if obj.state is None:
            raise _FormatError(f"{obj.qualname} was pickled without its state")
        module, name = obj.qualname.rsplit(".", 1)
        return ObjectRecord.from_state(module, name, obj.state, persistent=False)
    raise _FormatError(f"a submodule is a {type(obj).__name__}, not a module")


def _persistent_record(meta) -> ObjectRecord:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: ``meta`` as a
    record, its ``module_src`` kept as text and never executed."""
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str):
        raise _FormatError("a persistent object's metadata is not a dict with a 'class_name'")
    if meta.get("type", "class") != "class":
        raise _FormatError(f"persistent object of type {meta.get('type')!r}; accepted: 'class'")
    src = meta.get("module_src")
    return ObjectRecord.from_state(
        meta.get("module_name"),
        meta["class_name"],
        meta.get("state"),
        version=meta.get("version"),
        module_src=src if isinstance(src, str) else None,
    )


@dataclass(frozen=True)
class MethodRecord:
    """A bound method a snapshot pickled as ``getattr(obj, name)``, as data: nothing is looked up.

    ECT's loss object (locuslab/ect ``training/loss.py``, ``ECMLoss.__init__``) keeps
    ``self.t_to_r = self.t_to_r_sigmoid`` (or ``t_to_r_const``), and pickle writes a bound method
    as a call of ``builtins.getattr`` on its persistent owner. The snapshot's ``loss_fn`` is never
    used here; the record only lets the rest of the file load.
    """

    owner: str
    name: str


def _method_record(owner, name) -> MethodRecord:
    """Stands in for ``builtins.getattr``: only a persistent object's method name is accepted,
    and only recorded (never looked up)."""
    if not isinstance(owner, ObjectRecord) or not isinstance(name, str):
        raise _FormatError(
            f"getattr on a {type(owner).__name__} with a {type(name).__name__} name; accepted only: a persistent "
            "object's bound method (as ECT's ECMLoss.t_to_r)"
        )
    return MethodRecord(owner.class_name, name)


def _load_storage(data):
    """``torch.storage._load_from_bytes``, but through ``torch.load(weights_only=True)``."""
    if not isinstance(data, (bytes, bytearray)):
        raise _FormatError(f"a tensor storage is a {type(data).__name__}, not bytes")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise _FormatError(f"a tensor storage did not load with torch.load(weights_only=True): {_reason(err)}") from err


def _no_hooks(hooks) -> None:
    if hooks:
        raise _FormatError("a tensor was pickled with backward hooks; cmbench does not restore hooks")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise _FormatError(f"a tensor's storage is a {type(storage).__name__}, not a torch storage")
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, size, stride, False, collections.OrderedDict(), metadata
    )


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """A parameter as its plain tensor (only its values are used); Python attributes dropped."""
    if not isinstance(data, torch.Tensor):
        raise _FormatError(f"a parameter holds a {type(data).__name__}, not a tensor")
    _no_hooks(backward_hooks)
    return data


class _NumpyDtype:
    """Stands in for ``numpy.dtype`` while unpickling a numpy scalar (EDM stores a few, e.g.
    ``skip_scale=np.sqrt(0.5)``): records the type code and byte order, nothing more."""

    def __init__(self, code, align=False, copy=False):
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]


_NUMPY_CODES = frozenset(("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"))


def _numpy_scalar(dtype, data):
    """A pickled numpy bool / int / float scalar as the equal Python number."""
    if not isinstance(dtype, _NumpyDtype) or dtype.code not in _NUMPY_CODES or not isinstance(data, bytes):
        code = getattr(dtype, "code", dtype)
        raise _FormatError(f"numpy scalar of type {code!r}; accepted: {', '.join(sorted(_NUMPY_CODES))}")
    kind = np.dtype(("=" if dtype.byteorder == "|" else dtype.byteorder) + dtype.code)
    if len(data) != kind.itemsize:
        raise _FormatError(f"numpy scalar of type {dtype.code} holds {len(data)} bytes")
    return np.frombuffer(data, kind)[0].item()


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _FormatError("_codecs.encode is accepted only for latin-1 text (protocol-2 bytes)")
    return text.encode("latin1")


_TORCH_DTYPES = {
    f"torch.{n}": getattr(torch, n)
    for n in ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool")
}

ALLOWED_GLOBALS: dict[str, object] = {
    "torch_utils.persistence._reconstruct_persistent_obj": _persistent_record,
    "builtins.getattr": _method_record,
    "torch.storage._load_from_bytes": _load_storage,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    **{f"torch.nn.modules.container.{n}": _container(f"torch.nn.modules.container.{n}")
       for n in ("ModuleDict", "ModuleList", "Sequential")},
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "__builtin__.set": set,
    "__builtin__.frozenset": frozenset,
    "_codecs.encode": _latin1_bytes,
    "dnnlib.util.EasyDict": dict,
    "dnnlib.EasyDict": dict,
    "numpy.dtype": _NumpyDtype,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "torch.device": torch.device,
    **_TORCH_DTYPES,
}
"""Every global a snapshot may name, and what it resolves to; anything else is refused."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[f"{module}.{name}"]
        except KeyError:
            shown = sorted(k for k in ALLOWED_GLOBALS if k not in _TORCH_DTYPES)
            raise RefusedGlobalError(
                f"{self.path}: refused to unpickle global {module}.{name}; no code from the file was "
                f"run. The EDM snapshot loader accepts only: {', '.join(shown)} and torch dtypes. "
                + _TRUST_HINT
            ) from None

    def persistent_load(self, pid):
        raise _FormatError("the pickle uses persistent ids, which EDM snapshots do not")


# --- loading --------------------------------------------------------------------------------


def read_edm_records(data: bytes, path: str | os.PathLike = "<bytes>"):
    """Unpickle snapshot bytes with the restricted unpickler; persistent objects as records.

    Raises :class:`RefusedGlobalError` for a global outside :data:`ALLOWED_GLOBALS` and
    ValueError (naming ``path``) for anything else that is not a readable pickle.
    """
    path = Path(path)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
        return _as_record(obj) if isinstance(obj, _ContainerStub) else obj
    except RefusedGlobalError:
        raise
    except _FormatError as err:
        raise ValueError(f"{path}: not a loadable EDM snapshot: {err}") from err
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable EDM snapshot (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
