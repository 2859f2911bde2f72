"""format: diffusers — UNet2DModel folders read without diffusers, checked against diffusers itself.

Each test saves a small, fully randomised ``UNet2DModel`` with diffusers' ``save_pretrained``
(the layout of the Hugging Face copies of openai's consistency models, shrunk), loads it with
cmbench and compares outputs with diffusers' own forward pass and scheduler scalings.
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cmbench.checkpoints.diffusers_config import adm_arguments
from cmbench.checkpoints.diffusers_keys import adm_state_dict
from cmbench.checkpoints.diffusers_unet import load_diffusers_unet
from cmbench.checkpoints.hashing import folder_digest, sha256_file, sha256_path
from cmbench.checkpoints.safetensors_file import read_safetensors
from cmbench.models import build_model
from cmbench.nets import build_network
from cmbench.nets.adm_unet import ADM_PRESETS
from cmbench.reference_impls import diffusers_imported
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError

safetensors_torch = pytest.importorskip("safetensors.torch")

# openai's ImageNet-64 layout (diffusers' conversion script), shrunk: class labels, scale-shift
# norm, ResNet up/down samplers, attention at 8 and 4 with several heads.
CM_CONFIG = dict(
    sample_size=16, in_channels=3, out_channels=3, layers_per_block=2, num_class_embeds=10,
    block_out_channels=[32, 64, 64], attention_head_dim=16,
    down_block_types=["ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"],
    resnet_time_scale_shift="scale_shift", attn_norm_num_groups=32, downsample_type="resnet", upsample_type="resnet",
)
# The other branches: unconditional, additive time embedding, convolutional resamplers, one head.
PLAIN_CONFIG = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=[32, 64],
    attention_head_dim=None, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
)
SIGMAS = [0.002, 0.05, 0.7, 6.0, 80.0]


@pytest.fixture(scope="module")
def diffusers():
    """diffusers under cmbench.reference_impls' torchvision stub, for this module's tests."""
    try:
        with diffusers_imported() as module:
            yield module
    except ModuleNotFoundError as err:
        pytest.skip(f"diffusers is not installed ({err}); pip install -e .[test]")


def random_unet(diffusers, config, seed=0):
    """A UNet2DModel with every parameter random (zero-initialised layers would hide mapping bugs)."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return unet.eval()


def save(diffusers, unet, folder, *, pipeline=True, safe=True):
    if pipeline:
        scheduler = diffusers.CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0)
        diffusers.ConsistencyModelPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=safe)
    else:
        unet.save_pretrained(folder, safe_serialization=safe)
    return folder


def inputs(config, batch=len(SIGMAS), seed=1):
    gen = torch.Generator().manual_seed(seed)
    size = config["sample_size"]
    x = torch.randn(batch, config["in_channels"], size, size, generator=gen)
    sigma = torch.tensor(SIGMAS[:batch])
    labels = torch.randint(0, config["num_class_embeds"], (batch,), generator=gen) if config.get("num_class_embeds") else None
    return x, sigma, labels


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def model_from(tmp_path, family, **entry):
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"}, "models": {"m": {"family": family, **entry}},
           "runs": [{"model": "m", "sampler": "heun" if family == "edm" else "cm_multistep", "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    return build_model(family, suite.models["m"].options, suite.checkpoint_dir)


@pytest.mark.parametrize("config, pipeline, safe", [
    (CM_CONFIG, True, True), (CM_CONFIG, False, False), (PLAIN_CONFIG, False, True),
], ids=["cm-pipeline-safetensors", "cm-unet-bin", "plain-unet-safetensors"])
def test_net_matches_diffusers(diffusers, tmp_path, config, pipeline, safe):
    unet = random_unet(diffusers, config)
    folder = save(diffusers, unet, tmp_path / "ckpt", pipeline=pipeline, safe=safe)
    loaded = load_diffusers_unet(folder)
    x, sigma, labels = inputs(config)
    with torch.no_grad():
        expected = unet(x, 1000 * 0.25 * torch.log(sigma + 1e-44), labels).sample
        got = loaded.net(x, 1000 * torch.log(sigma) / 4, labels)  # as NetworkModel._call feeds it
    assert relative_error(got, expected) <= 1e-5
    assert not loaded.net.training and all(p.dtype == torch.float32 for p in loaded.net.parameters())
    assert loaded.model_options == {"image_shape": [3, config["sample_size"], config["sample_size"]],
                                    "label_dim": config.get("num_class_embeds") or 0,
                                    "time_input": "log_sigma", "noise_label_scale": 1000.0}


def test_half_precision_file_loads_as_float32(diffusers, tmp_path):
    unet = random_unet(diffusers, CM_CONFIG).half()
    folder = save(diffusers, unet, tmp_path / "ckpt", pipeline=False)
    loaded = load_diffusers_unet(folder)
    x, sigma, labels = inputs(CM_CONFIG)
    with torch.no_grad():
        expected = unet.float()(x, 1000 * 0.25 * torch.log(sigma), labels).sample
        got = loaded.net(x, 1000 * torch.log(sigma) / 4, labels)
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    assert relative_error(got, expected) <= 1e-5


def test_consistency_function_matches_the_diffusers_scheduler(diffusers, tmp_path):
    """c_skip·x + c_out·unet(c_in·x, t) with CMStochasticIterativeScheduler's own scalings and timestep."""
    unet = random_unet(diffusers, CM_CONFIG)
    folder = save(diffusers, unet, tmp_path / "cm_pipeline")
    model = model_from(tmp_path, "cd", checkpoint="cm_pipeline", format="diffusers")
    scheduler = diffusers.CMStochasticIterativeScheduler.from_pretrained(folder / "scheduler")
    x, sigma, labels = inputs(CM_CONFIG)
    x = x.double() * sigma.double()[:, None, None, None]
    sig = sigma.double()[:, None, None, None]
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition(sig)
    c_in = 1 / (sig**2 + scheduler.config.sigma_data**2).sqrt()
    t = torch.from_numpy(scheduler.sigma_to_t(sigma.double().numpy())).float()
    with torch.no_grad():
        expected = c_skip * x + c_out * unet((c_in * x).float(), t, labels).sample.double()
        got = model.consistency(x, sigma.double(), labels)
    assert relative_error(got, expected) <= 1e-5
    assert (model.sigma_min, model.sigma_max, model.sigma_data) == (scheduler.config.sigma_min, scheduler.config.sigma_max,
                                                                    scheduler.config.sigma_data)
    assert (model.image_shape, model.label_dim) == ((3, 16, 16), 10)
    assert model.checkpoint_sha256 == sha256_path(folder)


def test_deprecated_attention_names_and_legacy_block_names(diffusers, tmp_path):
    """query/key/value/proj_attn (diffusers renames them on load) and the Attn*sampleBlock2D names
    of diffusers' first conversion script read as the current names do."""
    unet = random_unet(diffusers, CM_CONFIG)
    folder = save(diffusers, unet, tmp_path / "unet", pipeline=False)
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for key, value in unet.state_dict().items():
        for new, old in renames.items():
            key = key.replace(new, old)
        state[key] = value.contiguous()
    safetensors_torch.save_file(state, folder / "diffusion_pytorch_model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["down_block_types"] = [b.replace("AttnDownBlock2D", "AttnDownsampleBlock2D") for b in config["down_block_types"]]
    config["up_block_types"] = [b.replace("AttnUpBlock2D", "AttnUpsampleBlock2D") for b in config["up_block_types"]]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_diffusers_unet(folder)
    x, sigma, labels = inputs(CM_CONFIG)
    with torch.no_grad():
        expected = unet(x, 250 * torch.log(sigma), labels).sample
        assert relative_error(loaded.net(x, 250 * torch.log(sigma), labels), expected) <= 1e-5


# The UNet configs of diffusers' scripts/convert_consistency_to_diffusers.py (the Hub copies).
HUB_IMAGENET64 = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=3, num_class_embeds=1000,
    block_out_channels=[192, 384, 576, 768], attention_head_dim=64,
    down_block_types=["ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"],
    resnet_time_scale_shift="scale_shift", attn_norm_num_groups=32, upsample_type="resnet", downsample_type="resnet",
)
HUB_LSUN256 = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2, num_class_embeds=None,
    block_out_channels=[256, 256, 512, 512, 1024, 1024], attention_head_dim=64,
    down_block_types=["ResnetDownsampleBlock2D"] * 3 + ["AttnDownBlock2D"] * 3,
    up_block_types=["AttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"] * 3,
    resnet_time_scale_shift="default", upsample_type="resnet", downsample_type="resnet",
)


@pytest.mark.parametrize("config, preset", [(HUB_IMAGENET64, "adm-imagenet64"), (HUB_LSUN256, "adm-lsun256")])
def test_hub_layouts_are_the_official_presets(diffusers, config, preset):
    """The Hub's full-size configs give the presets openai's .pt files load into, and every one of
    their tensors finds its place (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        unet = diffusers.UNet2DModel(**config)
    saved = {"_class_name": "UNet2DModel", **{k: v for k, v in unet.config.items() if not k.startswith("_")}}
    kwargs = adm_arguments(saved, Path("config.json"))
    expected = {k: v for k, v in ADM_PRESETS[preset].items() if k != "num_heads"}  # num_head_channels rules
    assert {k: kwargs[k] for k in expected} == expected
    with torch.device("meta"):
        net = build_network("adm_unet", kwargs)
    state = adm_state_dict(dict(unet.state_dict()), net, kwargs, Path("weights"))
    assert set(state) == set(net.state_dict())
    assert sum(t.numel() for t in state.values()) == sum(p.numel() for p in unet.parameters())


# --- hashes ---------------------------------------------------------------------------------------

def test_digest_covers_config_and_weights_whichever_folder_is_named(diffusers, tmp_path):
    folder = save(diffusers, random_unet(diffusers, PLAIN_CONFIG), tmp_path / "pipe")
    unet_dir = folder / "unet"
    expected = folder_digest([("config.json", sha256_file(unet_dir / "config.json")),
                              ("diffusion_pytorch_model.safetensors", sha256_file(unet_dir / "diffusion_pytorch_model.safetensors"))])
    pairs = json.dumps(sorted([["config.json", sha256_file(unet_dir / "config.json")],
                               ["diffusion_pytorch_model.safetensors",
                                sha256_file(unet_dir / "diffusion_pytorch_model.safetensors")]]), separators=(",", ":"))
    assert expected == hashlib.sha256(pairs.encode()).hexdigest()
    assert load_diffusers_unet(folder).sha256 == load_diffusers_unet(unet_dir).sha256 == expected
    assert sha256_path(folder) == sha256_path(unet_dir) == expected
    assert load_diffusers_unet(folder, expected_sha256=expected.upper()).sha256 == expected
    with pytest.raises(ValueError, match=f"{folder}: sha256 mismatch: expected {'0' * 64}"):
        load_diffusers_unet(folder, expected_sha256="0" * 64)
    config = json.loads((unet_dir / "config.json").read_text())
    (unet_dir / "config.json").write_text(json.dumps({**config, "_diffusers_version": "0.0.1"}))
    assert sha256_path(folder) != expected  # the config's bytes count, not only the weights


def test_sha256_path_of_files_and_other_folders(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"xyz")
    assert sha256_path(tmp_path / "a.bin") == hashlib.sha256(b"abc").hexdigest()
    pairs = [["a.bin", hashlib.sha256(b"abc").hexdigest()], ["sub/b.txt", hashlib.sha256(b"xyz").hexdigest()]]
    assert sha256_path(tmp_path) == hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sha256_path(tmp_path / "nowhere")


# --- the safetensors reader -----------------------------------------------------------------------

def test_reader_matches_the_safetensors_library(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 3).bfloat16(),
               "f64": torch.randn(7).double(), "i64": torch.arange(6).reshape(2, 3), "empty": torch.zeros(0, 2)}
    path = tmp_path / "t.safetensors"
    safetensors_torch.save_file(tensors, path, metadata={"format": "pt"})
    read = read_safetensors(bytearray(path.read_bytes()), path)
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor), name


def _file(header: dict, data: bytes) -> bytearray:
    raw = json.dumps(header).encode()
    return bytearray(len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside the 4-byte data section"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "span 4 bytes, but F32 [2] needs 8"),
    ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "dtype 'U8' is not read"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape must be a list of non-negative ints"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 6, "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "belong to no tensor"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "expected an object with keys"),
    ([1, 2], b"", "header is a JSON list"),
])
def test_reader_refuses_malformed_files(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match=str(path)) as err:
        read_safetensors(_file(header, data), path)
    assert message in str(err.value)


def test_reader_refuses_a_bad_header_length_and_duplicates(tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="fewer than the 8-byte header length"):
        read_safetensors(bytearray(b"\1\2"), path)
    with pytest.raises(ValueError, match="header length 1000 exceeds the 3 bytes"):
        read_safetensors(bytearray((1000).to_bytes(8, "little") + b"{} "), path)
    raw = b'{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}'
    with pytest.raises(ValueError, match="names 'a' more than once"):
        read_safetensors(bytearray(len(raw).to_bytes(8, "little") + raw + b"\0" * 4), path)


# --- refusals through the loader and the suite ----------------------------------------------------

@pytest.fixture
def unet_folder(diffusers, tmp_path):
    return save(diffusers, random_unet(diffusers, PLAIN_CONFIG), tmp_path / "unet", pipeline=False)


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config.json \(nor unet/config.json\)"):
        load_diffusers_unet(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_diffusers_unet(tmp_path / "missing")
    (tmp_path / "file.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; format diffusers reads a folder"):
        load_diffusers_unet(tmp_path / "file.safetensors")


def test_folder_without_weights(unet_folder):
    (unet_folder / "diffusion_pytorch_model.safetensors").rename(unet_folder / "diffusion_pytorch_model.fp16.safetensors")
    with pytest.raises(FileNotFoundError, match=r"no weights file.*found diffusion_pytorch_model.fp16.safetensors"):
        load_diffusers_unet(unet_folder)


def test_other_class_name(unet_folder):
    edit_config(unet_folder, _class_name="UNet2DConditionModel")
    with pytest.raises(ValueError, match=r"config.json: _class_name is 'UNet2DConditionModel'; .*UNet2DModel"):
        load_diffusers_unet(unet_folder)


@pytest.mark.parametrize("changes, message", [
    ({"resnet_time_scale_shift": "spatial"}, 'resnet_time_scale_shift is "spatial"'),
    ({"act_fn": "gelu"}, 'act_fn is "gelu"'),
    ({"time_embedding_type": "fourier"}, 'time_embedding_type is "fourier"'),
    ({"norm_num_groups": 16}, "norm_num_groups is 16"),
    ({"up_block_types": ["UpBlock2D", "UpBlock2D"]}, 'up_block_types[0] is "UpBlock2D"'),
    ({"down_block_types": ["CrossAttnDownBlock2D", "AttnDownBlock2D"]}, 'down_block_types[0] is "CrossAttnDownBlock2D"'),
    ({"down_block_types": ["ResnetDownsampleBlock2D", "AttnDownBlock2D"]}, "mixes them: down_block_types[0] resnet, up_block_types[0] conv"),
    ({"attention_head_dim": 24}, "attention_head_dim is 24"),
    ({"out_channels": 6}, "out_channels is 6"),
    ({"sample_size": [8, 16]}, "sample_size is [8, 16]"),
    ({"class_embed_type": "timestep"}, 'class_embed_type is "timestep"'),
    ({"cross_attention_dim": 8}, "unknown UNet2DModel setting(s) 'cross_attention_dim'"),
])
def test_config_the_adm_port_cannot_represent(unet_folder, changes, message):
    edit_config(unet_folder, **changes)
    with pytest.raises(ValueError, match=str(unet_folder / "config.json")) as err:
        load_diffusers_unet(unet_folder)
    assert message in str(err.value)


def test_truncated_safetensors(unet_folder):
    weights = unet_folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{weights}: tensor '.*': data_offsets .* lie outside .* truncated file"):
        load_diffusers_unet(unet_folder)


def test_missing_and_unexpected_weight_keys(unet_folder):
    weights = unet_folder / "diffusion_pytorch_model.safetensors"
    state = safetensors_torch.load_file(weights)
    state["extra.weight"] = state.pop("mid_block.attentions.0.to_k.weight")
    safetensors_torch.save_file(state, weights)
    with pytest.raises(ValueError, match=f"{weights}: the weights do not fit") as err:
        load_diffusers_unet(unet_folder)
    assert "missing keys (1): mid_block.attentions.0.to_k.weight" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)


def test_wrong_shape(unet_folder):
    weights = unet_folder / "diffusion_pytorch_model.safetensors"
    state = safetensors_torch.load_file(weights)
    state["conv_out.bias"] = torch.zeros(4)
    safetensors_torch.save_file(state, weights)
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): conv_out.bias: file \[4\] vs \[3\]"):
        load_diffusers_unet(unet_folder)


def test_bin_that_needs_unpickling(unet_folder):
    (unet_folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"conv_in.weight": np.zeros(3)}, unet_folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="diffusion_pytorch_model.bin is not a plain state dict"):
        load_diffusers_unet(unet_folder)


def test_suite_validation(tmp_path):
    with pytest.raises(ConfigError, match="format"):
        model_from(tmp_path, "ctm", checkpoint="x", format="diffusers")
    with pytest.raises(ConfigError, match="arch"):
        model_from(tmp_path, "cd", checkpoint="x", format="diffusers", arch="adm-imagenet64")


def test_suite_options_override_and_edm_family(diffusers, tmp_path):
    save(diffusers, random_unet(diffusers, PLAIN_CONFIG), tmp_path / "plain", pipeline=False)
    model = model_from(tmp_path, "edm", checkpoint="plain", format="diffusers", sigma_max=40.0)
    assert (model.family, model.sigma_min, model.sigma_max, model.label_dim) == ("edm", 0.002, 40.0, 0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.isfinite(model.denoise(x, torch.tensor([0.5, 3.0], dtype=torch.float64))).all()
    assert math.isclose(model.sigma_data, 0.5)


# --- a full run ------------------------------------------------------------------------------------

def test_run_of_a_diffusers_folder_resumes_and_refuses_changed_weights(diffusers, tmp_path, capsys, monkeypatch):
    """`cmbench run` of {family: cd, format: diffusers}: the rows record the folder's digest, a rerun
    resumes them untouched, and a replaced weights file makes the rerun refuse them."""
    from cmbench.cli import main

    folder = save(diffusers, random_unet(diffusers, PLAIN_CONFIG), tmp_path / "pipe")
    images = tmp_path / "images.npz"
    np.savez(images, np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    assert main(["stats", "compute", "--extractor", "pixels", "--images", str(images), "--out",
                 str(tmp_path / "ref.npz"), "--quiet", "--device", "cpu"]) == 0
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: hub\nnum_samples: 8\nbatch_size: 8\ngrid_images: 0\nfeatures: {extractor: pixels}\n"
                     "metrics: [fid]\nreference: {path: ref.npz}\nuncertainty: {bootstrap: 0}\n"
                     "models:\n  net: {family: cd, format: diffusers, checkpoint: pipe}\n"
                     "runs:\n  - {model: net, sampler: cm_multistep, nfe: [1, 2]}\n")
    out = tmp_path / "out"
    argv = ["run", str(suite), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    results = (out / "results.jsonl").read_bytes()
    rows = [json.loads(line) for line in results.splitlines()]
    assert [r["row_id"] for r in rows] == ["net.cm_multistep.nfe1", "net.cm_multistep.nfe2"]
    assert all(r["status"] == "ok" and r["fid"] > 0 and r["model_source"] == "checkpoint" for r in rows), rows
    digest = sha256_path(folder)
    assert [r["checkpoint_sha256"] for r in rows] == [digest, digest]

    import cmbench.checkpoints.diffusers_unet as loader

    def not_again(*args, **kwargs):
        raise AssertionError("the network was loaded again for finished rows")

    with monkeypatch.context() as m:
        m.setattr(loader, "load_diffusers_unet", not_again)
        assert main(argv) == 0  # resumed: nothing loaded or sampled again, not a byte of the rows changed
    assert (out / "results.jsonl").read_bytes() == results

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = safetensors_torch.load_file(weights)
    state["conv_out.bias"] = state["conv_out.bias"] + 1.0
    safetensors_torch.save_file(state, weights)
    assert sha256_path(folder) != digest
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "net.cm_multistep.nfe1" in err, err
    assert (out / "results.jsonl").read_bytes() == results
