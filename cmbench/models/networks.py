"""Adapters that wrap a network into each family's maps.

Every wrapped network has the call ``net(x, noise_labels, class_labels=None,
s_noise_labels=None)``: ``x`` already scaled by c_in, ``noise_labels`` the model's
:class:`~cmbench.models.preconditioning.TimeInput` of σ, integer class labels, and for CTM the
target time s. The adapter casts its inputs to the network's dtype and returns the caller's dtype.

``precision`` runs the network under ``torch.autocast`` (fp16 or bf16; fp32, the default, runs
it as stored); ``compile`` wraps it in ``torch.compile``. Preconditioning and samplers stay in
the caller's dtype (float64 in cmbench's samplers) either way.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelAdapter, NoiseRange, per_sample
from .preconditioning import SCALINGS, TimeInput, consistency_scalings, edm_scalings

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    ):
        super().__init__(image_shape, label_dim, noise_range, checkpoint_sha256)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.net = net.eval().requires_grad_(False)
        self.time_input = time_input
        self.precision = precision
        self._forward = torch.compile(self.net) if compile else self.net

    def to(self, device):
        self.net.to(device)
        return self

    @property
    def net_dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def _call(self, x_in, sigma, labels, s=None) -> torch.Tensor:
        dtype = self.net_dtype
        t_label = self.time_input(sigma).to(dtype)
        s_label = None if s is None else self.time_input(s).to(dtype)
        autocast = PRECISIONS[self.precision]
        with torch.autocast(x_in.device.type, dtype=autocast, enabled=autocast is not None):
            out = self._forward(x_in.to(dtype), t_label, labels, s_label)
        return out.to(x_in.dtype)


class EDMModel(NetworkModel):
    """A diffusion denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise) (Karras et al. 2022).

    ``preconditioning`` picks the coefficients of EDM's Table 1: ``edm`` (EDMPrecond, also
    openai's EDM teachers), ``vp`` or ``ve`` (the VPPrecond / VEPrecond baselines, whose time
    input is the matching :class:`TimeInput`).
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
    """CD / CT consistency function f(x, σ) with the boundary condition f(x, σ_min) = x."""

    maps = frozenset({"consistency"})

    def __init__(self, *args, family: str = "cd", **kwargs):
        if family not in ("cd", "ct"):
            raise ValueError(f"consistency family must be 'cd' or 'ct', got {family!r}")
        super().__init__(*args, **kwargs)
        self.family = family

    def consistency(self, x, sigma, labels=None):
        sig = per_sample(sigma, x)
        c_skip, c_out, c_in = consistency_scalings(sig, self.sigma_data, self.sigma_min)
        return c_skip * x + c_out * self._call(c_in * x, sig, labels)


class CTMModel(NetworkModel):
    """Consistency trajectory model (Kim et al. 2024).

    g(x, t, s) = c_skip(t)·x + c_out(t)·NN(c_in(t)·x, t, s) with EDM scalings;
    G(x, t, s) = (s/t)·x + (1 − s/t)·g(x, t, s); score access through D(x, t) = g(x, t, t).
    """

    family = "ctm"
    maps = frozenset({"denoise", "consistency", "jump", "ddim_x0"})

    def _g(self, x, t, s, labels):
        t = per_sample(t, x)
        s = per_sample(s, x)
        c_skip, c_out, c_in = edm_scalings(t, self.sigma_data)
        return c_skip * x + c_out * self._call(c_in * x, t, labels, s)

    def jump(self, x, t, s, labels=None):
        ratio = per_sample(s, x) / per_sample(t, x)
        return ratio * x + (1.0 - ratio) * self._g(x, t, s, labels)

    def denoise(self, x, sigma, labels=None):
        return self._g(x, sigma, sigma, labels)

    def consistency(self, x, sigma, labels=None):
        return self.jump(x, sigma, torch.full_like(per_sample(sigma, x).reshape(-1), self.sigma_min), labels)
