"""The toy zoo's training code, tested cheaply: each loss for a few steps on a tiny batch."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from cmbench.checkpoints import load_native, sha256_file
from cmbench.models import GaussianMixture, GaussianMixtureModel, NoiseRange
from cmbench.models.networks import ConsistencyModel, CTMModel, EDMModel
from cmbench.models.pd import ProgressiveDistillationModel
from cmbench.nets import build_network
from cmbench.zoo.toy import losses
from cmbench.zoo.toy.train import PD_LOGSNR, ToyZooConfig, frozen_copy, learning_rate, train_toy_zoo, trainable

SHAPE = (1, 8, 8)
TINY_NET = {"img_resolution": 8, "img_channels": 1, "hidden": 32, "depth": 1, "emb_dim": 16}
RANGE = NoiseRange(0.002, 80.0, 0.5)


def tiny_net(seed=0, **kw):
    torch.manual_seed(seed)
    return build_network("toy_mlp", {**TINY_NET, **kw})


def batch():
    return torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def fit_fixed_noise(model, loss_of_generator, steps=40, lr=3e-3):
    """Adam on one fixed objective (same batch, same noise every step): the loss must fall."""
    trainable(model)
    opt = torch.optim.Adam(model.net.parameters(), lr=lr)
    values = []
    for _ in range(steps):
        loss = loss_of_generator(torch.Generator().manual_seed(0))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        opt.step()
        values.append(float(loss.detach()))
    return values


def assert_falls(values):
    assert values[-1] < 0.7 * values[0], f"loss did not fall: {values[0]:.4g} -> {values[-1]:.4g}"


def test_denoising_loss_falls():
    model = EDMModel(tiny_net(), SHAPE, noise_range=RANGE)
    x0 = batch()
    assert_falls(fit_fixed_noise(model, lambda g: losses.denoising_loss(model, x0, g)))


def test_consistency_distillation_loss_falls():
    teacher = EDMModel(tiny_net(1), SHAPE, noise_range=RANGE)
    student = ConsistencyModel(tiny_net(2), SHAPE, noise_range=RANGE, family="cd")
    target = frozen_copy(student)
    grid = losses.karras_training_grid(18, 0.002, 80.0)
    x0 = batch()
    assert_falls(fit_fixed_noise(student, lambda g: losses.consistency_distillation_loss(student, target, teacher, x0, grid, g)))


def test_consistency_training_loss_falls():
    student = ConsistencyModel(tiny_net(3), SHAPE, noise_range=RANGE, family="ct")
    target = frozen_copy(student)
    grid = losses.karras_training_grid(10, 0.002, 80.0)
    x0 = batch()
    assert_falls(fit_fixed_noise(student, lambda g: losses.consistency_training_loss(student, target, x0, grid, g)))


def test_ctm_loss_falls_and_trains_only_the_student():
    teacher = EDMModel(tiny_net(4), SHAPE, noise_range=RANGE)
    student = CTMModel(tiny_net(5, s_embedding=True), SHAPE, noise_range=RANGE)
    target = frozen_copy(student)
    before = copy.deepcopy(teacher.net.state_dict())
    x0 = batch()
    values = fit_fixed_noise(student, lambda g: losses.ctm_loss(
        student, target, teacher, x0, g, grid_steps=6, dsm_weight=1.0))
    assert_falls(values)
    assert all(torch.equal(before[k], v) for k, v in teacher.net.state_dict().items())
    assert all(p.requires_grad for p in student.net.parameters())  # the stop-gradient switch is undone


def test_progressive_distillation_loss_falls():
    teacher = ProgressiveDistillationModel(tiny_net(6), SHAPE, noise_range=RANGE, prediction="edm", role="teacher")
    student = ProgressiveDistillationModel(tiny_net(7), SHAPE, noise_range=RANGE, prediction="edm", role="student")
    x0 = batch()
    assert_falls(fit_fixed_noise(student, lambda g: losses.progressive_distillation_loss(
        student, teacher, x0, 4, g, logsnr_min=PD_LOGSNR[0], logsnr_max=PD_LOGSNR[1])))


class ConstantPrediction:
    """A 'teacher' whose clean-image prediction is always the image c."""

    def __init__(self, c):
        self.c = c

    def ddim_x0(self, x, sigma, labels=None):
        return self.c.expand_as(x)


def test_pd_target_of_a_constant_teacher_is_that_constant():
    """Two DDIM steps with x̂ = c land on c + (σ_s/σ_t)(x_t − c); the target that one student step
    must predict is then exactly c (Salimans & Ho 2022, Alg. 2)."""
    c = torch.full((1, *SHAPE), 0.3)

    class Recorder:
        sigma_data = 0.5

        def ddim_x0(self, x, sigma, labels=None):
            self.sigma = sigma
            return torch.zeros_like(x, requires_grad=True)

    student = Recorder()
    x0 = batch()
    loss = losses.progressive_distillation_loss(student, ConstantPrediction(c), x0, 2, torch.Generator().manual_seed(0),
                                                logsnr_min=PD_LOGSNR[0], logsnr_max=PD_LOGSNR[1])
    weight = torch.clamp(1.0 / student.sigma**2, min=1.0)
    assert loss.detach().item() == pytest.approx(float((weight * 0.09).mean()), rel=1e-4)


def test_ct_schedule_endpoints():
    assert losses.ct_schedule(0, 1000, s0=2, s1=150, mu0=0.9) == (2, pytest.approx(0.9))
    n_end, mu_end = losses.ct_schedule(1000, 1000, s0=2, s1=150, mu0=0.9)
    assert n_end == 151 and mu_end == pytest.approx(math.exp(2 * math.log(0.9) / 151))
    steps = [losses.ct_schedule(k, 1000)[0] for k in range(0, 1001, 50)]
    assert steps == sorted(steps)


def test_heun_step_follows_the_exact_flow():
    mixture = GaussianMixture.create(torch.zeros(1, 64), [0.3])
    model = GaussianMixtureModel(mixture, SHAPE, ode_steps=256)
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2.0
    t, s = torch.full((16,), 2.0, dtype=torch.float64), torch.full((16,), 1.8, dtype=torch.float64)
    stepped = losses.heun_step(model, x, t, s)
    exact = model.jump(x, t, s)
    assert torch.allclose(stepped, exact, atol=1e-4)
    assert not torch.allclose(x, exact, atol=1e-2)


def test_learning_rate_is_constant_or_cosine_decayed_to_zero():
    assert [learning_rate(1e-3, k, 100, "none") for k in (0, 50, 99)] == [1e-3] * 3
    cosine = [learning_rate(1e-3, k, 100, "cosine") for k in range(100)]
    assert cosine[0] == 1e-3 and cosine[50] == pytest.approx(5e-4) and 0 < cosine[-1] < 1e-6
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    with pytest.raises(ValueError, match="lr_decay 'linear'; accepted: none, cosine"):
        learning_rate(1e-3, 0, 100, "linear")


def test_train_toy_zoo_end_to_end_tiny(tmp_path):
    config = ToyZooConfig(
        batch_size=8, net=TINY_NET, edm_steps=3, cd_steps=2, ct_steps=3, ctm_steps=2,
        pd_first_student_steps=4, pd_steps_per_stage=2, cd_grid=6, ctm_grid=6,
    )
    manifest = train_toy_zoo(tmp_path, config, progress=False)
    assert set(manifest["models"]) == {"edm", "cd", "ct", "ctm", "pd4", "pd2", "pd1"}
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["models"] == manifest["models"]
    for name, entry in manifest["models"].items():
        assert sha256_file(tmp_path / entry["file"]) == entry["sha256"]
        ckpt = load_native(tmp_path / entry["file"], expected_sha256=entry["sha256"])
        assert ckpt.family == entry["family"] and ckpt.meta["seed"] == entry["seed"]
        assert ckpt.model_options["image_shape"] == list(SHAPE)
    assert load_native(tmp_path / "ctm.pt").arch_kwargs["s_embedding"] is True
    with pytest.raises(FileExistsError):
        train_toy_zoo(tmp_path, config, progress=False)
