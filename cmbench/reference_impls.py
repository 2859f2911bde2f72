"""The reference evaluators (torch-fidelity, clean-fid), imported for agreement tests and benchmarks.

Both libraries import torchvision at package import time, and the PyPI torchvision wheel does not
load against the CPU build of torch (``operator torchvision::nms does not exist``). Nothing they
compute from features needs torchvision, so :func:`without_torchvision` serves every
``torchvision`` module as an empty stand-in for the duration of the import: names looked up on it
are placeholder classes, enough for class definitions to run, useless for anything else. The
stand-ins are removed again afterwards, so a later real ``import torchvision`` is unaffected.

cmbench itself never imports these libraries; only tests and ``benchmarks/`` do.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


class _Placeholder(type):
    """A class whose missing attributes are further placeholder classes (``models.inception.InceptionA``)."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def missing(attribute: str) -> type:
            if attribute.startswith("__"):
                raise AttributeError(attribute)
            return _Placeholder(attribute, (), {})

        module.__getattr__ = missing
        return module

    def exec_module(self, module) -> None:
        pass


@contextmanager
def without_torchvision() -> Iterator[None]:
    """Import inside this block with every ``torchvision`` module replaced by a stand-in."""
    finder = _TorchvisionStandIn()
    saved = {name: module for name, module in sys.modules.items() if name == "torchvision" or name.startswith("torchvision.")}
    for name in saved:
        del sys.modules[name]
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def import_reference(module: str) -> types.ModuleType:
    """``importlib.import_module(module)`` for a torch-fidelity or clean-fid module, without torchvision."""
    with without_torchvision():
        return importlib.import_module(module)
