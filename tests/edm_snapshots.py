"""Writing EDM-style ``.pkl`` snapshots in tests, the way EDM's persistence writes them.

Every network object pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with the module source, class name and instance ``__dict__`` in ``meta``; torch containers and
tensors pickle as usual. The reconstruct function here only names the global for pickle: it is
never called, because cmbench's loader never runs it.
"""

import contextlib
import pickle
import sys
import types

from torch import nn


def _reconstruct_persistent_obj(meta):  # named for pickle only; never called in these tests
    raise AssertionError("the test's reconstruct stand-in must not be called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


@contextlib.contextmanager
def fake_persistence_module():
    """Make ``torch_utils.persistence._reconstruct_persistent_obj`` nameable by pickle."""
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


class EDMStylePickler(pickle.Pickler):
    """Pickles modules the way EDM's persistent classes reduce; containers and tensors as usual."""

    def __init__(self, file, src, names, init_kwargs, protocol):
        super().__init__(file, protocol=protocol)
        self.src, self.names, self.init_kwargs = src, names, init_kwargs

    def reducer_override(self, obj):
        if not isinstance(obj, nn.Module) or isinstance(obj, (nn.ModuleDict, nn.ModuleList, nn.Sequential)):
            return NotImplemented
        state = dict(obj.__dict__, _init_args=(), _init_kwargs=self.init_kwargs.get(id(obj), {}))
        meta = dict(type="class", version=6, module_src=self.src,
                    class_name=self.names.get(id(obj), type(obj).__name__), state=state)
        return _reconstruct_persistent_obj, (meta,)


def write_snapshot(path, precond, net_name, net_kwargs, *, src, precond_name="VPPrecond",
                   protocol=4, top="dict"):
    names = {id(precond): precond_name, id(precond.model): net_name}
    kwargs = {id(precond.model): net_kwargs, id(precond): {"img_resolution": 8}}
    payload = precond
    if top == "dict":
        payload = dict(ema=precond, loss_fn=None, augment_pipe=None,
                       dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="x"))
    with fake_persistence_module(), open(path, "wb") as f:
        EDMStylePickler(f, src, names, kwargs, protocol).dump(payload)
    return path


