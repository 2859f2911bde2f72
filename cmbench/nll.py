"""``cmbench nll``: bits/dim (or nats/dim) of a data set under a model's probability-flow ODE.

Two likelihood protocols (docs/likelihood.md):

- ``exact`` (default): cmbench's PF-ODE bits/dim (:mod:`cmbench.likelihood`). Discrete data follow
  score_sde: every pass dequantises each uint8 image afresh ((v + U)/256, scaled to [−1, 1]).
  ``--continuous`` takes float images in [−1, 1] as they are and reports nats/dim.
- ``ctm_eval_bpd``: sony/ctm's ``code/eval_bpd.py`` estimator as CTM runs it
  (:mod:`cmbench.likelihood_ctm`), for comparing with CTM's published bits/dim; uint8 data only.

An image's number is its mean over passes; the result is the mean over images with its standard
error. Under ``torchrun`` the ranks share the batches and the result is one process's, bit for bit
(:func:`evaluate_nll`).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .console import progress_bar
from .distributed import SINGLE, World
from .likelihood import dequantise, hutchinson_probe, pf_ode_log_likelihood
from .likelihood_ctm import CTMEvalBPD, ctm_draws, ctm_eval_bpd_log_likelihood, ctm_scale
from .models.base import ModelAdapter

TOY_PREFIX = "toy:"


def load_images(spec: str, continuous: bool) -> torch.Tensor:
    """NCHW images from ``toy:<split>`` or an .npz whose ``arr_0`` is NHWC (uint8, or float with
    ``continuous``)."""
    if spec.startswith(TOY_PREFIX):
        from .zoo.toy.data import load_toy

        images = load_toy(spec[len(TOY_PREFIX):])[0]
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} not found (give an .npz with arr_0, or toy:train / toy:test)")
        array = _read_arr_0(path)
        if array.ndim != 4 or not len(array):
            raise ValueError(f"{path}: arr_0 must be NHWC images (at least one), got shape {array.shape}")
        images = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    if continuous and images.dtype == torch.uint8:
        raise ValueError(f"{spec}: --continuous expects float images in [-1, 1], got uint8 (drop --continuous)")
    if not continuous and images.dtype != torch.uint8:
        raise ValueError(f"{spec}: images are {images.dtype}; uint8 images are dequantised, float ones need --continuous")
    return images


def _read_arr_0(path: Path) -> np.ndarray:
    """``arr_0`` of an .npz, as plain numbers; anything else is a ValueError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it is a single .npy array, not an .npz")
            if "arr_0" not in data.files:
                raise ValueError(f"it has no arr_0 (it has {', '.join(data.files) or 'nothing'})")
            array = data["arr_0"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read NHWC images from arr_0 ({err}); give an .npz written by "
                         "numpy.savez with uint8 (or float) images in arr_0, or toy:train / toy:test") from None
    if array.dtype.kind not in "uif":
        raise ValueError(f"{path}: arr_0 holds {array.dtype} values; images must be uint8 or float")
    return array


@dataclass(frozen=True)
class ExactProtocol:
    """cmbench's own bits/dim: the PF-ODE log-likelihood of uniformly dequantised data (score_sde)."""

    name: ClassVar[str] = "exact"
    divergence: str = "hutchinson"
    rtol: float = 1e-5
    atol: float = 1e-5

    def settings(self) -> dict:
        return {"divergence": self.divergence, "rtol": self.rtol, "atol": self.atol}


LikelihoodProtocol = ExactProtocol | CTMEvalBPD
PROTOCOLS = (ExactProtocol.name, CTMEvalBPD.name)


def make_protocol(name: str, *, divergence: str | None = None, rtol: float | None = None,
                  atol: float | None = None) -> LikelihoodProtocol:
    """The likelihood protocol called ``name``. ``divergence``, ``rtol`` and ``atol`` (None: the
    default) tune ``exact``; ``ctm_eval_bpd`` runs with CTM's own and refuses them."""
    if name == CTMEvalBPD.name:
        given = [key for key, value in (("divergence", divergence), ("rtol", rtol), ("atol", atol)) if value is not None]
        if given:
            raise ValueError(f"protocol {name} fixes {', '.join(given)} (Hutchinson probes, RK45 rtol = atol = 1e-3, "
                             f"as CTM's eval_bpd.py); leave {'them' if len(given) > 1 else 'it'} out, or use protocol exact")
        return CTMEvalBPD()
    if name != ExactProtocol.name:
        raise ValueError(f"unknown likelihood protocol {name!r}; accepted: {', '.join(PROTOCOLS)}")
    default = ExactProtocol()
    return ExactProtocol(default.divergence if divergence is None else divergence,
                         default.rtol if rtol is None else rtol, default.atol if atol is None else atol)


def protocol_from_spec(spec: dict) -> LikelihoodProtocol:
    """The protocol of a parsed suite ``likelihood:`` block; a block without ``protocol`` is ``exact``
    (the parser leaves the default out, so suites written before protocols keep their fingerprints)."""
    return make_protocol(spec.get("protocol", ExactProtocol.name), divergence=spec.get("divergence"),
                         rtol=spec.get("rtol"), atol=spec.get("atol"))


def evaluate_nll(
    model: ModelAdapter,
    images: torch.Tensor,
    protocol: LikelihoodProtocol,
    *,
    continuous: bool,
    passes: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool | None = None,
    source: str = "data",
    world: World = SINGLE,
) -> dict:
    """Per-image bits/dim (nats/dim when continuous) under ``protocol``, averaged over passes; their
    mean and its standard error. Pass p seeds the dequantisation with ``seed + p`` and the solver's
    draws (Hutchinson probes; CTM's noise) with ``seed + 1_000_003 + p``.

    Under ``world`` each rank solves its contiguous share of the batches of ``batch_size`` images
    (``world.part``); the numbers are one process's, bit for bit, whatever the world size.
    Two things make it so: the RK45 step control of a solve is shared by its whole batch, so ranks
    solve exactly the batches one process would; and a rank dequantises every image as one process
    does and replays the draws of the batches before its share (:func:`_skip_draws`), so each batch
    sees the same random numbers. The per-image values go to the main rank, which summarises them;
    every rank returns the main rank's dict (:meth:`World.share`), so callers need not ask which rank
    they are on."""
    if tuple(images.shape[1:]) != model.image_shape:
        raise ValueError(f"{source}: images are {tuple(images.shape[1:])} (CHW), the model makes {model.image_shape}")
    if continuous and isinstance(protocol, CTMEvalBPD):
        raise ValueError("the ctm_eval_bpd protocol scores uint8 images (x = v/127.5 - 1, as CTM's eval_bpd.py); "
                         "drop --continuous, or use protocol exact")
    passes = 1 if continuous else passes
    batches = world.part(math.ceil(len(images) / batch_size))
    share = _solve_share(model, images, protocol, continuous=continuous, passes=passes, batch_size=batch_size,
                         seed=seed, device=device, batches=batches, progress=progress)
    shares = world.gather(share)
    summary = None
    if world.main:
        summary = _summary(shares, continuous=continuous, passes=passes)
        summary.update({"protocol": protocol.name, **protocol.settings(), "seed": seed,
                        "checkpoint_sha256": model.checkpoint_sha256, "family": model.family})
    return world.share(summary)


@dataclass(frozen=True)
class _Share:
    """One rank's part of the work: the per-image values of its images in order (float64), and how
    many solves it ran with how many drift evaluations in all."""

    per_image: np.ndarray
    solves: int
    nfe: int


def _solve_share(model: ModelAdapter, images: torch.Tensor, protocol: LikelihoodProtocol, *, continuous: bool,
                 passes: int, batch_size: int, seed: int, device: torch.device, batches: range,
                 progress: bool | None) -> _Share:
    """The per-image values of the images in batches ``batches``, averaged over passes."""
    first, stop = batches.start * batch_size, min(batches.stop * batch_size, len(images))
    per_image = torch.zeros(max(stop - first, 0), dtype=torch.float64)
    if not batches:  # more ranks than batches: nothing to solve here
        return _Share(per_image.numpy(), 0, 0)
    dim = images[0].numel()
    solves, nfe_total = 0, 0
    bar = progress_bar(progress=progress, total=passes * len(per_image), desc="nll", unit="img")
    for p in range(passes):
        noise = torch.Generator().manual_seed(seed + p)
        draws = torch.Generator().manual_seed(seed + 1_000_003 + p)
        x_all = images.to(torch.float64) if continuous else _scaled(images, protocol, noise)
        for number in range(batches.stop):
            start = number * batch_size
            x = x_all[start : start + batch_size]
            if number < batches.start:
                _skip_draws(protocol, x.shape, draws)
                continue
            result = _log_likelihood(model, x.to(device), protocol, draws)
            value = result.nats_per_dim(dim) if continuous else result.bits_per_dim(dim)
            per_image[start - first : start - first + len(x)] += value.cpu() / passes
            solves, nfe_total = solves + 1, nfe_total + result.nfe
            bar.update(len(x))
    bar.close()
    return _Share(per_image.numpy(), solves, nfe_total)


def _summary(shares: list[_Share], *, continuous: bool, passes: int) -> dict:
    """Mean and standard error of the per-image values of all ranks' shares, in rank order (the
    images' order), and the mean NFE per solve."""
    per_image = torch.from_numpy(np.concatenate([share.per_image for share in shares]))
    solves, nfe_total = sum(share.solves for share in shares), sum(share.nfe for share in shares)
    unit = "nats_per_dim" if continuous else "bpd"
    return {
        unit: float(per_image.mean()),
        "stderr": float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1 else None,
        "num_images": len(per_image), "passes": passes, "nfe_mean": nfe_total / solves,
    }


def _skip_draws(protocol: LikelihoodProtocol, shape: torch.Size, draws: torch.Generator) -> None:
    """Advance ``draws`` past what one solve of a batch of ``shape`` draws under ``protocol``, by
    making the same draws (cheap next to a solve; torch's CPU generator has no way to jump ahead)."""
    if isinstance(protocol, CTMEvalBPD):
        ctm_draws(shape, draws)
    elif protocol.divergence == "hutchinson":
        hutchinson_probe(shape, draws)


def _scaled(images: torch.Tensor, protocol: LikelihoodProtocol, noise: torch.Generator) -> torch.Tensor:
    """uint8 images as the protocol feeds them to the ODE: dequantised (exact) or v/127.5 − 1 (CTM)."""
    return ctm_scale(images) if isinstance(protocol, CTMEvalBPD) else dequantise(images, noise)


def _log_likelihood(model: ModelAdapter, x: torch.Tensor, protocol: LikelihoodProtocol, draws: torch.Generator):
    if isinstance(protocol, CTMEvalBPD):
        return ctm_eval_bpd_log_likelihood(model, x, protocol, generator=draws)
    return pf_ode_log_likelihood(model, x, divergence=protocol.divergence, rtol=protocol.rtol, atol=protocol.atol,
                                 generator=draws)
