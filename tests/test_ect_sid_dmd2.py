"""ECT's consistency models and SiD / DMD2's one-step generators: loading, maps, samplers, suites.

ECT (locuslab/ect) writes EDM-style snapshots of its ``ECMPrecond``; its training loop pickles
``dict(ema=..., loss_fn=ECMLoss, augment_pipe=..., dataset_kwargs=...)`` like EDM's, and ECMLoss
holds a bound method of itself (``self.t_to_r = self.t_to_r_sigmoid``), which pickle writes as
``getattr(owner, name)``. The snapshots here are written the same way, with embedded source that
raises if run. SiD's generators are EDM snapshots of an ``EDMPrecond``; DMD2's ImageNet generator
is the state dict of a whole ``EDMPrecond`` (keys ``model.``). The official formulas are
transcribed below in the test's own words and compared with what cmbench computes.
"""

import json
import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edm_snapshots
from cmbench.checkpoints.edm_pickle import ObjectRecord, load_edm_pickle, read_edm_records
from cmbench.checkpoints.hashing import sha256_file
from cmbench.checkpoints.official import OFFICIAL_ARCHS, OfficialArch, official_arch
from cmbench.metrics import fid as fid_module
from cmbench.models import build_model
from cmbench.models.base import NoiseRange
from cmbench.models.denoiser_generator import DenoiserGeneratorModel
from cmbench.models.networks import ConsistencyModel
from cmbench.nets import build_network
from cmbench.nets.edm_presets import EDM_PRESETS
from cmbench.results import read_rows
from cmbench.runner import run_suite
from cmbench.samplers import SAMPLERS
from cmbench.samplers.consistency import sample_cm_multistep
from cmbench.samplers.onestep import generator_grid
from cmbench.seeds import SampleNoise
from cmbench.suite import load_suite, parse_suite
from cmbench.validate import ConfigError
from test_paper_suites import random_full_size, write_reference
from test_readme import low_rank_trace_sqrt

SUITES = Path(__file__).resolve().parent.parent / "suites"
TOY_REFERENCE = Path(__file__).resolve().parents[1] / "reference_stats" / "toy-digits-all.npz"
NEVER_RUN = "raise RuntimeError('the code embedded in a snapshot must never run')\n"

# ECT's DDPM++ (ct_train.py --arch=ddpmpp; run_ecm.sh --dropout=0.2 --augment=0.0: no augment_dim)
ECT_DDPMPP = dict(embedding_type="positional", encoder_type="standard", decoder_type="standard", channel_mult_noise=1,
                  resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2], dropout=0.2)
TINY_SONG = dict(img_resolution=8, in_channels=1, out_channels=1, label_dim=0, model_channels=16, channel_mult=[1, 2],
                 num_blocks=1, attn_resolutions=[4], dropout=0.2)
TINY_DHARIWAL = dict(img_resolution=8, in_channels=1, out_channels=1, label_dim=3, model_channels=16,
                     channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)


# --- writing snapshots as ECT's and SiD's training loops do ---------------------------------------


class ECMLossStandIn:
    """ECT's ECMLoss as pickled: a persistent object whose state holds a bound method of itself."""

    def __init__(self):
        self.P_mean, self.P_std, self.sigma_data, self.q, self.stage, self.ratio = -1.1, 2.0, 0.5, 256, 3, 0.99
        self.k, self.b, self.c = 8.0, 1.0, 0.0
        self.t_to_r = self.t_to_r_sigmoid
        self._init_args, self._init_kwargs = (), {"P_mean": -1.1, "P_std": 2.0, "q": 256, "adj": "sigmoid"}

    def t_to_r_sigmoid(self, t):  # never called
        return t


class ECTStylePickler(edm_snapshots.EDMStylePickler):
    """EDM's persistent reduction for the networks, and for the loss: the state is the object's own
    ``__dict__`` (as persistence.py's ``super().__reduce__()[2]``), so the bound method's owner is
    written once and referenced after, as in a real ECT snapshot."""

    def reducer_override(self, obj):
        if isinstance(obj, ECMLossStandIn):
            meta = dict(type="class", version=6, module_src=self.src, class_name="ECMLoss", state=obj.__dict__)
            return edm_snapshots._reconstruct_persistent_obj, (meta,)
        return super().reducer_override(obj)


def preconditioner(net: nn.Module, label_dim: int, **attributes) -> nn.Module:
    """An EDM-codebase preconditioner as its ``__dict__`` holds it: attributes and ``model``."""
    precond = nn.Module()
    precond.__dict__.update(img_resolution=net.img_resolution, img_channels=net.in_channels, label_dim=label_dim,
                            use_fp16=False, sigma_max=float("inf"), sigma_data=0.5, **attributes)
    precond.model = net
    return precond.eval()


def write_ect_snapshot(path: Path, net: nn.Module, net_kwargs: dict, sigma_min: float = 0.003) -> Path:
    """``network-snapshot-*.pkl`` as locuslab/ect training/ct_training_loop.py writes it."""
    precond = preconditioner(net, net_kwargs.get("label_dim", 0), sigma_min=sigma_min)
    names = {id(precond): "ECMPrecond", id(net): "SongUNet"}
    kwargs = {id(net): net_kwargs, id(precond): {"model_type": "SongUNet"}}
    payload = dict(ema=precond, loss_fn=ECMLossStandIn(), augment_pipe=None,
                   dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="cifar10-32x32.zip"))
    with edm_snapshots.fake_persistence_module(), open(path, "wb") as f:
        ECTStylePickler(f, NEVER_RUN, names, kwargs, protocol=4).dump(payload)  # Python 3.9's default protocol
    return path


def write_sid_snapshot(path: Path, net: nn.Module, net_class: str, net_kwargs: dict) -> Path:
    """SiD's ``network-snapshot-*.pkl``: ``dict(ema=G_ema)`` of an EDMPrecond (sid_training_loop.py)."""
    precond = preconditioner(net, net_kwargs.get("label_dim", 0), sigma_min=0)
    names = {id(precond): "EDMPrecond", id(net): net_class}
    kwargs = {id(net): net_kwargs, id(precond): {"model_type": net_class}}
    with edm_snapshots.fake_persistence_module(), open(path, "wb") as f:
        edm_snapshots.EDMStylePickler(f, NEVER_RUN, names, kwargs, protocol=4).dump(dict(ema=precond))
    return path


def random_net(arch: str, kwargs: dict, seed: int = 0) -> nn.Module:
    """Random weights everywhere, so zero-initialised output layers cannot hide a wrong map."""
    net = build_network(arch, kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=gen))
    return net.eval()


def model_from(tmp_path: Path, family: str, sampler: str, **entry):
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"},
           "models": {"m": {"family": family, **entry}}, "runs": [{"model": "m", "sampler": sampler, "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    return build_model(family, suite.models["m"].options, suite.checkpoint_dir, name="m")


# --- the official maps, transcribed ------------------------------------------------------------------


def ecm_precond_eval(net, x, sigma, sigma_min, sigma_data=0.5):
    """ECT's ECMPrecond.forward in eval mode (locuslab/ect training/networks.py): consistency
    scalings with σ_min, c_in = 1/√(σ_d² + σ²), c_noise = ln(σ)/4."""
    s = torch.full((x.shape[0], 1, 1, 1), sigma, dtype=torch.float64)
    c_skip = sigma_data**2 / ((s - sigma_min) ** 2 + sigma_data**2)
    c_out = (s - sigma_min) * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma_data**2 + s**2).sqrt()
    with torch.no_grad():
        raw = net((c_in * x).float(), (s.log() / 4).flatten().float(), None).double()
    return c_skip * x + c_out * raw


def edm_denoiser_once(net, z, sigma_init, labels, sigma_data=0.5):
    """D(σ_init·z; σ_init) with EDMPrecond's scalings: SiD's sid_sampler, DMD2's test_folder_edm."""
    x = z.double() * sigma_init
    total = sigma_init**2 + sigma_data**2
    c_skip, c_out, c_in = sigma_data**2 / total, sigma_init * sigma_data / math.sqrt(total), 1 / math.sqrt(total)
    noise = torch.full((z.shape[0],), math.log(sigma_init) / 4)
    with torch.no_grad():
        return c_skip * x + c_out * net((c_in * x).float(), noise, labels).double()


# --- ECT ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_min", [0.003, 0.002])
def test_ect_snapshot_loads_without_running_its_code_with_ecmprecond_coefficients(tmp_path, sigma_min):
    net = random_net("song_unet", TINY_SONG)
    path = write_ect_snapshot(tmp_path / "network-snapshot-000100.pkl", net, TINY_SONG, sigma_min)
    top = read_edm_records(path.read_bytes(), path)
    assert isinstance(top["loss_fn"], ObjectRecord) and top["loss_fn"].class_name == "ECMLoss"
    assert top["ema"].class_name == "ECMPrecond" and top["ema"].module_src == NEVER_RUN
    loaded = load_edm_pickle(path)
    assert loaded.preconditioning == "cm" and loaded.options["sigma_min"] == sigma_min

    model = model_from(tmp_path, "ct", "cm_multistep", checkpoint=path.name, format="edm_pickle")
    assert isinstance(model, ConsistencyModel) and model.family == "ct" and model.has("consistency")
    assert (model.sigma_min, model.sigma_max, model.sigma_data) == (sigma_min, 80.0, 0.5)  # the file's σ_min
    if sigma_min != 0.003:
        return  # the coefficients below depend on σ_min only through the value checked above
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for sigma in (sigma_min, 0.05, 0.821, 2.5, 80.0):
        got = model.consistency(x, torch.full((2,), sigma, dtype=torch.float64))
        torch.testing.assert_close(got, ecm_precond_eval(net, x, sigma, sigma_min), rtol=1e-5, atol=1e-5)
    assert torch.equal(model.consistency(x, torch.full((2,), sigma_min, dtype=torch.float64)), x)  # f(x, σ_min) = x


def test_getattr_in_a_snapshot_is_only_a_method_name_of_a_persistent_object(tmp_path):
    path = tmp_path / "bad.pkl"

    class _Call:
        def __reduce__(self):
            return getattr, ("text", "upper")

    path.write_bytes(pickle.dumps({"ema": _Call()}))
    with pytest.raises(ValueError, match=r"bad\.pkl: not a loadable EDM snapshot: getattr on a str with a str name; "
                                         r"accepted only: a persistent object's bound method"):
        load_edm_pickle(path)


def test_ect_sampling_is_ects_generator_fn(tmp_path):
    """The suite's ECT row samples as ct_eval.py's generator_fn: f(80·z, 80), then x + 0.821·z' and
    f(·, 0.821), no clamp in between."""
    net = random_net("song_unet", TINY_SONG)
    write_ect_snapshot(tmp_path / "ect.pkl", net, TINY_SONG)
    model = model_from(tmp_path, "ct", "cm_multistep", checkpoint="ect.pkl", format="edm_pickle")
    rows = load_suite(SUITES / "ect_cifar10.yaml").rows
    seeds = [3, 11]
    for row in rows:
        sampler = SAMPLERS[row.sampler]
        grid = sampler.schedule(model.noise_range, row.nfe, row.options)
        noise = SampleNoise(seeds)
        latents = noise.randn(model.image_shape)
        images, nfe = sampler.run(model, latents, grid, noise=noise, labels=None, options=row.options)
        draws = SampleNoise(seeds)
        x = ecm_precond_eval(net, draws.randn(model.image_shape).double() * 80.0, 80.0, 0.003)
        for t_next in ([0.821] if row.nfe == 2 else []):
            x = ecm_precond_eval(net, x + t_next * draws.randn((1, 8, 8), dtype=torch.float64), t_next, 0.003)
        assert nfe == row.nfe
        torch.testing.assert_close(images, x, rtol=1e-5, atol=1e-5)


class _Identity:
    """A consistency map that returns its input: the multistep chain then shows its re-noising."""

    sigma_min = 0.3

    def consistency(self, x, sigma, labels=None):
        return x


@pytest.mark.parametrize("renoise, expected_std", [("cm", math.sqrt(2.0**2 - 0.3**2)), ("ect", 2.0)])
def test_renoise_conventions(renoise, expected_std):
    latents = torch.zeros(1, 1, 4, 4)
    noise, draws = SampleNoise([5]), SampleNoise([5])
    images, nfe = sample_cm_multistep(_Identity(), latents, torch.tensor([10.0, 2.0, 0.3], dtype=torch.float64),
                                      noise=noise, clip_denoised=False, renoise=renoise)
    torch.testing.assert_close(images, expected_std * draws.randn((1, 4, 4), dtype=torch.float64))
    assert nfe == 2


# --- SiD and DMD2 ---------------------------------------------------------------------------------------


@pytest.fixture
def tiny_dmd2_preset(monkeypatch):
    """A small stand-in for the DMD2 preset: a whole EDMPrecond's state dict (keys ``model.``)."""
    preset = OfficialArch("tiny-dmd2", "dhariwal_unet", TINY_DHARIWAL,
                          {"image_shape": [1, 8, 8], "label_dim": 3, "preconditioning": "edm"}, "test", "model.")
    monkeypatch.setitem(OFFICIAL_ARCHS, preset.name, preset)
    return preset


def test_sid_snapshot_is_d_of_sigma_init_z(tmp_path):
    net = random_net("dhariwal_unet", TINY_DHARIWAL)
    write_sid_snapshot(tmp_path / "sid.pkl", net, "DhariwalUNet", TINY_DHARIWAL)
    model = model_from(tmp_path, "generator", "onestep", checkpoint="sid.pkl", format="edm_pickle", sigma_init=2.5)
    assert isinstance(model, DenoiserGeneratorModel) and model.maps == {"generate"}
    assert (model.sigma_init, model.sigma_min, model.sigma_max, model.label_dim) == (2.5, 2.5, 2.5, 3)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 2, 1])
    torch.testing.assert_close(model.generate(z, labels).double(), edm_denoiser_once(net, z, 2.5, labels),
                               rtol=1e-5, atol=1e-5)


def test_dmd2_state_dict_is_d_of_80_z(tmp_path, tiny_dmd2_preset):
    net = random_net("dhariwal_unet", TINY_DHARIWAL, seed=4)
    torch.save({"model." + key: value for key, value in net.state_dict().items()}, tmp_path / "pytorch_model.bin")
    model = model_from(tmp_path, "generator", "onestep", checkpoint="pytorch_model.bin", format="state_dict",
                       arch="tiny-dmd2", sigma_init=80.0)
    assert isinstance(model, DenoiserGeneratorModel) and model.noise_range == NoiseRange(80.0, 80.0, 0.5)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([1, 1, 0])
    torch.testing.assert_close(model.generate(z, labels).double(), edm_denoiser_once(net, z, 80.0, labels),
                               rtol=1e-5, atol=1e-5)


def test_ect_and_one_step_rows_run_through_a_suite(tmp_path, tiny_dmd2_preset):
    """ECT at NFE 1 and 2 (re-noised as ECT does), SiD and DMD2 at NFE 1, each row recording its σ
    schedule: the one-step rows their σ_init."""
    write_ect_snapshot(tmp_path / "ect.pkl", random_net("song_unet", TINY_SONG), TINY_SONG)
    write_sid_snapshot(tmp_path / "sid.pkl", random_net("song_unet", TINY_SONG, seed=3), "SongUNet", TINY_SONG)
    net = random_net("dhariwal_unet", TINY_DHARIWAL, seed=6)
    torch.save({"model." + key: value for key, value in net.state_dict().items()}, tmp_path / "dmd2.bin")
    (tmp_path / "suite.yaml").write_text(
        f"name: tiny\nnum_samples: 10\nbatch_size: 10\nprofile: toy\nreference: {{path: {TOY_REFERENCE}}}\n"
        "models:\n  ect: {family: ct, checkpoint: ect.pkl, format: edm_pickle}\n"
        "  sid: {family: generator, checkpoint: sid.pkl, format: edm_pickle, sigma_init: 2.5}\n"
        "  dmd2: {family: generator, checkpoint: dmd2.bin, format: state_dict, arch: tiny-dmd2, sigma_init: 80}\n"
        "runs:\n  - {model: ect, sampler: cm_multistep, nfe: [1, 2], options: {renoise: ect, clip_denoised: false,"
        " time_points: {1: [80.0, 0.003], 2: [80.0, 0.821, 0.003]}}}\n"
        "  - {model: sid, sampler: onestep, nfe: [1]}\n  - {model: dmd2, sampler: onestep, nfe: [1]}\n")
    run_suite(load_suite(tmp_path / "suite.yaml"), tmp_path / "out", device="cpu", progress=False)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert [(r["model"], r["nfe"], r["family"], r["schedule"]) for r in rows] == [
        ("ect", 1, "ct", [80.0, 0.003]), ("ect", 2, "ct", [80.0, 0.821, 0.003]),
        ("sid", 1, "generator", [2.5]), ("dmd2", 1, "generator", [80.0])]
    assert all(np.isfinite(r["fid"]) for r in rows) and rows[1]["options"]["renoise"] == "ect"
    assert generator_grid(NoiseRange(), 1, {}).numel() == 0  # a generator of latents records no σ


@pytest.mark.parametrize("family, sampler, entry, where, message", [
    ("cd", "cm_multistep", {"checkpoint": "x.pkl", "format": "edm_pickle", "sigma_init": 2.5}, "sigma_init",
     "only a one-step generator"),
    ("generator", "onestep", {"checkpoint": "x.pkl", "format": "edm_pickle", "sigma_init": 0}, "sigma_init",
     "expected a number > 0, got 0"),
    ("generator", "onestep", {"checkpoint": "x.pkl", "format": "edm_pickle", "sigma_init": -2.5}, "sigma_init",
     "expected a number > 0"),
    ("generator", "onestep", {"checkpoint": "x.pkl", "format": "edm_pickle"}, "sigma_init",
     "an EDM denoiser run once at sigma_init: give it"),
    ("generator", "onestep", {"checkpoint": "x.pt", "sigma_init": 2.5}, "format",
     "give entry_point, .* or is an EDM network run once at sigma_init, loaded from edm_pickle or state_dict; "
     "got format native"),
    ("generator", "onestep", {"checkpoint": "x.pt", "format": "state_dict", "arch": "edm-imagenet-64x64-cond-adm",
                              "sigma_init": 80}, "arch", "accepted: dmd2-imagenet-64x64-cond"),
    ("generator", "onestep", {"checkpoint": "x.pkl", "format": "edm_pickle", "sigma_init": 2.5, "sigma_max": 80},
     "sigma_max", "only noise level is sigma_init"),
    ("generator", "onestep", {"entry_point": "nets.py:build", "image_shape": [3, 8, 8], "sigma_init": 2.5},
     "sigma_init", "unknown key"),
    ("generator", "onestep", {"image_shape": [3, 8, 8]}, "",
     "give checkpoint, format edm_pickle or state_dict, and sigma_init"),
])
def test_bad_generator_entries_are_refused_before_loading(tmp_path, family, sampler, entry, where, message):
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"}, "models": {"m": {"family": family, **entry}},
           "runs": [{"model": "m", "sampler": sampler, "nfe": [1]}]}
    with pytest.raises(ConfigError, match=rf"models\.m{'.' + where if where else ''}: .*{message}"):
        parse_suite(raw, "t.yaml", tmp_path)


def test_a_bad_renoise_is_refused():
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"},
           "models": {"m": {"family": "ct", "checkpoint": "x.pkl", "format": "edm_pickle"}},
           "runs": [{"model": "m", "sampler": "cm_multistep", "nfe": [2], "options": {"renoise": "full"}}]}
    with pytest.raises(ConfigError, match=r"runs\[0\]\.options: .*renoise = 'full' is not accepted; expected cm or ect"):
        parse_suite(raw, "t.yaml", Path("."))


def test_snapshots_are_refused_for_families_their_preconditioner_does_not_serve(tmp_path):
    write_ect_snapshot(tmp_path / "ect.pkl", random_net("song_unet", TINY_SONG), TINY_SONG)
    write_sid_snapshot(tmp_path / "sid.pkl", random_net("song_unet", TINY_SONG), "SongUNet", TINY_SONG)
    with pytest.raises(ValueError, match=r"checkpoint ect\.pkl: its 'cm' preconditioner serves family cd or ct, "
                                         r"but the suite says family 'edm'"):
        model_from(tmp_path, "edm", "heun", checkpoint="ect.pkl", format="edm_pickle")
    with pytest.raises(ValueError, match=r"checkpoint sid\.pkl: its 'edm' preconditioner serves family edm or pd or "
                                         r"generator, but the suite says family 'ct'"):
        model_from(tmp_path, "ct", "cm_multistep", checkpoint="sid.pkl", format="edm_pickle")


@pytest.mark.parametrize("sigma_init", [0.0, -1.0, float("nan"), float("inf"), True, None])
def test_denoiser_generator_refuses_a_bad_sigma_init(sigma_init):
    with pytest.raises(ValueError, match="sigma_init must be a positive finite number"):
        DenoiserGeneratorModel(nn.Identity(), sigma_init=sigma_init, image_shape=(1, 8, 8))


def test_denoiser_generator_needs_edm_preconditioning():
    with pytest.raises(ValueError, match="needs an EDMPrecond network .*got preconditioning 'vp'"):
        DenoiserGeneratorModel(nn.Identity(), sigma_init=2.5, image_shape=(1, 8, 8), preconditioning="vp")


# --- the paper suites ------------------------------------------------------------------------------------

PAPER = {"ect_cifar10": {1: 3.60, 2: 2.11}, "sid_cifar10": {1: 1.923}, "sid_imagenet64": {1: 1.524},
         "dmd2_imagenet64": {1: 1.28}}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_suites_validate_with_official_settings_and_published_numbers(name):
    suite = load_suite(SUITES / f"{name}.yaml")
    profile = "dmd2" if name.startswith("dmd2") else "edm"  # DMD2's script truncates where EDM rounds
    assert suite.num_samples == 50_000 and suite.profile == profile and suite.paper_source and suite.checkpoints_dir
    assert suite.reference["registry"] == ("edm-cifar10-32" if "cifar10" in name else "edm-imagenet-64")
    first = suite.rows[0]
    assert {row.nfe: row.paper["fid"] for row in suite.rows if row.model == first.model} == PAPER[name]
    for spec in suite.models.values():
        if name == "ect_cifar10":
            assert (spec.family, spec.options["format"]) == ("ct", "edm_pickle")
        else:
            assert spec.family == "generator" and spec.options["sigma_init"] == (80.0 if "dmd2" in name else 2.5)
    if name == "ect_cifar10":
        options = suite.rows[1].options
        assert (options["renoise"], options["clip_denoised"], options["time_points"][2][:2]) == ("ect", False, [80.0, 0.821])


def test_sid_imagenet64_is_the_cifar10_recipe_with_the_imagenet_network():
    """So the CIFAR-10 end-to-end run below covers SiD ImageNet-64's row (the same loader, adapter,
    sampler and profile; its DhariwalUNet pickle path is edm_imagenet64's, its one-step forward
    DMD2's): a second 296M-parameter CPU run would add a minute and nothing else."""
    cifar, imagenet = (load_suite(SUITES / f"sid_{name}.yaml") for name in ("cifar10", "imagenet64"))
    recipe = lambda suite, spec: ({k: v for k, v in spec.options.items() if k not in ("checkpoint", "precision")},  # noqa: E731
                                  [(r.sampler, r.nfe, r.options) for r in suite.rows][:1], suite.profile)
    assert recipe(cifar, cifar.models["uncond"]) == recipe(imagenet, imagenet.models["sid"])
    assert imagenet.models["sid"].options["precision"] == "fp16" and imagenet.rows[0].paper == {"fid": 1.524}


def write_official_checkpoint(name: str, suite, folder: Path) -> None:
    """The first model's checkpoint at official size with random weights, in its official format."""
    spec = suite.models[suite.rows[0].model].options
    path = folder / spec["checkpoint"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if name == "dmd2_imagenet64":
        preset = official_arch(spec["arch"])
        state = random_full_size(preset.arch, preset.kwargs).state_dict()
        torch.save({preset.strip_prefix + key: value for key, value in state.items()}, path)
    elif name == "ect_cifar10":
        kwargs = dict(img_resolution=32, in_channels=3, out_channels=3, label_dim=0, **ECT_DDPMPP)
        write_ect_snapshot(path, random_full_size("song_unet", kwargs), kwargs)
    else:
        _, kwargs = EDM_PRESETS["edm-cifar10-32x32-uncond-vp"]  # SiD's generator is its EDM teacher's network
        write_sid_snapshot(path, random_full_size("song_unet", kwargs), "SongUNet", kwargs)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 samples in 2048-d
@pytest.mark.parametrize("name", ["ect_cifar10", "sid_cifar10", "dmd2_imagenet64"])
def test_first_row_runs_end_to_end_on_cpu_with_random_weights(name, tmp_path, official_inception, monkeypatch):
    monkeypatch.setattr(fid_module, "_trace_sqrt_sqrtm", low_rank_trace_sqrt)
    suite = load_suite(SUITES / f"{name}.yaml", [f"checkpoints_dir={tmp_path}", f"reference.dir={tmp_path}",
                                                 "num_samples=4", "batch_size=4", "grid_images=2", "precision=fp32",
                                                 "uncertainty={bootstrap: 0}"])
    row = suite.rows[0]
    suite = replace(suite, rows=[row], models={row.model: suite.models[row.model]})
    write_official_checkpoint(name, suite, tmp_path)
    write_reference(suite, tmp_path, official_inception)
    run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    (result,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert result["row_id"] == row.row_id and result["nfe"] == row.nfe == 1 and np.isfinite(result["fid"])
    assert result["checkpoint_sha256"] == sha256_file(tmp_path / suite.models[row.model].options["checkpoint"])
    assert result["options"] == json.loads(json.dumps(row.options)) and result["quantisation"] == suite.quantisation
    assert suite.quantisation == ("truncate" if name.startswith("dmd2") else "round")  # as each official script
    expected_schedule = {"ect_cifar10": [80.0, 0.002], "sid_cifar10": [2.5], "dmd2_imagenet64": [80.0]}[name]
    assert result["schedule"] == expected_schedule
