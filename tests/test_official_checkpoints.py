"""Official checkpoint formats through a suite: presets, state dicts, EDM pickles, precision.

Each test writes a randomly initialised network in an official format, loads it the way a suite
does (``build_model``) and checks the adapter's outputs against the original network's.
"""

import hashlib
import math

import numpy as np
import pytest
import torch

from cmbench.checkpoints.official import OFFICIAL_ARCHS, OfficialArch, official_arch
from cmbench.models import build_model
from cmbench.models.loading import edm_pickle_options
from cmbench.nets import build_network
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError

import edm_snapshots

TINY_ADM = dict(image_size=8, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                attention_resolutions=(4,), channel_mult=(1, 2), num_classes=5, num_head_channels=16,
                use_scale_shift_norm=True, resblock_updown=True)
TINY_SONG = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=0, augment_dim=9, model_channels=16,
                 channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.13)


def randomised(net, seed=0):
    """Random weights everywhere (the released nets' zero-initialised output layers would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return net.eval()


@pytest.fixture
def tiny_presets(monkeypatch):
    """Small stand-ins for the released presets, registered under new names."""
    presets = {
        "tiny-adm": OfficialArch("tiny-adm", "adm_unet", TINY_ADM,
                                 {"image_shape": [3, 8, 8], "label_dim": 5, "noise_label_scale": 1000.0}, "test"),
        "tiny-adm-ctm": OfficialArch("tiny-adm-ctm", "adm_unet", {**TINY_ADM, "s_embedding": True},
                                     {"image_shape": [3, 8, 8], "label_dim": 5, "noise_label_scale": 1000.0}, "test"),
        "tiny-ctm-cifar": OfficialArch("tiny-ctm-cifar", "song_unet", {**TINY_SONG, "augment_dim": 0, "s_embedding": True},
                                       {"image_shape": [3, 8, 8], "label_dim": 0}, "test", strip_prefix="model."),
    }
    for name, preset in presets.items():
        monkeypatch.setitem(OFFICIAL_ARCHS, name, preset)
    return presets


def model_from(tmp_path, family, **entry):
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"}, "models": {"m": {"family": family, **entry}},
           "runs": [{"model": "m", "sampler": "heun" if family in ("edm", "ctm") else "cm_multistep", "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    return build_model(family, suite.models["m"].options, suite.checkpoint_dir)


def batch(seed=1, labels=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    return x, torch.tensor([0.7, 12.0], dtype=torch.float64), torch.tensor([1, 4]) if labels else None


# --- presets ------------------------------------------------------------------------------------

EXPECTED = {  # keys, parameters (the official nets' counts; see tests/test_nets_adm.py, test_nets_edm.py)
    "adm-imagenet64": (541, 295_899_267),
    "adm-lsun256": (566, 526_304_771),
    "adm-imagenet64-ctm": (617, 324_100_611),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_ARCHS))
def test_every_preset_builds_and_says_how_its_network_sees_sigma(name):
    preset = official_arch(name)
    with torch.device("meta"):
        net = build_network(preset.arch, preset.kwargs)
    keys, params = len(net.state_dict()), sum(p.numel() for p in net.parameters())
    assert set(dict(net.named_buffers())) <= set(net.state_dict())  # all persistent: the loader assigns them
    if name in EXPECTED:
        assert (keys, params) == EXPECTED[name]
    channels, height, width = preset.model_options["image_shape"]
    assert channels == 3 and height == width and height in (32, 64, 256)
    openai = name.startswith("adm-")
    assert preset.model_options.get("noise_label_scale", 1.0) == (1000.0 if openai else 1.0)  # 250·ln σ vs ln(σ)/4
    assert preset.strip_prefix == ("model." if name.startswith(("ctm-", "dmd2-")) else "")  # whole preconditioners


def test_unknown_preset_lists_the_accepted(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.arch: 'adm-imagenet65' is not accepted; accepted: adm-imagenet64"):
        model_from(tmp_path, "cd", checkpoint="x.pt", format="state_dict", arch="adm-imagenet65")
    with pytest.raises(ConfigError, match=r"models\.m\.arch: a state_dict checkpoint needs its architecture preset"):
        model_from(tmp_path, "cd", checkpoint="x.pt", format="state_dict")
    with pytest.raises(ConfigError, match=r"models\.m\.arch: only state_dict checkpoints take an arch"):
        model_from(tmp_path, "cd", checkpoint="x.pt", arch="adm-imagenet64")


# --- openai / CTM state dicts --------------------------------------------------------------------


def test_openai_state_dict_loads_strictly_and_gives_the_networks_outputs(tmp_path, tiny_presets):
    net = randomised(build_network("adm_unet", TINY_ADM))
    path = tmp_path / "cd_tiny.pt"
    torch.save(net.state_dict(), path)
    model = model_from(tmp_path, "cd", checkpoint="cd_tiny.pt", format="state_dict", arch="tiny-adm")
    assert model.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x, sigma, labels = batch()
    with torch.no_grad():
        raw = net(x.float() / (sigma**2 + 0.25).sqrt().reshape(-1, 1, 1, 1).float(), (250 * sigma.log()).float(), labels)
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = 0.25 / ((s - 0.002) ** 2 + 0.25)
    c_out = (s - 0.002) * 0.5 / (s**2 + 0.25).sqrt()
    torch.testing.assert_close(model.consistency(x, sigma, labels), c_skip * x + c_out * raw.double(), rtol=1e-5, atol=1e-5)


def test_ctm_state_dict_jump_uses_the_s_branch(tmp_path, tiny_presets):
    net = randomised(build_network("adm_unet", {**TINY_ADM, "s_embedding": True}), seed=3)
    torch.save(net.state_dict(), tmp_path / "ctm.pt")
    model = model_from(tmp_path, "ctm", checkpoint="ctm.pt", format="state_dict", arch="tiny-adm-ctm")
    x, t, labels = batch()
    s = torch.tensor([0.3, 2.0], dtype=torch.float64)
    with torch.no_grad():
        c_in = 1 / (t**2 + 0.25).sqrt()
        raw = net((x * c_in.reshape(-1, 1, 1, 1)).float(), (250 * t.log()).float(), labels, (250 * s.log()).float())
    tt = t.reshape(-1, 1, 1, 1)
    g = 0.25 / (tt**2 + 0.25) * x + tt * 0.5 / (tt**2 + 0.25).sqrt() * raw.double()
    ratio = (s / t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(model.jump(x, t, s, labels), ratio * x + (1 - ratio) * g, rtol=1e-5, atol=1e-5)


def test_ctm_cifar_keys_lose_their_preconditioner_prefix(tmp_path, tiny_presets):
    net = randomised(build_network("song_unet", {**TINY_SONG, "augment_dim": 0, "s_embedding": True}))
    torch.save({f"model.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ctm_cifar.pt")
    model = model_from(tmp_path, "ctm", checkpoint="ctm_cifar.pt", format="state_dict", arch="tiny-ctm-cifar")
    for mine, theirs in zip(model.net.state_dict().values(), net.state_dict().values()):
        assert torch.equal(mine, theirs)


def test_a_state_dict_that_does_not_fit_names_keys_and_shapes(tmp_path, tiny_presets):
    state = randomised(build_network("adm_unet", TINY_ADM)).state_dict()
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: state_dict does not fit.*missing keys \(1\): out\.2\.bias.*"
                                         r"unexpected keys \(1\): extra\.weight.*time_embed\.0\.weight: file \(3, 3\)"):
        model_from(tmp_path, "cd", checkpoint="bad.pt", format="state_dict", arch="tiny-adm")


class NotTensors:
    pass


def test_a_pickled_object_is_refused_not_run(tmp_path, tiny_presets):
    torch.save({"weights": NotTensors()}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match=r"obj\.pt is not a plain state dict: torch\.load\(weights_only=True\) refused it"):
        model_from(tmp_path, "cd", checkpoint="obj.pt", format="state_dict", arch="tiny-adm")


def test_checkpoints_dir_is_where_relative_checkpoints_start(tmp_path, tiny_presets):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.save(randomised(build_network("adm_unet", TINY_ADM)).state_dict(), folder / "cd.pt")
    raw = {"name": "t", "num_samples": 2, "checkpoints_dir": str(folder), "reference": {"path": "unused.npz"},
           "models": {"m": {"family": "cd", "checkpoint": "cd.pt", "format": "state_dict", "arch": "tiny-adm"}},
           "runs": [{"model": "m", "sampler": "cm_multistep", "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    assert suite.checkpoint_dir == folder
    assert build_model("cd", suite.models["m"].options, suite.checkpoint_dir).image_shape == (3, 8, 8)


# --- EDM pickles ---------------------------------------------------------------------------------

SONG_SRC = "from cmbench.nets.song_unet import SongUNet\n"  # a module source the loader must not run


@pytest.mark.parametrize("precond", ["EDMPrecond", "VPPrecond", "VEPrecond"])
def test_edm_pickle_through_a_suite_gives_edms_denoiser(tmp_path, precond):
    song = randomised(build_network("song_unet", TINY_SONG))
    attrs = {"EDMPrecond": dict(sigma_min=0, sigma_max=math.inf, sigma_data=np.float64(0.5)),
             "VPPrecond": dict(beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5, sigma_min=0.0045, sigma_max=151.6),
             "VEPrecond": dict(sigma_min=0.02, sigma_max=100.0)}[precond]
    wrapper = torch.nn.Module()
    wrapper.__dict__.update(img_resolution=8, img_channels=3, label_dim=0, use_fp16=False, **attrs)
    wrapper.model = song
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('ran')\n" + SONG_SRC
    edm_snapshots.write_snapshot(tmp_path / "net.pkl", wrapper, "SongUNet", TINY_SONG, src=src, precond_name=precond)
    model = model_from(tmp_path, "edm", checkpoint="net.pkl", format="edm_pickle")
    assert not marker.exists()
    x, sigma, _ = batch(labels=False)
    s = sigma.reshape(-1, 1, 1, 1)
    if precond == "EDMPrecond":
        c_skip, c_out, c_in, c_noise = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt(), 1 / (s**2 + 0.25).sqrt(), sigma.log() / 4
        assert (model.sigma_min, model.sigma_max) == (0.002, 80.0)  # generate.py's clamp of [0, ∞]
    elif precond == "VPPrecond":
        s32 = sigma.float()  # the official VPPrecond computes its noise label in float32
        t = (((0.1**2 + 2 * 19.9 * (1 + s32**2).log()).sqrt() - 0.1) / 19.9).double()
        c_skip, c_out, c_in, c_noise = 1.0, -s, 1 / (s**2 + 1).sqrt(), 999 * t
        assert (model.sigma_min, model.sigma_max) == (0.0045, 80.0)
    else:
        c_skip, c_out, c_in, c_noise = 1.0, s, 1.0, (0.5 * sigma).log()
        assert (model.sigma_min, model.sigma_max) == (0.02, 80.0)
    with torch.no_grad():
        raw = song((c_in * x).float(), c_noise.float()).double()
    torch.testing.assert_close(model.denoise(x, sigma), c_skip * x + c_out * raw, rtol=1e-5, atol=1e-5)


def test_edm_pickle_options_refuse_iddpm_and_keep_only_what_the_adapter_reads():
    with pytest.raises(ValueError, match="iDDPMPrecond.*not evaluated yet"):
        edm_pickle_options("iddpm", {"image_shape": [3, 8, 8]})
    out = edm_pickle_options("vp", {"image_shape": [3, 8, 8], "label_dim": 0, "sigma_min": 0.0045, "sigma_max": 151.6,
                                    "beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5, "use_fp16": True})
    assert out == {"image_shape": [3, 8, 8], "label_dim": 0, "beta_d": 19.9, "beta_min": 0.1, "M": 1000,
                   "sigma_min": 0.0045, "sigma_max": 80.0, "preconditioning": "vp", "time_input": "vp"}


@pytest.mark.parametrize("entry, where, message", [
    ({"format": "native", "trust_pickle_code": True}, "trust_pickle_code", "only edm_pickle checkpoints"),
    ({"format": "edm_pickle", "preconditioning": "vp"}, "preconditioning", "an EDM pickle's preconditioner class sets it"),
    ({"precision": "fp8"}, "precision", "accepted: fp32, fp16, bf16"),
    ({"time_input": "t"}, "time_input", "accepted: log_sigma, vp, ve, inv_cos, sigmoid_logsnr"),
])
def test_loading_options_are_checked(tmp_path, entry, where, message):
    with pytest.raises(ConfigError, match=rf"models\.m\.{where}: .*{message}"):
        model_from(tmp_path, "edm", checkpoint="x.pt", **entry)


# --- precision and compile -------------------------------------------------------------------------


def test_bf16_autocast_runs_the_network_in_bf16_and_returns_the_callers_dtype(tmp_path, tiny_presets):
    torch.save(randomised(build_network("adm_unet", TINY_ADM)).state_dict(), tmp_path / "edm.pt")
    fp32 = model_from(tmp_path, "edm", checkpoint="edm.pt", format="state_dict", arch="tiny-adm")
    bf16 = model_from(tmp_path, "edm", checkpoint="edm.pt", format="state_dict", arch="tiny-adm", precision="bf16")
    x, sigma, labels = batch()
    a, b = fp32.denoise(x, sigma, labels), bf16.denoise(x, sigma, labels)
    assert b.dtype == torch.float64
    assert 0 < float((a - b).abs().max()) < 0.1 * float(a.abs().max())  # rounded, not broken


def test_compile_wraps_the_network_in_torch_compile(tmp_path, tiny_presets, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net: compiled.append(net) or net)
    torch.save(randomised(build_network("adm_unet", TINY_ADM)).state_dict(), tmp_path / "edm.pt")
    model = model_from(tmp_path, "edm", checkpoint="edm.pt", format="state_dict", arch="tiny-adm", compile=True)
    assert compiled == [model.net]


def test_top_level_precision_is_every_network_models_default(tmp_path):
    raw = {"name": "t", "num_samples": 2, "precision": "fp16", "reference": {"path": "unused.npz"},
           "models": {"a": {"family": "cd", "checkpoint": "a.pt"}, "b": {"family": "cd", "checkpoint": "b.pt", "precision": "fp32"}},
           "runs": [{"model": "a", "sampler": "cm_multistep", "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    assert suite.models["a"].options["precision"] == "fp16" and suite.models["b"].options["precision"] == "fp32"
