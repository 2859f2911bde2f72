"""EDM's network snapshots (NVlabs/edm ``.pkl``), rebuilt without running the code they carry.

An EDM snapshot is a plain pickle of ``dict(ema=..., loss_fn=..., augment_pipe=...,
dataset_kwargs=...)`` (EDM ``training/training_loop.py``). Every network class in it was made
"persistent" (EDM ``torch_utils/persistence.py``): an instance pickles as a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class',
version=6, module_src=<the whole source of training/networks.py>, class_name=..., state=<the
instance __dict__>)``, and ordinary unpickling ``exec``\\ s ``module_src`` to rebuild the class.

This loader never does. A restricted :class:`pickle.Unpickler` resolves only the globals in
:data:`ALLOWED_GLOBALS` (tensor and storage rebuilding, ``OrderedDict``, ``set``, torch's
module containers as inert records, numpy scalars, ``dnnlib``'s ``EasyDict`` as ``dict``) and
refuses anything else before it can be called; each persistent object becomes an
:class:`ObjectRecord` (its class name, constructor arguments, parameters, buffers and
submodules as data). From the record of ``ema`` -- a preconditioner (``EDMPrecond``,
``VPPrecond``, ``VEPrecond`` or ``iDDPMPrecond``) whose ``model`` is a ``SongUNet`` or
``DhariwalUNet`` -- cmbench builds its own class of the same name from the recorded
constructor arguments and loads the recorded weights with ``strict=True``; the
preconditioner's settings become plain ``options`` for the model adapter.

``trust_pickle_code=True`` is the explicit opt-in to ordinary unpickling, which runs the file's
code and needs EDM's ``torch_utils`` and ``dnnlib`` importable.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import importlib
import io
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cmbench.checkpoints.native import _check_state_dict, _reason

PRECONDITIONERS = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm"}
"""EDM preconditioner class name -> cmbench's name for its preconditioning."""

NETWORKS: dict[str, str] = {
    "SongUNet": "cmbench.nets.song_unet:SongUNet",
    "DhariwalUNet": "cmbench.nets.dhariwal_unet:DhariwalUNet",
}
"""EDM network class name -> the cmbench class built in its place ("module:attribute")."""

_PRECOND_OPTIONS = {
    "edm": ("sigma_data",),
    "vp": ("beta_d", "beta_min", "M", "epsilon_t"),
    "ve": (),
    "iddpm": ("C_1", "C_2", "M"),
}
_INT_OPTIONS = ("M",)
_TRUST_HINT = (
    "If you trust this file and the code embedded in it, pass trust_pickle_code=True (ordinary "
    "unpickling: it runs the file's code and needs EDM's torch_utils and dnnlib on PYTHONPATH)."
)


@dataclass
class EDMPickle:
    """A network rebuilt from an EDM snapshot, and what its preconditioner said about it.

    ``net`` has cmbench's call ``net(x, noise_labels, class_labels=None, s_noise_labels=None)``
    with integer class labels. ``preconditioning`` is ``"edm"``, ``"vp"``, ``"ve"`` or
    ``"iddpm"`` (EDM Table 1; iDDPM's net outputs 2·C channels of which the first C are ε, and
    its c_noise is an index into ``options["sigma_table"]``). ``options`` is plain data:
    ``image_shape`` [C, H, W], ``label_dim``, ``sigma_min``, ``sigma_max``, ``use_fp16`` (as
    recorded; informational), the preconditioner's own constants (``sigma_data``; ``beta_d``,
    ``beta_min``, ``M``, ``epsilon_t``; ``C_1``, ``C_2``, ``M``, ``sigma_table``) and the EDM
    class names ``precond_class`` and ``network_class``. ``network_kwargs`` are the network's
    recorded constructor arguments. ``sha256`` is that of the bytes loaded. ``trusted_code`` is
    True when the file was unpickled with its own code (``trust_pickle_code=True``); ``net`` is
    then EDM's network inside :class:`EDMNetworkCall`.
    """

    net: nn.Module
    preconditioning: str
    options: dict
    network_kwargs: dict
    sha256: str
    path: Path
    trusted_code: bool = False


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


def load_edm_pickle(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    expected_sha256: str | None = None,
    trust_pickle_code: bool = False,
    networks: Mapping[str, str | Callable[..., nn.Module]] | None = None,
) -> EDMPickle:
    """Load EDM snapshot ``path`` into cmbench's own network; never runs its code by default.

    The top level may be EDM's snapshot dict (its ``'ema'`` is used) or a pickled
    preconditioner. ``networks`` maps EDM network class names to the class (or "module:attr")
    built from the recorded constructor arguments; default :data:`NETWORKS`. With
    ``trust_pickle_code=True`` the file is unpickled normally (its embedded code runs) and
    EDM's own network is returned behind cmbench's call convention.

    Raises FileNotFoundError if ``path`` is missing, :class:`RefusedGlobalError` if the file
    names a global outside the allow-list, and ValueError (naming the file) if it is corrupt,
    holds an unknown preconditioner or network class, its weights do not fit the network, or
    its hash differs from ``expected_sha256``. The file is read once; ``sha256`` is of those
    bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EDM snapshot {path} does not exist")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ValueError(f"{path}: sha256 mismatch: expected {expected_sha256}, file has {sha256}")
    if trust_pickle_code:
        return _load_trusted(data, path, sha256, device)
    top = read_edm_records(data, path)
    del data
    precond = _precond_of(top, path, ObjectRecord)
    kind = _preconditioning(precond.class_name, path)
    model = precond.submodules.get("model")
    if not isinstance(model, ObjectRecord):
        raise ValueError(f"{path}: {precond.class_name} has no 'model' submodule")
    net = _build_network(model, dict(NETWORKS if networks is None else networks), path)
    state_dict = model.state_dict()
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: {model.class_name} weights that are not tensors: {', '.join(not_tensors[:5])}")
    _check_state_dict(net, state_dict, path)
    net.load_state_dict(state_dict, strict=True)
    options = _options(kind, precond.attributes, precond.buffers.get("u"), precond.class_name, path)
    options["network_class"] = model.class_name
    return EDMPickle(
        net=net.eval().requires_grad_(False).to(device),
        preconditioning=kind,
        options=options,
        network_kwargs=dict(model.init_kwargs),
        sha256=sha256,
        path=path,
    )


def _precond_of(top, path: Path, kind: type):
    if isinstance(top, dict):
        if "ema" not in top:
            keys = ", ".join(map(repr, top)) or "none"
            raise ValueError(
                f"{path}: the snapshot dict has no 'ema' key (keys: {keys}); accepted: EDM's "
                "snapshot dict with 'ema', or a pickled EDM preconditioner"
            )
        top = top["ema"]
    if not isinstance(top, kind):
        raise ValueError(
            f"{path}: holds a {type(top).__name__}; accepted: EDM's snapshot dict with 'ema', "
            "or a pickled EDM preconditioner"
        )
    return top


def _preconditioning(class_name: str, path: Path) -> str:
    if class_name not in PRECONDITIONERS:
        raise ValueError(
            f"{path}: unknown preconditioner class {class_name!r}; accepted: {', '.join(PRECONDITIONERS)}"
        )
    return PRECONDITIONERS[class_name]


def _build_network(model: ObjectRecord, table: dict, path: Path) -> nn.Module:
    if model.class_name not in table:
        raise ValueError(
            f"{path}: unknown network class {model.class_name!r}; accepted: {', '.join(sorted(table))}"
        )
    if model.init_kwargs is None or model.init_args is None:
        raise ValueError(f"{path}: {model.class_name} was pickled without its constructor arguments")
    builder = table[model.class_name]
    if isinstance(builder, str):
        module_name, attr = builder.split(":")
        builder = getattr(importlib.import_module(module_name), attr)
    try:
        return builder(*model.init_args, **model.init_kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: cannot build {model.class_name} from the snapshot's constructor arguments "
            f"{model.init_kwargs}: {err}"
        ) from err


def _options(kind: str, attrs: Mapping, sigma_table, class_name: str, path: Path) -> dict:
    def value(name):
        if name not in attrs:
            raise ValueError(f"{path}: {class_name} lacks the attribute {name!r}")
        return int(attrs[name]) if name in _INT_OPTIONS else float(attrs[name])

    resolution = int(value("img_resolution"))
    options = {
        "image_shape": [int(value("img_channels")), resolution, resolution],
        "label_dim": int(attrs.get("label_dim", 0)),
        "sigma_min": value("sigma_min"),
        "sigma_max": value("sigma_max"),
        "use_fp16": bool(attrs.get("use_fp16", False)),
        "precond_class": class_name,
    }
    options.update({name: value(name) for name in _PRECOND_OPTIONS[kind]})
    if kind == "iddpm":
        if not isinstance(sigma_table, torch.Tensor):
            raise ValueError(f"{path}: iDDPMPrecond lacks its sigma table buffer 'u'")
        options["sigma_table"] = sigma_table.double().tolist()
    return options


# --- trusted: ordinary unpickling -----------------------------------------------------------


class EDMNetworkCall(nn.Module):
    """EDM's own network object behind cmbench's call: integer class labels become one-hot."""

    def __init__(self, model: nn.Module, label_dim: int):
        super().__init__()
        self.model = model
        self.label_dim = label_dim

    def forward(self, x, noise_labels, class_labels=None, s_noise_labels=None):
        if s_noise_labels is not None:
            raise ValueError("EDM networks have no target-time (s) input; s_noise_labels must be None")
        labels = None
        if not self.label_dim and class_labels is not None:
            raise ValueError("this EDM network is unconditional (label_dim 0) but class_labels were given")
        if self.label_dim:
            if class_labels is None:
                raise ValueError(f"this EDM network is class-conditional (label_dim {self.label_dim}); pass class_labels")
            indices = torch.as_tensor(class_labels, device=x.device).long().expand(x.shape[0])
            labels = F.one_hot(indices, self.label_dim).to(x.dtype)
        return self.model(x, noise_labels.reshape(-1).expand(x.shape[0]), labels)


def _load_trusted(data: bytes, path: Path, sha256: str, device) -> EDMPickle:
    try:
        importlib.import_module("torch_utils.persistence")
        importlib.import_module("dnnlib")
    except ImportError as err:
        raise ValueError(
            f"{path}: trust_pickle_code=True unpickles with EDM's own code, but {err.name or err} "
            "is not importable; put the EDM repository (github.com/NVlabs/edm) on PYTHONPATH"
        ) from err
    try:
        top = pickle.loads(data)
    except Exception as err:
        raise ValueError(f"{path}: ordinary unpickling failed: {type(err).__name__}: {err}") from err
    precond = _precond_of(top, path, nn.Module)
    class_name = type(precond).__name__
    kind = _preconditioning(class_name, path)
    model = getattr(precond, "model", None)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}: {class_name} has no 'model' network")
    options = _options(kind, vars(precond), getattr(precond, "u", None), class_name, path)
    options["network_class"] = type(model).__name__
    net = EDMNetworkCall(model, options["label_dim"])
    init_kwargs = getattr(model, "_init_kwargs", None) or {}
    return EDMPickle(
        net=net.eval().requires_grad_(False).to(device),
        preconditioning=kind,
        options=options,
        network_kwargs=dict(init_kwargs),
        sha256=sha256,
        path=path,
        trusted_code=True,
    )


__all__ = [
    "ALLOWED_GLOBALS",
    "EDMNetworkCall",
    "EDMPickle",
    "NETWORKS",
    "ObjectRecord",
    "PRECONDITIONERS",
    "RefusedGlobalError",
    "load_edm_pickle",
    "read_edm_records",
]
