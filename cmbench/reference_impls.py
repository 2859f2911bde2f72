"""The reference evaluators (torch-fidelity, clean-fid), imported for agreement tests and benchmarks.

Both libraries import torchvision at package import (datasets, the CLIP/DINOv2/VGG extractors,
clean-fid's Inception wrappers), and the PyPI torchvision wheel does not load against the CPU
build of torch (``operator torchvision::nms does not exist``). What cmbench compares against
(torch-fidelity's Inception-v3 extractor, its FID/IS/KID/PRC functions, clean-fid's
``frechet_distance`` and ``kernel_distance``) uses no torchvision, so :func:`torchvision_stubbed`
serves ``torchvision`` and every ``torchvision.*`` module as an empty package whose missing
attributes are inert dummy classes (``from torchvision.datasets import CIFAR10`` and
``torchvision.models.inception.InceptionA`` resolve, and fail only if called). Afterwards the
finder, the stubbed modules and the modules named in ``dependents`` (imported under the stub)
are removed again, so no stand-in leaks into anything else.

diffusers (the reference for the ``diffusers`` checkpoint format) imports torchvision too;
:func:`diffusers_imported` keeps the same stub in place while it is used.

lpips (the reference for cmbench's LPIPS) imports torchvision's AlexNet and VGG16 to build its trunk;
:func:`lpips_imported` serves the trunks a test provides in their place.

cmbench itself never imports these libraries; only tests and ``benchmarks/`` do.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STUBBED = "torchvision"


class _DummyMeta(type):
    """Any attribute of a dummy class that is not there is another dummy class."""

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _dummy(f"{cls.__qualname__}.{name}")


def _dummy(name: str) -> type:
    def refuse(self, *args, **kwargs):
        raise RuntimeError(f"{name} is a stand-in from cmbench.reference_impls; torchvision is not available")

    return _DummyMeta(name, (), {"__init__": refuse, "__call__": refuse})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _dummy(f"{self.__name__}.{name}")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []  # a package, so that any submodule can be imported from it
        return module

    def exec_module(self, module) -> None:
        module.__version__ = "0.0.0+stub"


class _StubFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == STUBBED or fullname.startswith(STUBBED + "."):
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@contextmanager
def torchvision_stubbed(dependents: tuple[str, ...] = ("torch_fidelity",)) -> Iterator[None]:
    """Within the block, ``import torchvision[.*]`` gives stub packages; afterwards all is undone.

    ``dependents``: packages to import only inside the block; their modules are set aside on
    entry and dropped on exit (with the stubs), and whatever was there before is put back.
    """
    packages = (STUBBED, *dependents)
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _under(name, packages)}
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if _under(name, packages)]:
            del sys.modules[name]
        sys.modules.update(saved)


def import_reference(module: str) -> types.ModuleType:
    """``importlib.import_module(module)`` (a torch-fidelity or clean-fid module) under the stub.

    The returned module keeps working; it is not left in ``sys.modules``.
    """
    package = module.split(".")[0]
    with torchvision_stubbed(dependents=(package,)):
        return importlib.import_module(module)


@contextmanager
def diffusers_imported() -> Iterator[types.ModuleType]:
    """The ``diffusers`` package, imported under the stub for the duration of the block.

    diffusers imports its submodules lazily, on attribute access and inside its methods (saving a
    pipeline looks up every model class), so whatever uses it runs inside the block; afterwards no
    diffusers module and no stub is left in ``sys.modules``.
    """
    with torchvision_stubbed(dependents=("diffusers",)):
        yield importlib.import_module("diffusers")


@contextmanager
def lpips_imported(
    *, alexnet: Callable[..., object] | None = None, vgg16: Callable[..., object] | None = None
) -> Iterator[types.ModuleType]:
    """The ``lpips`` package, imported under the stub, with the trunks the caller provides.

    lpips builds its trunk as ``torchvision.models.alexnet(pretrained=...).features`` (or
    ``vgg16``); in the stub those names are replaced by ``alexnet`` / ``vgg16`` (callables taking
    ``pretrained`` and returning a module with torchvision's ``features``); one left out stays a
    stand-in that refuses to run. Afterwards no lpips module and no stub is left in ``sys.modules``.
    """
    with torchvision_stubbed(dependents=("lpips",)):
        models = importlib.import_module("torchvision.models")  # the submodule, not a dummy attribute
        for name, factory in (("alexnet", alexnet), ("vgg16", vgg16)):
            if factory is not None:
                setattr(models, name, factory)
        yield importlib.import_module("lpips")
