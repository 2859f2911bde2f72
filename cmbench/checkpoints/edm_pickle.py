"""EDM's network snapshots (NVlabs/edm ``.pkl``), rebuilt without running the code they carry.

An EDM snapshot is a plain pickle of ``dict(ema=..., loss_fn=..., augment_pipe=...,
dataset_kwargs=...)`` (EDM ``training/training_loop.py``). Every network class in it was made
"persistent" (EDM ``torch_utils/persistence.py``): an instance pickles as a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class',
version=6, module_src=<the whole source of training/networks.py>, class_name=..., state=<the
instance __dict__>)``, and ordinary unpickling ``exec``\\ s ``module_src`` to rebuild the class.

This loader never does. A restricted :class:`pickle.Unpickler`
(:mod:`cmbench.checkpoints.edm_records`) resolves only the globals in :data:`ALLOWED_GLOBALS` (tensor and storage rebuilding, ``OrderedDict``, ``set``, torch's
module containers as inert records, numpy scalars, ``dnnlib``'s ``EasyDict`` as ``dict``) and
refuses anything else before it can be called; each persistent object becomes an
:class:`ObjectRecord` (its class name, constructor arguments, parameters, buffers and
submodules as data). From the record of ``ema`` -- a preconditioner (``EDMPrecond``,
``VPPrecond``, ``VEPrecond``, ``iDDPMPrecond``, or ECT's ``ECMPrecond``, whose snapshots ECT's
training loop writes as EDM's does) whose ``model`` is a ``SongUNet`` or
``DhariwalUNet`` -- cmbench builds its own class of the same name from the recorded
constructor arguments and loads the recorded weights with ``strict=True``; the
preconditioner's settings become plain ``options`` for the model adapter.

``trust_pickle_code=True`` is the explicit opt-in to ordinary unpickling, which runs the file's
code and needs EDM's ``torch_utils`` and ``dnnlib`` importable.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from cmbench.checkpoints.edm_records import (
    ALLOWED_GLOBALS,
    ObjectRecord,
    RefusedGlobalError,
    read_edm_records,
)
from cmbench.checkpoints.hashing import read_verified
from cmbench.checkpoints.native import _check_state_dict

PRECONDITIONERS = {"EDMPrecond": "edm", "VPPrecond": "vp", "VEPrecond": "ve", "iDDPMPrecond": "iddpm",
                   "ECMPrecond": "cm"}
"""EDM-codebase preconditioner class name -> cmbench's name for its preconditioning. ``ECMPrecond``
is ECT's (locuslab/ect ``training/networks.py``): in eval mode, the consistency-model scalings
with the σ_min it records (:func:`cmbench.models.preconditioning.consistency_scalings`)."""

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
    "cm": ("sigma_data",),
}
_INT_OPTIONS = ("M",)

@dataclass
class EDMPickle:
    """A network rebuilt from an EDM snapshot, and what its preconditioner said about it.

    ``net`` has cmbench's call ``net(x, noise_labels, class_labels=None, s_noise_labels=None)``
    with integer class labels. ``preconditioning`` is ``"edm"``, ``"vp"``, ``"ve"`` or
    ``"iddpm"`` (EDM Table 1; iDDPM's net outputs 2·C channels of which the first C are ε, and
    its c_noise is an index into ``options["sigma_table"]``), or ``"cm"`` (ECT's ``ECMPrecond``). ``options`` is plain data:
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
    data, sha256 = read_verified(path, expected_sha256, "EDM snapshot")
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
