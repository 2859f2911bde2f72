"""Training the toy zoo: an EDM teacher, then CD, CT, CTM and PD students, on the toy digits.

``cmbench zoo train-toy --out DIR`` runs everything and writes one native checkpoint per model
plus ``manifest.json`` (sha256, seeds, steps, seconds). Every model's randomness comes from its
own seed, so a run is reproducible on the same software (bit-exact only on the same machine).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ... import __version__
from ...atomic import atomic_write_text
from ...checkpoints import save_native
from ...console import progress_bar
from ...images import from_uint8
from ...models.base import NoiseRange
from ...models.networks import ConsistencyModel, CTMModel, EDMModel
from ...models.pd import ProgressiveDistillationModel
from ...nets import build_network
from . import losses
from .data import IMAGE_SHAPE, load_toy

NET_ARCH = "toy_mlp"
NOISE_RANGE = NoiseRange(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
# PD runs DDIM on the cosine log-SNR grid restricted to the teacher's σ range [σ_min, σ_max].
PD_LOGSNR = (-2 * math.log(NOISE_RANGE.sigma_max), -2 * math.log(NOISE_RANGE.sigma_min))
PD_KEEP = (4, 2, 1)
LR_DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class ToyZooConfig:
    seed: int = 0
    batch_size: int = 256
    net: dict = field(default_factory=lambda: {"img_resolution": 8, "img_channels": 1, "hidden": 256, "depth": 3, "emb_dim": 64})
    eval_ema: float = 0.999          # EMA of the online weights that is evaluated (all families)
    # 80k steps with a cosine-decayed learning rate: at 20k (constant or cosine) the teacher's
    # converged ODE was less diverse than the data and its Heun FID rose from NFE 17 to 35
    # (recipes compared in benchmarks/toy_teacher_variants.md).
    edm_steps: int = 80000
    edm_lr: float = 1e-3
    edm_lr_decay: str = "cosine"     # "cosine" (to 0 over edm_steps) or "none"
    cd_steps: int = 3000
    cd_lr: float = 4e-4              # the CM paper's CD learning rate (CIFAR-10)
    cd_target_ema: float = 0.95      # μ of the CD target network (CM paper, CIFAR-10)
    cd_grid: int = 18                # N of the Karras grid (CM paper, CIFAR-10)
    ct_steps: int = 8000
    ct_lr: float = 4e-4
    ct_s0: int = 2
    # The paper's s1 = 150 is for 800k iterations; over 8k the grid would reach 48 points within
    # 200 steps, adjacent levels would be too close to teach anything and f collapses to a
    # near-constant. s1 = 20 keeps the schedule's shape over the toy's length.
    ct_s1: int = 20
    ct_mu0: float = 0.9
    ctm_steps: int = 6000
    ctm_lr: float = 4e-4
    ctm_target_ema: float = 0.95     # as CD: a 0.999 target bootstraps long jumps too slowly here
    ctm_grid: int = 18               # N of the Karras grid t and s are drawn from (jittered)
    ctm_dsm_weight: float = 0.1      # keeps g(x,t,t) a good denoiser without drowning the matching
    pd_first_student_steps: int = 32  # the EDM teacher runs 64 DDIM steps for the first stage
    pd_steps_per_stage: int = 1500
    pd_lr: float = 2e-4


def train_toy_zoo(out_dir: str | Path, config: ToyZooConfig = ToyZooConfig(), *, overwrite: bool = False,
                  progress: bool | None = None) -> dict:
    """Train every family and write checkpoints and ``manifest.json`` into ``out_dir``."""
    out = Path(out_dir)
    images = from_uint8(load_toy("train")[0])
    trainer = _Trainer(images, config, progress)
    started = time.perf_counter()
    entries = {}

    def save(name: str, adapter, family: str, options: dict, seed: int, steps: int, seconds: float) -> None:
        sha = save_native(
            out / f"{name}.pt", adapter.net, arch=NET_ARCH, arch_kwargs=_arch_kwargs(adapter.net, config),
            family=family, model_options={"image_shape": list(IMAGE_SHAPE), **asdict(NOISE_RANGE), **options},
            meta={"zoo": "toy", "seed": seed, "steps": steps, "seconds": round(seconds, 1), "cmbench_version": __version__},
            overwrite=overwrite, storage_dtype=torch.float16,  # shipped in the package: half the size
        )
        entries[name] = {"file": f"{name}.pt", "sha256": sha, "family": family, "options": options,
                         "seed": seed, "steps": steps, "seconds": round(seconds, 1)}

    edm, seconds = trainer.edm(seed=config.seed)
    save("edm", edm, "edm", {}, config.seed, config.edm_steps, seconds)
    cd, seconds = trainer.cd(edm, seed=config.seed + 1)
    save("cd", cd, "cd", {}, config.seed + 1, config.cd_steps, seconds)
    ct, seconds = trainer.ct(seed=config.seed + 2)
    save("ct", ct, "ct", {}, config.seed + 2, config.ct_steps, seconds)
    ctm, seconds = trainer.ctm(edm, seed=config.seed + 3)
    save("ctm", ctm, "ctm", {}, config.seed + 3, config.ctm_steps, seconds)
    for steps, (student, seconds) in trainer.pd(edm, seed=config.seed + 4).items():
        if steps in PD_KEEP:
            save(f"pd{steps}", student, "pd", {"prediction": "edm", "role": "student"}, config.seed + 4,
                 config.pd_steps_per_stage, seconds)

    manifest = {
        "zoo": "toy", "cmbench_version": __version__, "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "total_seconds": round(time.perf_counter() - started, 1),
        "config": asdict(config), "pd_logsnr": list(PD_LOGSNR), "models": entries,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n", overwrite=overwrite)
    return manifest


def _arch_kwargs(net, config: ToyZooConfig) -> dict:
    return {**config.net, "s_embedding": bool(getattr(net, "s_embedding", False))}


def learning_rate(base: float, step: int, steps: int, decay: str) -> float:
    """The learning rate at ``step`` of ``steps``: constant (``none``) or cosine-decayed to 0."""
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown lr_decay {decay!r}; accepted: {', '.join(LR_DECAYS)}")
    return base * 0.5 * (1 + math.cos(math.pi * step / steps)) if decay == "cosine" else base


def trainable(adapter):
    """Adapters freeze their network for evaluation; training needs it back."""
    adapter.net.train().requires_grad_(True)
    return adapter


def frozen_copy(adapter):
    twin = copy.deepcopy(adapter)
    twin.net.eval().requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(ema, online, rate: float) -> None:
    for p_ema, p in zip(ema.net.parameters(), online.net.parameters()):
        p_ema.lerp_(p, 1.0 - rate)


class _Trainer:
    """The shared loop: Adam, an evaluation EMA, seeded batches and noise, a progress bar."""

    def __init__(self, images: torch.Tensor, config: ToyZooConfig, progress: bool | None):
        self.images, self.config, self.progress = images, config, progress

    def fit(self, name: str, online, steps: int, lr: float, seed: int,
            loss_fn: Callable[[torch.Tensor, torch.Generator, int], torch.Tensor],
            after_step: Callable[[int], None] = lambda k: None, lr_decay: str = "none") -> tuple[object, float, list[float]]:
        """Train ``online`` with ``loss_fn(x0, generator, step)``; return its EMA, seconds, losses."""
        learning_rate(lr, 0, steps, lr_decay)  # an unknown decay fails before any work
        generator = torch.Generator().manual_seed(seed)
        trainable(online)
        ema = frozen_copy(online)
        optimiser = torch.optim.Adam(online.net.parameters(), lr=lr)
        history, start = [], time.perf_counter()
        bar = progress_bar(range(steps), progress=self.progress, desc=f"train {name}", leave=False)
        for step in bar:
            optimiser.param_groups[0]["lr"] = learning_rate(lr, step, steps, lr_decay)
            index = torch.randint(0, len(self.images), (self.config.batch_size,), generator=generator)
            loss = loss_fn(self.images[index], generator, step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            ema_update(ema, online, self.config.eval_ema)
            after_step(step)
            history.append(loss.detach().item())
            if step % 100 == 0:
                bar.set_postfix(loss=f"{sum(history[-100:]) / len(history[-100:]):.4f}")
        return ema, time.perf_counter() - start, history

    def _new_net(self, seed: int, **overrides):
        torch.manual_seed(seed)
        return build_network(NET_ARCH, {**self.config.net, **overrides})

    def edm(self, seed: int):
        c = self.config
        model = EDMModel(self._new_net(seed), IMAGE_SHAPE, noise_range=NOISE_RANGE)
        ema, seconds, _ = self.fit("edm", model, c.edm_steps, c.edm_lr, seed,
                                   lambda x0, g, k: losses.denoising_loss(model, x0, g), lr_decay=c.edm_lr_decay)
        return ema, seconds

    def cd(self, teacher, seed: int):
        c = self.config
        student = ConsistencyModel(copy.deepcopy(teacher.net), IMAGE_SHAPE, noise_range=NOISE_RANGE, family="cd")
        target = frozen_copy(student)
        grid = losses.karras_training_grid(c.cd_grid, NOISE_RANGE.sigma_min, NOISE_RANGE.sigma_max)
        ema, seconds, _ = self.fit(
            "cd", student, c.cd_steps, c.cd_lr, seed,
            lambda x0, g, k: losses.consistency_distillation_loss(student, target, teacher, x0, grid, g),
            after_step=lambda k: ema_update(target, student, c.cd_target_ema),
        )
        return ema, seconds

    def ct(self, seed: int):
        c = self.config
        student = ConsistencyModel(self._new_net(seed), IMAGE_SHAPE, noise_range=NOISE_RANGE, family="ct")
        target = frozen_copy(student)

        def loss(x0, g, k):
            n, _ = losses.ct_schedule(k, c.ct_steps, c.ct_s0, c.ct_s1, c.ct_mu0)
            grid = losses.karras_training_grid(n, NOISE_RANGE.sigma_min, NOISE_RANGE.sigma_max)
            return losses.consistency_training_loss(student, target, x0, grid, g)

        def update_target(k):
            _, mu = losses.ct_schedule(k, c.ct_steps, c.ct_s0, c.ct_s1, c.ct_mu0)
            ema_update(target, student, mu)

        ema, seconds, _ = self.fit("ct", student, c.ct_steps, c.ct_lr, seed, loss, after_step=update_target)
        return ema, seconds

    def ctm(self, teacher, seed: int):
        c = self.config
        net = self._new_net(seed, s_embedding=True)
        net.load_state_dict(teacher.net.state_dict(), strict=False)  # the s branch is new
        torch.nn.init.zeros_(net.time_embed_s.mlp[-1].weight)  # start as g(x, t, s) = D(x, t)
        torch.nn.init.zeros_(net.time_embed_s.mlp[-1].bias)
        student = CTMModel(net, IMAGE_SHAPE, noise_range=NOISE_RANGE)
        target = frozen_copy(student)
        ema, seconds, _ = self.fit(
            "ctm", student, c.ctm_steps, c.ctm_lr, seed,
            lambda x0, g, k: losses.ctm_loss(student, target, teacher, x0, g,
                                             grid_steps=c.ctm_grid, dsm_weight=c.ctm_dsm_weight),
            after_step=lambda k: ema_update(target, student, c.ctm_target_ema),
        )
        return ema, seconds

    def pd(self, teacher, seed: int) -> dict[int, tuple[object, float]]:
        """Successive halvings from ``pd_first_student_steps`` down to 1; each student starts from
        its teacher's weights and becomes the next teacher."""
        c = self.config
        students, steps = {}, c.pd_first_student_steps
        current = ProgressiveDistillationModel(copy.deepcopy(teacher.net), IMAGE_SHAPE, noise_range=NOISE_RANGE,
                                               prediction="edm", role="teacher")
        while steps >= 1:
            student = ProgressiveDistillationModel(copy.deepcopy(current.net), IMAGE_SHAPE, noise_range=NOISE_RANGE,
                                                   prediction="edm", role="student")
            frozen_teacher = frozen_copy(current)
            ema, seconds, _ = self.fit(
                f"pd{steps}", student, c.pd_steps_per_stage, c.pd_lr, seed + steps,
                lambda x0, g, k, s=student, t=frozen_teacher, n=steps: losses.progressive_distillation_loss(
                    s, t, x0, n, g, logsnr_min=PD_LOGSNR[0], logsnr_max=PD_LOGSNR[1]),
            )
            students[steps] = (ema, seconds)
            current, steps = ema, steps // 2
        return students
