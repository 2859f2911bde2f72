"""Progressive distillation (Salimans & Ho 2022) in its own variance-preserving parameterisation.

The network sees z = α·x_ve at VE noise level σ (α = 1/√(1+σ²), σ_vp = σ·α, logsnr = −2 ln σ) and
predicts ``v`` (x̂ = α·z − σ_vp·v), ``x`` (x̂ directly) or ``eps`` (x̂ = (z − σ_vp·ε̂)/α).
With ``edm`` the network is instead EDM-preconditioned on the VE variable, x̂ = D(x_ve; σ), as in
the consistency-models paper's reimplementation of PD (and cmbench's toy PD students).
A student (distilled to a few DDIM steps) offers only its DDIM prediction, valid on its own grid;
a teacher is a full diffusion model and so also a denoiser with score access.
"""

from __future__ import annotations

from .base import per_sample
from .networks import NetworkModel
from .preconditioning import edm_scalings

PREDICTIONS = ("v", "x", "eps", "edm")
ROLES = ("student", "teacher")


class ProgressiveDistillationModel(NetworkModel):
    family = "pd"

    def __init__(self, *args, prediction: str = "v", role: str = "student", **kwargs):
        if prediction not in PREDICTIONS:
            raise ValueError(f"PD prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
        if role not in ROLES:
            raise ValueError(f"PD role {role!r} is not one of {', '.join(ROLES)}")
        super().__init__(*args, **kwargs)
        self.prediction = prediction
        self.role = role
        self.maps = frozenset({"ddim_x0", "denoise"} if role == "teacher" else {"ddim_x0"})

    def ddim_x0(self, x, sigma, labels=None):
        sig = per_sample(sigma, x)
        if self.prediction == "edm":
            c_skip, c_out, c_in = edm_scalings(sig, self.sigma_data)
            return c_skip * x + c_out * self._call(c_in * x, sig, labels)
        alpha = 1.0 / (1.0 + sig**2).sqrt()
        sigma_vp = sig * alpha
        z = alpha * x
        out = self._call(z, sig, labels)
        if self.prediction == "v":
            return alpha * z - sigma_vp * out
        if self.prediction == "x":
            return out
        return (z - sigma_vp * out) / alpha

    def denoise(self, x, sigma, labels=None):
        if self.role != "teacher":
            raise self.missing_map("denoise")
        return self.ddim_x0(x, sigma, labels)
