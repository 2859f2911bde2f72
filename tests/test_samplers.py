"""Samplers against the analytic mixture (shared/reference/facts.md §2).

Distributional checks compare sample moments with exact ones at a tolerance of 5 standard
errors, the standard errors computed from the sample size (and, for second moments, from the
sample's own fourth moments). With a dozen or so statistics per check the chance of a false
failure at 5 s.e. is below 1e-5; every such test also has a counterpart showing that a wrong
sampler (too few steps) is caught by the same check.

The samplers start from N(0, σ_max² I), not the true marginal Σ w N(μ, (s² + σ_max²) I). With
σ_max = 80 and |μ| ≤ 1 that changes the output moments by O(|μ|·s/σ_max) ≈ 1e-3 or less, well
under the ≈ 5e-3 standard errors of 4000 samples; where the effect is known in closed form
(single Gaussian) the exact expected moments are used instead.
"""

from __future__ import annotations

import math

import pytest
import torch

from cmbench.models import GaussianMixture, GaussianMixtureModel, NoiseRange
from cmbench.models.base import ModelAdapter
from cmbench.samplers import SAMPLERS, get_sampler
from cmbench.samplers.schedules import cosine_ve_sigmas, karras_index_sigmas, karras_sigmas
from cmbench.seeds import SampleNoise

SHAPE = (1, 2, 2)
DIM = 4
N = 4000
Z_TOL = 5.0


# ----------------------------------------------------------------------------- helpers


def mixture_model(ode_steps: int = 64, **kwargs) -> GaussianMixtureModel:
    """Two components in 1×2×2 with different means, stds and weights."""
    mixture = GaussianMixture.create(
        [[-0.6, 0.4, -0.2, 0.5], [0.5, -0.3, 0.6, -0.1]], [0.2, 0.3], [0.3, 0.7]
    )
    return GaussianMixtureModel(mixture, SHAPE, ode_steps=ode_steps, **kwargs)


def gaussian_model(mu: float = 0.4, std: float = 0.25, ode_steps: int = 256) -> GaussianMixtureModel:
    mixture = GaussianMixture.create(torch.full((1, DIM), mu), [std])
    return GaussianMixtureModel(mixture, SHAPE, ode_steps=ode_steps)


def mixture_moments(mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean Σ w μ and covariance Σ w (s² I + μ μᵀ) − mean meanᵀ."""
    w, mu, s = mixture.weights, mixture.means, mixture.stds
    mean = (w[:, None] * mu).sum(0)
    second = sum(
        w[k] * (s[k] ** 2 * torch.eye(mixture.dim, dtype=torch.float64) + torch.outer(mu[k], mu[k]))
        for k in range(mixture.num_components)
    )
    return mean, second - torch.outer(mean, mean)


def moment_z_scores(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """|sample moment − exact| / standard error for every mean entry and covariance entry."""
    x = samples.reshape(samples.shape[0], -1).to(torch.float64)
    n = x.shape[0]
    m = x.mean(0)
    z_mean = (m - mean).abs() / (cov.diagonal() / n).sqrt()
    centred = x - mean  # centred at the exact mean: E[c_i c_j] = cov_ij exactly
    products = centred[:, :, None] * centred[:, None, :]
    sample_cov = products.mean(0)
    se_cov = (products.var(0) / n).sqrt()
    iu = torch.triu_indices(x.shape[1], x.shape[1])
    z_cov = ((sample_cov - cov).abs() / se_cov)[iu[0], iu[1]]
    return torch.cat([z_mean, z_cov])


def gaussian_z_scores(samples: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    """z-scores of the per-dimension means and of the pooled variance of isotropic Gaussian draws."""
    x = samples.reshape(samples.shape[0], -1).to(torch.float64)
    n, d = x.shape
    z_mean = (x.mean(0) - mean).abs() / math.sqrt(var / n)
    pooled = ((x - mean) ** 2).mean()  # unbiased for var, variance 2 var² / (n d)
    z_var = abs(float(pooled) - var) / (var * math.sqrt(2.0 / (n * d)))
    return torch.cat([z_mean, torch.tensor([z_var], dtype=torch.float64)])


def sample(model, name: str, nfe: int, *, n: int = N, seed: int = 0, options=None, latents=None, noise_seeds=None):
    """Run sampler ``name`` at ``nfe`` on ``n`` images; returns (images, nfe)."""
    sampler = get_sampler(name)
    options = dict(options or {})
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    if latents is None:
        latents = torch.randn((n, *model.image_shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    seeds = noise_seeds if noise_seeds is not None else range(seed * 100_000, seed * 100_000 + latents.shape[0])
    return sampler.run(model, latents, sigmas, noise=SampleNoise(seeds), labels=None, options=options)


# ----------------------------------------------------------------------------- convergence


def test_heun_many_steps_reproduces_mixture_moments():
    model = mixture_model()
    images, nfe = sample(model, "heun", 2 * 64 - 1, seed=1)
    assert nfe == 127
    assert images.shape == (N, *SHAPE)
    mean, cov = mixture_moments(model.mixture)
    z = moment_z_scores(images, mean, cov)
    assert float(z.max()) < Z_TOL, z


def test_euler_converges_with_many_steps_but_not_with_few():
    model = mixture_model()
    mean, cov = mixture_moments(model.mixture)
    many, _ = sample(model, "euler", 512, seed=2)
    z_many = moment_z_scores(many, mean, cov)
    assert float(z_many.max()) < Z_TOL, z_many
    few, nfe = sample(model, "euler", 3, seed=2)
    assert nfe == 3
    z_few = moment_z_scores(few, mean, cov)
    assert float(z_few.max()) > 4 * Z_TOL, z_few  # the same check catches a coarse sampler


@pytest.mark.parametrize("name, nfes, order", [("heun", [31, 63, 127], 2), ("euler", [64, 128, 256], 1)])
def test_pathwise_order_of_convergence_against_the_ode_oracle(name, nfes, order):
    """Per trajectory, the solver tends to the exact PF-ODE flow at its order (error ∝ h^order).

    The grid's last positive point is t_L (≈ σ_min); the last step (to 0) of Heun and Euler is an
    Euler step, which returns D(x; t_L). So the exact answer is D(G(σ_max z, σ_max, t_L); t_L), with
    G the mixture's RK4 flow (512 steps, accurate to ≈ 1e-8). The moment tests above cannot tell a
    first-order scheme from Heun at these step counts; the error ratio per halving of h can (4 vs 2).
    The median over trajectories is used: the few that pass near the decision boundary between the
    components reach the asymptotic regime later.
    """
    oracle = mixture_model(ode_steps=512)
    b = 64
    latents = torch.randn((b, *SHAPE), generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    t_last = float(get_sampler(name).schedule(oracle.noise_range, nfes[0], {})[-2])
    full = lambda v: torch.full((b,), v, dtype=torch.float64)  # noqa: E731
    exact = oracle.denoise(oracle.jump(latents * oracle.sigma_max, full(oracle.sigma_max), full(t_last)), full(t_last))
    errors = []
    for nfe in nfes:
        images, _ = sample(mixture_model(), name, nfe, latents=latents)
        errors.append(float((images - exact).reshape(b, -1).norm(dim=1).median()))
    ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    expected = 2.0**order  # halving h divides the error by 2^order
    assert all(0.8 * expected < r < 1.4 * expected for r in ratios), (errors, ratios)
    assert errors[-1] < 0.02, errors


def closed_form_consistency(x, sigma, mu, std, sigma_min):
    """f(x, σ) = μ + (x − μ)·√((s² + σ_min²)/(s² + σ²)) for a single Gaussian N(μ, s² I)."""
    return mu + (x - mu) * math.sqrt((std**2 + sigma_min**2) / (std**2 + sigma**2))


@pytest.mark.parametrize("sigma", [80.0, 5.0, 0.3, 0.01])
def test_gaussian_oracle_consistency_matches_closed_form(sigma):
    mu, std = 0.4, 0.25
    model = gaussian_model(mu, std)
    x = torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * (sigma + std) + mu
    got = model.consistency(x, torch.full((64,), sigma, dtype=torch.float64))
    want = closed_form_consistency(x, sigma, mu, std, model.sigma_min)
    # relative to the output's scale (entries of f can cross zero, so a pointwise relative error
    # is ill-posed); RK4 with 256 steps in ln σ is accurate to ≈ 1e-7 here
    assert float((got - want).abs().max()) <= 1e-6 * float(want.abs().max())


def test_cm_one_step_on_gaussian_gives_exact_samples():
    mu, std = 0.4, 0.25
    model = gaussian_model(mu, std, ode_steps=128)  # flow error ≈ 2e-6, far below the s.e.
    images, nfe = sample(model, "cm_multistep", 1, seed=4, options={"clip_denoised": False})
    assert nfe == 1
    # x = f(σ_max z, σ_max) = μ + (σ_max z − μ)·c with c = √((s² + σ_min²)/(s² + σ_max²)):
    # mean μ(1 − c), variance (σ_max c)² (= s² + σ_min² up to the σ_max start mismatch).
    s_min, s_max = model.sigma_min, model.sigma_max
    c = math.sqrt((std**2 + s_min**2) / (std**2 + s_max**2))
    mean, var = mu * (1 - c), (s_max * c) ** 2
    assert abs(var - (std**2 + s_min**2)) < 1e-5 * var and abs(mean - mu) < 2e-3
    z = gaussian_z_scores(images, mean, var)
    assert float(z.max()) < Z_TOL, z
    # the same check catches a law 10 % too wide (pooled-variance s.e. ≈ 1.1 % here) or a mean
    # off by 0.02 (s.e. ≈ 0.004)
    assert float(gaussian_z_scores(images, mean, 1.10 * var).max()) > Z_TOL
    assert float(gaussian_z_scores(images, mean + 0.02, var).max()) > Z_TOL


# ----------------------------------------------------------------------------- CTM vs CM


@pytest.mark.parametrize("nfe", [1, 2, 3])
def test_ctm_gamma_one_equals_cm_multistep(nfe):
    model = mixture_model(ode_steps=16)
    latents = torch.randn((32, *SHAPE), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seeds = list(range(100, 132))
    cm_sampler, ctm_sampler = get_sampler("cm_multistep"), get_sampler("ctm_gamma")
    sigmas = cm_sampler.schedule(model.noise_range, nfe, {})
    torch.testing.assert_close(sigmas, ctm_sampler.schedule(model.noise_range, nfe, {}), rtol=0, atol=0)
    cm, cm_nfe = cm_sampler.run(model, latents, sigmas, noise=SampleNoise(seeds), labels=None, options={"clip_denoised": False})
    ctm, ctm_nfe = ctm_sampler.run(model, latents, sigmas, noise=SampleNoise(seeds), labels=None, options={"gamma": 1.0})
    assert cm_nfe == ctm_nfe == nfe
    torch.testing.assert_close(ctm, cm, rtol=0, atol=1e-10)


def test_ctm_gamma_zero_one_step_equals_cm_one_step():
    model = mixture_model(ode_steps=16)
    latents = torch.randn((32, *SHAPE), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    cm, _ = sample(model, "cm_multistep", 1, latents=latents, options={"clip_denoised": False})
    ctm, _ = sample(model, "ctm_gamma", 1, latents=latents, options={"gamma": 0.0})
    torch.testing.assert_close(ctm, cm, rtol=0, atol=1e-10)


def test_ctm_gamma_zero_is_deterministic_and_gamma_positive_is_not():
    model = mixture_model(ode_steps=16)
    latents = torch.randn((16, *SHAPE), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for gamma, same in ((0.0, True), (0.5, False)):
        a, _ = sample(model, "ctm_gamma", 2, latents=latents, noise_seeds=range(0, 16), options={"gamma": gamma})
        b, _ = sample(model, "ctm_gamma", 2, latents=latents, noise_seeds=range(1000, 1016), options={"gamma": gamma})
        if same:
            assert torch.equal(a, b), (a - b).abs().max()
        else:
            assert (a - b).abs().max() > 1e-3


def test_ctm_gamma_out_of_range_rejected():
    model = mixture_model(ode_steps=4)
    with pytest.raises(ValueError, match="gamma"):
        sample(model, "ctm_gamma", 1, n=2, options={"gamma": 1.5})


# ----------------------------------------------------------------------------- mixture oracle


def test_mixture_jump_is_a_semigroup_and_identity_at_equal_times():
    model = mixture_model(ode_steps=256)
    x = torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 3.0
    full = lambda v: torch.full((64,), v, dtype=torch.float64)  # noqa: E731
    t, u, s = 3.0, 0.4, 0.01
    direct = model.jump(x, full(t), full(s))
    composed = model.jump(model.jump(x, full(t), full(u)), full(u), full(s))
    torch.testing.assert_close(composed, direct, rtol=0, atol=1e-7)  # observed ≈ 3e-9
    # and the map is not trivially constant in its arguments
    assert (model.jump(x, full(t), full(u)) - direct).abs().max() > 0.1
    assert torch.equal(model.jump(x, full(t), full(t)), x)
    # consistency is the jump to σ_min
    torch.testing.assert_close(model.consistency(x, full(t)), model.jump(x, full(t), full(model.sigma_min)), rtol=0, atol=0)


def test_mixture_jump_per_sample_times():
    model = mixture_model(ode_steps=64)
    x = torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    t = torch.tensor([5.0, 1.0, 0.2], dtype=torch.float64)
    s = torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64)
    batch = model.jump(x, t, s)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], model.jump(x[i : i + 1], t[i : i + 1], s[i : i + 1]), rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- NFE accounting


class CountingModel(ModelAdapter):
    """Delegates every map to ``inner`` and counts the calls per map."""

    def __init__(self, inner: ModelAdapter):
        super().__init__(inner.image_shape, inner.label_dim, inner.noise_range)
        self.inner = inner
        self.maps = inner.maps
        self.family = inner.family
        self.calls = {"denoise": 0, "consistency": 0, "jump": 0, "ddim_x0": 0}

    def denoise(self, x, sigma, labels=None):
        self.calls["denoise"] += 1
        return self.inner.denoise(x, sigma, labels)

    def consistency(self, x, sigma, labels=None):
        self.calls["consistency"] += 1
        return self.inner.consistency(x, sigma, labels)

    def jump(self, x, t, s, labels=None):
        self.calls["jump"] += 1
        return self.inner.jump(x, t, s, labels)

    def ddim_x0(self, x, sigma, labels=None):
        self.calls["ddim_x0"] += 1
        return self.inner.ddim_x0(x, sigma, labels)


@pytest.mark.parametrize(
    "name, map_name, nfes, options",
    [
        ("heun", "denoise", [1, 3, 5, 9], {}),
        ("heun", "denoise", [3, 9], {"s_churn": 5.0}),
        ("euler", "denoise", [1, 2, 5, 8], {}),
        ("cm_multistep", "consistency", [1, 2, 3, 5], {}),
        ("ctm_gamma", "jump", [1, 2, 3, 5], {"gamma": 0.3}),
        ("ddim", "ddim_x0", [1, 2, 4, 7], {}),
        ("progdist", "ddim_x0", [1, 2, 4], {}),
    ],
)
def test_returned_nfe_equals_model_calls(name, map_name, nfes, options):
    for nfe in nfes:
        model = CountingModel(mixture_model(ode_steps=2))
        _, returned = sample(model, name, nfe, n=3, options=options)
        assert returned == nfe
        assert model.calls[map_name] == nfe, (name, nfe, model.calls)
        assert sum(model.calls.values()) == nfe, (name, nfe, model.calls)


@pytest.mark.parametrize("nfe", [2, 4, 10, 0])
def test_heun_rejects_impossible_nfe(nfe):
    with pytest.raises(ValueError, match="odd"):
        get_sampler("heun").schedule(NoiseRange(), nfe, {})


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"stored"}))
def test_every_sampler_rejects_nfe_zero(name):
    with pytest.raises(ValueError, match="NFE 0"):
        get_sampler(name).schedule(NoiseRange(), 0, {})


def test_stored_samples_take_nfe_zero_as_not_stated_and_onestep_only_one():
    assert get_sampler("stored").schedule(NoiseRange(), 0, {}).numel() == 0
    with pytest.raises(ValueError, match="exactly one evaluation"):
        get_sampler("onestep").schedule(NoiseRange(), 2, {})


def test_unknown_sampler_and_option_rejected():
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("dpm")
    with pytest.raises(ValueError, match="s_churn"):
        get_sampler("cm_multistep").schedule(NoiseRange(), 1, {"s_churn": 1.0})


# ----------------------------------------------------------------------------- noise bookkeeping


class IdentityModel(ModelAdapter):
    """Every map returns its input (D(x) = x, f(x) = x, G(x) = x) and records the times asked for.

    The ODE part of every sampler is then a no-op, so the output is the sum of the noise the
    sampler injected, which can be rebuilt by hand from the same per-sample streams.
    """

    family = "identity"
    maps = frozenset({"denoise", "consistency", "jump", "ddim_x0"})

    def __init__(self):
        super().__init__(SHAPE, 0, NoiseRange())
        self.times: list[tuple[float, ...]] = []

    def denoise(self, x, sigma, labels=None):
        self.times.append((float(sigma[0]),))
        return x

    consistency = denoise

    def jump(self, x, t, s, labels=None):
        self.times.append((float(t[0]), float(s[0])))
        return x


def identity_run(name, nfe, options, b=6):
    model = IdentityModel()
    latents = torch.randn((b, *SHAPE), generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    sampler = get_sampler(name)
    sigmas = sampler.schedule(model.noise_range, nfe, options)
    out, _ = sampler.run(model, latents, sigmas, noise=SampleNoise(range(40, 40 + b)), labels=None, options=options)
    return out, latents, sigmas.tolist(), model.times, SampleNoise(range(40, 40 + b))


@pytest.mark.parametrize("gamma", [0.0, 0.6, 1.0])
def test_ctm_gamma_targets_and_renoising_by_hand(gamma):
    out, latents, sig, times, noise = identity_run("ctm_gamma", 4, {"gamma": gamma})
    s_min = 0.002
    s = [math.sqrt(1 - gamma**2) * (sig[i + 1] - s_min) + s_min for i in range(4)]
    assert [t for t, _ in times] == sig[:4]
    assert [pytest.approx(v, rel=1e-12) for _, v in times] == s
    want = latents * sig[0]
    for i in range(3):  # re-noise to σ_{i+1} after every step but the last
        want = want + math.sqrt(max(sig[i + 1] ** 2 - s[i] ** 2, 0.0)) * noise.randn_like(want)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_cm_multistep_renoising_by_hand():
    out, latents, sig, times, noise = identity_run("cm_multistep", 3, {"clip_denoised": False})
    assert [t for (t,) in times] == sig[:3]
    want = latents * sig[0]
    for tau in sig[1:3]:
        want = want + math.sqrt(tau**2 - 0.002**2) * noise.randn_like(want)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"s_churn": 1.5, "s_noise": 1.003},  # γ = 1.5/5 = 0.3 on every step
        {"s_churn": 40.0, "s_min": 0.05, "s_max": 10.0},  # capped at √2 − 1, inside [S_min, S_max] only
    ],
)
def test_heun_churn_amount_by_hand(options):
    out, latents, sig, times, noise = identity_run("heun", 9, options)
    full = {"s_churn": 0.0, "s_min": 0.0, "s_max": math.inf, "s_noise": 1.0, **options}
    steps = len(sig) - 1
    want = latents * sig[0]
    hats = []
    for i in range(steps):
        t = sig[i]
        gamma = min(full["s_churn"] / steps, math.sqrt(2) - 1) if full["s_min"] <= t <= full["s_max"] else 0.0
        t_hat = t * (1 + gamma)
        hats.append(t_hat)
        want = want + math.sqrt(t_hat**2 - t**2) * full["s_noise"] * noise.randn_like(want)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    # the denoiser is evaluated at t̂_i, and (Heun) at t_{i+1} when t_{i+1} > 0
    expected_times = []
    for i in range(steps):
        expected_times.append(hats[i])
        if sig[i + 1] > 0:
            expected_times.append(sig[i + 1])
    assert [pytest.approx(v, rel=1e-12) for (v,) in times] == expected_times


# ----------------------------------------------------------------------------- churn


def test_heun_churn_uses_noise_and_no_churn_does_not():
    model = mixture_model()
    latents = torch.randn((16, *SHAPE), generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    for churn, same in ((0.0, True), (10.0, False)):
        options = {"s_churn": churn}
        a, _ = sample(model, "heun", 9, latents=latents, noise_seeds=range(0, 16), options=options)
        b, _ = sample(model, "heun", 9, latents=latents, noise_seeds=range(50, 66), options=options)
        if same:
            assert torch.equal(a, b)
        else:
            assert (a - b).abs().max() > 1e-3


def test_heun_churn_window_excludes_all_steps_is_deterministic():
    """s_min/s_max outside the grid: γ_i = 0 everywhere, the √(t̂² − t²) = 0 noise has no effect."""
    model = mixture_model()
    latents = torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    options = {"s_churn": 10.0, "s_min": 100.0, "s_max": 200.0}
    a, _ = sample(model, "heun", 9, latents=latents, noise_seeds=range(0, 8), options=options)
    b, _ = sample(model, "heun", 9, latents=latents, noise_seeds=range(50, 58), options=options)
    c, _ = sample(model, "heun", 9, latents=latents, noise_seeds=range(50, 58), options={})
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- schedules


def test_karras_sigmas_endpoints_and_interior_point():
    n, lo, hi, rho = 7, 0.002, 80.0, 7.0
    grid = karras_sigmas(n, lo, hi, rho)
    assert grid.dtype == torch.float64 and grid.shape == (n,)
    assert math.isclose(float(grid[0]), hi, rel_tol=1e-12)
    assert math.isclose(float(grid[-1]), lo, rel_tol=1e-12)
    i = 2
    by_hand = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    assert math.isclose(float(grid[i]), by_hand, rel_tol=1e-12)
    assert bool((grid[:-1] > grid[1:]).all())
    assert karras_sigmas(1, lo, hi).tolist() == [hi]


def test_karras_index_sigmas_official_cd_imagenet_points():
    grid = karras_index_sigmas([0, 22, 39], 40, 0.002, 80.0)
    assert math.isclose(float(grid[0]), 80.0, rel_tol=1e-12)
    assert math.isclose(float(grid[1]), 1.382, abs_tol=5e-4)  # facts.md §2: middle σ ≈ 1.382
    assert math.isclose(float(grid[2]), 0.002, rel_tol=1e-12)
    with pytest.raises(ValueError, match="40"):
        karras_index_sigmas([0, 40], 40, 0.002, 80.0)


def test_cosine_ve_sigmas_endpoints():
    grid = cosine_ve_sigmas(8)
    assert grid.shape == (9,)
    assert math.isclose(float(grid[0]), math.exp(10.0), rel_tol=1e-9)
    assert math.isclose(float(grid[-1]), math.exp(-10.0), rel_tol=1e-9)
    assert bool((grid[:-1] > grid[1:]).all())
    # the midpoint t = 1/2 has logsnr = −2 ln tan(a/2 + b); σ = e^{−logsnr/2} = tan(a/2 + b)
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b
    assert math.isclose(float(grid[4]), math.tan(a / 2 + b), rel_tol=1e-12)


@pytest.mark.parametrize("name", ["cm_multistep", "ctm_gamma"])
def test_time_points_in_karras_index_units(name):
    sampler = get_sampler(name)
    options = {"time_points": {2: [0, 22, 39]}, "time_point_units": "karras_index", "karras_steps": 40}
    grid = sampler.schedule(NoiseRange(), 2, options)
    torch.testing.assert_close(grid, karras_index_sigmas([0, 22, 39], 40, 0.002, 80.0), rtol=0, atol=0)
    # NFEs without an entry fall back to an (n + 1)-point Karras grid
    torch.testing.assert_close(sampler.schedule(NoiseRange(), 3, options), karras_sigmas(4, 0.002, 80.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="3 points"):
        sampler.schedule(NoiseRange(), 2, {**options, "time_points": {2: [0, 39]}})


def test_time_points_in_sigma_units_and_validation():
    sampler = get_sampler("cm_multistep")
    grid = sampler.schedule(NoiseRange(), 2, {"time_points": {"2": [80.0, 0.8, 0.002]}})
    assert grid.tolist() == [80.0, 0.8, 0.002]
    with pytest.raises(ValueError, match="decreasing"):
        sampler.schedule(NoiseRange(), 2, {"time_points": {2: [80.0, 90.0, 0.002]}})
    with pytest.raises(ValueError, match="time_point_units"):
        sampler.schedule(NoiseRange(), 2, {"time_points": {2: [80.0, 1.0, 0.002]}, "time_point_units": "seconds"})


def test_heun_and_euler_grids_end_in_zero():
    heun = get_sampler("heun").schedule(NoiseRange(), 5, {})
    euler = get_sampler("euler").schedule(NoiseRange(), 3, {})
    torch.testing.assert_close(heun, euler, rtol=0, atol=0)
    assert heun.shape == (4,) and float(heun[-1]) == 0.0
    torch.testing.assert_close(heun[:-1], karras_sigmas(3, 0.002, 80.0), rtol=0, atol=0)


# ----------------------------------------------------------------------------- DDIM


def test_ddim_many_steps_on_gaussian_converges_and_one_step_does_not():
    mu, std = 0.4, 0.25
    model = gaussian_model(mu, std)
    nfe = 256
    images, returned = sample(model, "ddim", nfe, seed=12, options={"clip_denoised": False})
    assert returned == nfe
    # The output is the posterior mean at the last evaluated level σ_L: its exact law given a
    # sample at σ_L is N(μ, s⁴/(s² + σ_L²) I) (σ_L ≈ 6e-3 here, a 0.06 % correction).
    sigma_last = float(cosine_ve_sigmas(nfe)[-2])
    var = std**4 / (std**2 + sigma_last**2)
    z = gaussian_z_scores(images, mu, var)
    assert float(z.max()) < Z_TOL, z
    one, _ = sample(model, "ddim", 1, seed=12, options={"clip_denoised": False})
    assert float(gaussian_z_scores(one, mu, var).max()) > 10 * Z_TOL


def test_ddim_clip_denoised_clamps():
    model = gaussian_model(mu=3.0, std=0.2)
    latents = torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    clipped, _ = sample(model, "ddim", 4, latents=latents, options={"clip_denoised": True})
    free, _ = sample(model, "ddim", 4, latents=latents, options={"clip_denoised": False})
    assert float(clipped.max()) <= 1.0 and float(clipped.min()) >= -1.0
    assert float(free.min()) > 2.0  # without clipping the samples sit near μ = 3
    # one step: the output is clamp(x̂(x_0, σ_0)) with x_0 = latents·√(1 + σ_0²); the means
    # straddle ±1 so that some entries are clamped and others are not
    wide = GaussianMixtureModel(GaussianMixture.create([[-1.5, 0.2, 0.9, 1.5]], [0.5]), SHAPE)
    sigma0 = float(cosine_ve_sigmas(1)[0])
    x0 = latents * math.sqrt(1 + sigma0**2)
    want = wide.denoise(x0, torch.full((64,), sigma0, dtype=torch.float64))
    one_free, _ = sample(wide, "ddim", 1, latents=latents, options={"clip_denoised": False})
    one_clip, _ = sample(wide, "ddim", 1, latents=latents, options={"clip_denoised": True})
    torch.testing.assert_close(one_free, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(one_clip, want.clamp(-1, 1), rtol=0, atol=1e-12)
    assert float((one_clip - one_free).abs().max()) > 0.4


def test_cm_multistep_clip_denoised_clamps():
    model = gaussian_model(mu=3.0, std=0.2, ode_steps=32)
    latents = torch.randn((16, *SHAPE), generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    clipped, _ = sample(model, "cm_multistep", 1, latents=latents, options={"clip_denoised": True})
    free, _ = sample(model, "cm_multistep", 1, latents=latents, options={"clip_denoised": False})
    assert float(free.min()) > 2.0
    torch.testing.assert_close(clipped, free.clamp(-1, 1), rtol=0, atol=0)


def test_progdist_is_euler_on_a_karras_grid_ending_at_sigma_min():
    """openai's progdist: NFE + 1 Karras points from σ_max to σ_min, Euler, no final denoise."""
    from cmbench.samplers.schedules import karras_sigmas

    model = mixture_model()
    nfe = 3
    grid = get_sampler("progdist").schedule(model.noise_range, nfe, {})
    torch.testing.assert_close(grid, karras_sigmas(nfe + 1, model.sigma_min, model.sigma_max), rtol=0, atol=0)
    latents = torch.randn((N, *model.image_shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    images, _ = sample(model, "progdist", nfe, latents=latents, options={"clip_denoised": False})
    x = latents * grid[0]
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        x0 = model.denoise(x, torch.full((x.shape[0],), t, dtype=torch.float64))
        x = x + (t_next - t) * (x - x0) / t
    torch.testing.assert_close(images, x.clamp(-1, 1), rtol=1e-12, atol=1e-12)
    assert float(grid[-1]) == model.sigma_min
