"""Adapters that wrap a network into each family's maps.

Every wrapped network is called as ``net(x, noise_labels, class_labels)`` (CTM: ``net(x,
noise_labels, class_labels, s_noise_labels)``): ``x`` already scaled by c_in, ``noise_labels``
the model's :class:`~cmbench.models.preconditioning.TimeInput` of σ, integer class labels or
None, and for CTM the target time s. The adapter casts its inputs to the network's dtype and
returns the caller's dtype. With ``preconditioning: none`` (a user's network that is the map
itself) c_in = c_out = 1, c_skip = 0 and the noise labels are σ unless ``time_input`` says otherwise.

``precision`` runs the network under ``torch.autocast`` (fp16 or bf16; fp32, the default, runs
it as stored); ``compile`` wraps it in ``torch.compile``; ``channels_last`` stores its weights and
feeds it images in ``torch.channels_last`` memory format (NHWC, which cuDNN's fast convolutions
prefer; the values are the same up to the convolution algorithm's float rounding). Preconditioning
and samplers stay in the caller's dtype (float64 in cmbench's samplers) and layout either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..validate import Checker
from .base import ModelAdapter, NoiseRange, per_sample
from .preconditioning import SCALINGS, TimeInput, consistency_scalings

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
RUN_OPTIONS = ("precision", "compile", "channels_last")
"""A network model entry's keys that choose how the network runs; a suite's top-level keys of the
same names set every network model's default."""


def run_options(spec: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_OPTIONS` of a model entry with their defaults (keyword arguments of :class:`NetworkModel`)."""
    return {"precision": spec.get("precision", "fp32"), "compile": spec.get("compile", False),
            "channels_last": spec.get("channels_last", False)}


def validate_run_options(c: Checker, spec: dict[str, Any], path: str) -> None:
    c.choice(spec.get("precision", "fp32"), f"{path}.precision", PRECISIONS)
    for key in ("compile", "channels_last"):
        c.boolean(spec.get(key, False), f"{path}.{key}")


class NetworkModel(ModelAdapter):
    """Common plumbing: the network, its device/dtype, and label handling."""

    def __init__(
        self,
        net: nn.Module,
        image_shape: tuple[int, int, int],
        label_dim: int = 0,
        noise_range: NoiseRange = NoiseRange(),
        checkpoint_sha256: str | None = None,
        time_input: TimeInput = TimeInput(),
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__(image_shape, label_dim, noise_range, checkpoint_sha256)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.net = net.eval().requires_grad_(False)
        self.time_input = time_input
        self.precision = precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.net) if compile else self.net

    def to(self, device):
        self.net.to(device)
        return self

    @property
    def net_dtype(self) -> torch.dtype:
        """The dtype of the network's first floating-point parameter (float32 if it has none)."""
        return next((p.dtype for p in self.net.parameters() if p.is_floating_point()), torch.float32)

    def _call(self, x_in, sigma, labels, s=None) -> torch.Tensor:
        dtype = self.net_dtype
        args = (self._layout(x_in.to(dtype)), self.time_input(sigma).to(dtype), labels)
        if s is not None:
            args += (self.time_input(s).to(dtype),)
        autocast = PRECISIONS[self.precision]
        with torch.autocast(x_in.device.type, dtype=autocast, enabled=autocast is not None):
            out = self._forward(*args)
        return self._unlayout(_checked_output(out, x_in)).to(x_in.dtype)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the network's memory format (a no-op without ``channels_last``)."""
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def _unlayout(self, out: torch.Tensor) -> torch.Tensor:
        """The network's output back in the samplers' (contiguous) layout."""
        return out if self.memory_format == torch.contiguous_format else out.contiguous()


def _checked_output(out, x: torch.Tensor) -> torch.Tensor:
    """The network's output, which must be a tensor of ``x``'s shape (a user's network may return
    anything; say what came back instead of failing deep inside a sampler)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network returned a {type(out).__name__}; expected a tensor of shape {list(x.shape)}")
    if out.shape != x.shape:
        raise ValueError(f"the network returned shape {list(out.shape)} for input shape {list(x.shape)}; "
                         "expected the input's shape")
    return out


class EDMModel(NetworkModel):
    """A diffusion denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise) (Karras et al. 2022).

    ``preconditioning`` picks the coefficients of EDM's Table 1: ``edm`` (EDMPrecond, also
    openai's EDM teachers), ``vp`` or ``ve`` (the VPPrecond / VEPrecond baselines, whose time
    input is the matching :class:`TimeInput`), or ``none`` (the network is D itself).
    """

    family = "edm"
    maps = frozenset({"denoise", "ddim_x0"})

    def __init__(self, *args, preconditioning: str = "edm", **kwargs):
        if preconditioning not in SCALINGS:
            raise ValueError(f"preconditioning {preconditioning!r} is not one of {', '.join(SCALINGS)}")
        super().__init__(*args, **kwargs)
        self.preconditioning = preconditioning

    def denoise(self, x, sigma, labels=None):
        sig = per_sample(sigma, x)
        c_skip, c_out, c_in = SCALINGS[self.preconditioning](sig, self.sigma_data)
        return c_skip * x + c_out * self._call(c_in * x, sig, labels)


class ConsistencyModel(NetworkModel):
    """CD / CT consistency function f(x, σ) with the boundary condition f(x, σ_min) = x
    (``preconditioning: cm``, CM App. C), or a network that is f itself (``none``)."""

    maps = frozenset({"consistency"})

    def __init__(self, *args, family: str = "cd", preconditioning: str = "cm", **kwargs):
        if family not in ("cd", "ct"):
            raise ValueError(f"consistency family must be 'cd' or 'ct', got {family!r}")
        if preconditioning not in ("cm", "none"):
            raise ValueError(f"consistency preconditioning {preconditioning!r} is not one of cm, none")
        super().__init__(*args, **kwargs)
        self.family = family
        self.preconditioning = preconditioning

    def consistency(self, x, sigma, labels=None):
        sig = per_sample(sigma, x)
        if self.preconditioning == "none":
            return self._call(x, sig, labels)
        c_skip, c_out, c_in = consistency_scalings(sig, self.sigma_data, self.sigma_min)
        return c_skip * x + c_out * self._call(c_in * x, sig, labels)


class CTMModel(NetworkModel):
    """Consistency trajectory model (Kim et al. 2024).

    g(x, t, s) = c_skip(t)·x + c_out(t)·NN(c_in(t)·x, t, s) with EDM scalings;
    G(x, t, s) = (s/t)·x + (1 − s/t)·g(x, t, s); score access through D(x, t) = g(x, t, t).
    With ``preconditioning: none`` the network is g itself.
    """

    family = "ctm"
    maps = frozenset({"denoise", "consistency", "jump", "ddim_x0"})

    def __init__(self, *args, preconditioning: str = "edm", **kwargs):
        if preconditioning not in ("edm", "none"):
            raise ValueError(f"CTM preconditioning {preconditioning!r} is not one of edm, none")
        super().__init__(*args, **kwargs)
        self.preconditioning = preconditioning

    def _g(self, x, t, s, labels):
        t = per_sample(t, x)
        s = per_sample(s, x)
        c_skip, c_out, c_in = SCALINGS[self.preconditioning](t, self.sigma_data)
        return c_skip * x + c_out * self._call(c_in * x, t, labels, s)

    def jump(self, x, t, s, labels=None):
        ratio = per_sample(s, x) / per_sample(t, x)
        return ratio * x + (1.0 - ratio) * self._g(x, t, s, labels)

    def denoise(self, x, sigma, labels=None):
        return self._g(x, sigma, sigma, labels)

    def consistency(self, x, sigma, labels=None):
        return self.jump(x, sigma, torch.full_like(per_sample(sigma, x).reshape(-1), self.sigma_min), labels)


class GeneratorModel(NetworkModel):
    """A one-step generator: ``net(z, class_labels)`` maps a standard-normal latent z to an image in
    [-1, 1] (SiD, DMD2 and the like, whose own σ scaling of z belongs inside ``net``)."""

    family = "generator"
    maps = frozenset({"generate"})

    def generate(self, z, labels=None):
        autocast = PRECISIONS[self.precision]
        with torch.autocast(z.device.type, dtype=autocast, enabled=autocast is not None):
            out = self._forward(self._layout(z.to(self.net_dtype)), labels)
        return self._unlayout(_checked_output(out, z)).to(z.dtype)
