"""Editing tasks: a named, seeded degradation of a real image, and what an editing chain holds fixed.

Zero-shot editing (Song et al. 2023, Algorithm 4) writes a degradation as an invertible linear map
A and a mask Ω of the coefficients that are unknown: the measurement is y = A⁻¹[(A x)⊙(1 − Ω)],
and after every step the chain's known coefficients are put back. For the tasks here A is
orthogonal, so the known part is an orthogonal projection P (P x = A⁻¹[(A x)⊙(1 − Ω)]) and the
replacement is ``y + x − P x``:

- inpainting: A = I, Ω the missing pixels (a centre box, random pixels, half the image);
- colorization: per pixel, A is an orthogonal 3×3 matrix whose first column is the luminance
  weights (0.2989, 0.5870, 0.1140) normalised, Ω everything but that first coefficient (openai's
  ``iterative_colorization`` builds it by QR; the projection onto that one direction is the same);
- super-resolution ×k: per k×k patch, A is orthogonal with the constant vector first and Ω all but
  the patch mean (openai's ``iterative_superres``: the patch means are the low-resolution image).

Two tasks keep nothing exactly and instead start the chain part-way: denoising (y = x + σ·n, the
chain starts at σ from y itself) and stroke-guided editing (SDEdit, Meng et al. 2022: a coarse
stroke image, patch means quantised to a few colour levels, noised to σ and sampled from there).

Per image, the draws come from its own seed (:class:`~cmbench.seeds.SampleNoise`) after its latent
(and label): the random-pixel mask, then the denoising noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..models.base import NoiseRange
from ..seeds import SampleNoise

LUMINANCE = (0.2989, 0.5870, 0.1140)
"""The grey weights of openai/consistency_models' ``iterative_colorization`` (ITU-R BT.601)."""
HALF_SIDES = ("left", "right", "top", "bottom")
MASK_PARAMS = {"box": ("size",), "random": ("missing",), "half": ("side",)}
MASKS = tuple(MASK_PARAMS)

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Measurement:
    """What one batch's editing chain starts from and holds fixed (a :class:`~cmbench.samplers.chain.Chain`).

    ``observed``: y (float64, NCHW, data scale [-1, 1]); ``project``: P, the orthogonal projection
    onto the known part (None: nothing is held, the chain only starts from y); ``noisy_start``:
    the chain starts at y + σ_0·z (else at y itself, which carries its own noise); ``shown``: the
    degraded input as a picture (e.g. the grey image for colorization).
    """

    observed: torch.Tensor
    shown: torch.Tensor
    project: Projection | None
    noisy_start: bool = True

    def start(self, latents: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.observed + sigma * latents.to(torch.float64) if self.noisy_start else self.observed.clone()

    def replace(self, x: torch.Tensor, level: float, latents: torch.Tensor) -> torch.Tensor:
        """x with its known part replaced by y's, noised to ``level`` with the chain's start latents
        (P(y + level·z) = y + level·P z); at level 0 exactly y's, as in Algorithm 4."""
        if self.project is None:
            return x
        known = self.observed + level * self.project(latents.to(torch.float64)) if level else self.observed
        return x - self.project(x) + known

    def residual(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per image, the root mean square of P x − y over its values: ‖Ω̄⊙(A x − A y)‖ / √(C·H·W),
        0 (to rounding) for a chain that ends with the replacement; None when nothing is held."""
        if self.project is None:
            return None
        gap = self.project(x.to(torch.float64)) - self.observed
        return gap.pow(2).flatten(1).mean(1).sqrt()


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: its parameters with defaults, their checks, and how it measures a batch."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    measure: Callable[[torch.Tensor, SampleNoise, Mapping[str, Any]], Measurement]
    check: Callable[[Mapping[str, Any], tuple[int, int, int], NoiseRange], None]
    start_sigma: str = ""  # the parameter whose σ the chain starts at ("" : the sampler's own grid)


@dataclass(frozen=True)
class EditTask:
    """A task of a suite: its name (used in row ids), kind and parameters (defaults filled in)."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> TaskKind:
        return TASK_KINDS[self.kind]

    def check(self, image_shape: tuple[int, int, int], noise_range: NoiseRange) -> None:
        """Raise ValueError unless images of ``image_shape`` and a model of ``noise_range`` can run it."""
        self.spec.check(self.params, tuple(image_shape), noise_range)

    def measure(self, truth: torch.Tensor, noise: SampleNoise) -> Measurement:
        """The measurement of ``truth`` (float, NCHW in [-1, 1]) with the images' own draws."""
        return self.spec.measure(truth.to(torch.float64), noise, self.params)

    def noise_range(self, model: NoiseRange) -> NoiseRange:
        """The σ range the row's grid spans: the model's, or from the task's σ down (denoising, stroke)."""
        if not self.spec.start_sigma:
            return model
        return NoiseRange(model.sigma_min, float(self.params[self.spec.start_sigma]), model.sigma_data)


# --- projections -------------------------------------------------------------------------------

def mask_projection(keep: torch.Tensor) -> Projection:
    """P x = x ⊙ keep (keep: [B, 1, H, W] of 0/1, the known pixels, every channel)."""
    return lambda x: x * keep


def luminance_projection() -> Projection:
    """Per pixel, the projection onto the normalised luminance direction v: P x = v (v·x)."""
    weights = torch.tensor(LUMINANCE, dtype=torch.float64)
    v = weights / weights.norm()

    def project(x: torch.Tensor) -> torch.Tensor:
        u = v.to(x.device, x.dtype).reshape(1, 3, 1, 1)
        return u * (x * u).sum(1, keepdim=True)

    return project


def patch_mean_projection(factor: int) -> Projection:
    """Each factor × factor patch replaced by its mean (the projection onto patch-constant images)."""
    return lambda x: F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")


# --- the kinds ------------------------------------------------------------------------------------

def _keep_mask(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> torch.Tensor:
    batch, _, height, width = truth.shape
    keep = torch.ones(batch, 1, height, width, dtype=torch.float64, device=truth.device)
    mask = params["mask"]
    if mask == "box":
        h, w = _box_size(params["size"], height, width)
        top, left = (height - h) // 2, (width - w) // 2
        keep[..., top : top + h, left : left + w] = 0.0
    elif mask == "half":
        side = params["side"]
        if side in ("left", "right"):
            cols = slice(0, width // 2) if side == "left" else slice(width - width // 2, width)
            keep[..., :, cols] = 0.0
        else:
            rows = slice(0, height // 2) if side == "top" else slice(height - height // 2, height)
            keep[..., rows, :] = 0.0
    else:  # random: exactly round(missing · H · W) pixels, those with the smallest uniform draws
        count = round(params["missing"] * height * width)
        draws = noise.rand((height * width,)).to(truth.device)
        order = draws.argsort(dim=1)[:, :count]
        keep.view(batch, -1).scatter_(1, order, 0.0)
    return keep


def _box_size(size: float, height: int, width: int) -> tuple[int, int]:
    return round(size * height), round(size * width)


def _inpainting(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> Measurement:
    keep = _keep_mask(truth, noise, params)
    observed = truth * keep
    return Measurement(observed, observed + params["fill"] * (1.0 - keep), mask_projection(keep))


def _colorization(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> Measurement:
    project = luminance_projection()
    weights = torch.tensor(LUMINANCE, dtype=torch.float64, device=truth.device).reshape(1, 3, 1, 1)
    grey = (truth * weights).sum(1, keepdim=True).expand_as(truth)
    return Measurement(project(truth), grey, project)


def _superres(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> Measurement:
    project = patch_mean_projection(params["factor"])
    observed = project(truth)
    return Measurement(observed, observed, project)


def _denoising(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> Measurement:
    noisy = truth + params["sigma"] * noise.randn(truth.shape[1:], dtype=torch.float64).to(truth.device)
    return Measurement(noisy, noisy, None, noisy_start=False)


def _stroke(truth: torch.Tensor, noise: SampleNoise, params: Mapping[str, Any]) -> Measurement:
    levels = params["levels"] - 1
    coarse = patch_mean_projection(params["patch"])(truth).clamp(-1.0, 1.0)
    strokes = torch.round((coarse + 1.0) / 2.0 * levels) / levels * 2.0 - 1.0
    return Measurement(strokes, strokes, None)


def _check_inpainting(params: Mapping[str, Any], shape: tuple[int, int, int], noise_range: NoiseRange) -> None:
    _, height, width = shape
    if params["mask"] == "box":
        h, w = _box_size(params["size"], height, width)
        if min(h, w) < 1:
            raise ValueError(f"a centre box of size {params['size']} is empty on {height}×{width} images")
    if params["mask"] == "random" and round(params["missing"] * height * width) < 1:
        raise ValueError(f"missing: {params['missing']} of {height}×{width} pixels rounds to no pixel")


def _check_colorization(params: Mapping[str, Any], shape: tuple[int, int, int], noise_range: NoiseRange) -> None:
    if shape[0] != 3:
        raise ValueError(f"colorization needs RGB images (3 channels); these have {shape[0]}")


def _check_patch(key: str) -> Callable[[Mapping[str, Any], tuple[int, int, int], NoiseRange], None]:
    def check(params: Mapping[str, Any], shape: tuple[int, int, int], noise_range: NoiseRange) -> None:
        factor, (_, height, width) = params[key], shape
        if height % factor or width % factor:
            raise ValueError(f"{key} {factor} does not divide {height}×{width} images into whole patches")
        if key == "patch":
            _check_start(params, shape, noise_range)

    return check


def _check_start(params: Mapping[str, Any], shape: tuple[int, int, int], noise_range: NoiseRange) -> None:
    sigma = params["sigma"]
    if not noise_range.sigma_min < sigma <= noise_range.sigma_max:
        raise ValueError(f"sigma {sigma} is outside the model's noise range ({noise_range.sigma_min}, "
                         f"{noise_range.sigma_max}]; the chain starts there")


TASK_KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind("inpainting", "fill in masked pixels (centre box, random pixels or half the image)",
                 {"mask": "box", "size": 0.5, "missing": 0.5, "side": "right", "fill": 0.0},
                 _inpainting, _check_inpainting),
        TaskKind("colorization", "colour from the luminance (0.2989, 0.5870, 0.1140)", {}, _colorization,
                 _check_colorization),
        TaskKind("superres", "×factor super-resolution from patch means", {"factor": 4}, _superres,
                 _check_patch("factor")),
        TaskKind("denoising", "remove Gaussian noise of std sigma (the chain starts at sigma)", {"sigma": 0.5},
                 _denoising, _check_start, start_sigma="sigma"),
        TaskKind("stroke", "SDEdit from a coarse stroke image (patch means in a few colour levels) noised to sigma",
                 {"sigma": 10.0, "patch": 4, "levels": 6}, _stroke, _check_patch("patch"), start_sigma="sigma"),
    )
}

PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "mask": (lambda v: v in MASKS, " or ".join(MASKS)),
    "size": (lambda v: 0 < v < 1, "a fraction of the side in (0, 1)"),
    "missing": (lambda v: 0 < v < 1, "a fraction of the pixels in (0, 1)"),
    "side": (lambda v: v in HALF_SIDES, " or ".join(HALF_SIDES)),
    "fill": (lambda v: -1 <= v <= 1, "a value in [-1, 1] (Algorithm 4: 0; openai's inpainting demo: -1)"),
    "factor": (lambda v: v >= 2, "an integer ≥ 2"),
    "patch": (lambda v: v >= 1, "an integer ≥ 1"),
    "levels": (lambda v: v >= 2, "an integer ≥ 2"),
    "sigma": (lambda v: v > 0 and math.isfinite(v), "a positive number"),
}


def make_task(name: str, kind: str, params: Mapping[str, Any]) -> EditTask:
    """The task ``name`` of ``kind`` with ``params`` over the kind's defaults, after checking names,
    types and ranges (ValueError naming the parameter and what is accepted)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task {kind!r}; accepted: {', '.join(TASK_KINDS)}")
    defaults = TASK_KINDS[kind].defaults
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"task {kind} has no parameter(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(defaults) or 'none'}")
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, int) and not isinstance(default, bool):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not PARAM_RULES[key][0](value):
            raise ValueError(f"task {kind} parameter {key} = {value!r} is not accepted; expected {PARAM_RULES[key][1]}")
    full = {**defaults, **params}
    if kind == "inpainting":  # keep only what acts, so rows record what matters
        acting = ("mask", "fill", *MASK_PARAMS[full["mask"]])
        idle = sorted(set(params) - set(acting))
        if idle:
            raise ValueError(f"task {kind} parameter(s) {', '.join(idle)} do nothing with mask: {full['mask']}; "
                             f"it takes {', '.join(acting)}")
        full = {k: v for k, v in full.items() if k in acting}
    return EditTask(name, kind, full)
