"""cmbench's DINOv2 ViT port and the ``dinov2-vitl14`` extractor (EDM2's FD_DINOv2 feature).

The port is checked against Hugging Face's independent ``Dinov2Model`` (built from a config, no
download) with the same random weights in the official key layout. transformers resizes the
positional embedding differently from DINOv2 (it passes the output size; the hub's backbones
pass the scale factor ``(grid + 0.1) / M``), so the two are compared where no resize happens,
and with the grid resized by a transcription of DINOv2's ``interpolate_pos_encoding`` and
handed to transformers ready-made. The preprocessing is checked against a transcription of
EDM2's ``DINOv2Detector`` (calculate_metrics.py), both resize modes.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import PIL.Image
import pytest
import torch

from cmbench.checkpoints import sha256_file
from cmbench.features.dinov2 import NAMES, DINOv2Extractor, preprocess
from cmbench.nets.dinov2 import VITL14, DINOv2Config, DINOv2ViT, build_dinov2, check_state_dict, interpolate_pos_embed, official_layout
from cmbench.reference_impls import torchvision_stubbed
from cmbench.weights import WeightsHashError

SMALL = DINOv2Config(embed_dim=64, depth=2, num_heads=4, patch_size=14, img_size=70)  # pos_embed grid 5×5


def random_state(config: DINOv2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official key layout, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout(config).items():
        x = torch.randn(shape, generator=g)
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            x = 1 + 0.2 * x
        elif key.endswith("gamma"):
            x = 0.5 + 0.2 * x
        elif key.endswith(".weight"):
            x = x / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".bias"):
            x = 0.1 * x
        else:  # cls_token, pos_embed, mask_token
            x = 0.5 * x
        state[key] = x
    return state


# --- transcriptions of the official code ------------------------------------------------------


def official_interpolation(pos_embed: torch.Tensor, h: int, w: int, patch: int, offset=0.1, antialias=False):
    """DINOv2's interpolate_pos_encoding (vision_transformer.py) for an h×w input, transcribed."""
    n = pos_embed.shape[1] - 1
    h0, w0 = h // patch, w // patch
    if h0 * w0 == n and h == w:
        return pos_embed
    m = int(math.sqrt(n))
    grid = pos_embed.float()[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    if offset:
        kwargs = {"scale_factor": (float(h0 + offset) / m, float(w0 + offset) / m)}
    else:
        kwargs = {"size": (h0, w0)}
    grid = torch.nn.functional.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    assert grid.shape[-2:] == (h0, w0)
    grid = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat((pos_embed[:, :1].float(), grid), dim=1)


def edm2_preprocess(x: torch.Tensor, resize_mode: str) -> torch.Tensor:
    """EDM2's DINOv2Detector.__call__ up to the model call, transcribed (uint8 NCHW RGB in)."""
    if resize_mode == "pil":
        x = x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        x = np.stack([np.uint8(PIL.Image.fromarray(xx, "RGB").resize((224, 224), PIL.Image.Resampling.BICUBIC)) for xx in x])
        x = torch.from_numpy(x).permute(0, 3, 1, 2)
    else:
        x = torch.nn.functional.interpolate(x.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x.to(torch.float32) / 255
    x = x - torch.as_tensor(np.asarray([0.485, 0.456, 0.406]), dtype=torch.float32).reshape(1, -1, 1, 1)
    return x / torch.as_tensor(np.asarray([0.229, 0.224, 0.225]), dtype=torch.float32).reshape(1, -1, 1, 1)


# --- Hugging Face's Dinov2Model as the independent reference -----------------------------------


def transformers_features(state, config: DINOv2Config, images: torch.Tensor, pos_embed=None):
    """(CLS, patch mean) of transformers' Dinov2Model holding ``state`` (``pos_embed`` replaces it).

    transformers imports torchvision when it is installed, which does not load against a CPU torch
    build; cmbench.reference_impls stubs it for the duration (nothing here uses it).
    """
    with torchvision_stubbed(dependents=("transformers",)):
        hf = importlib.import_module("transformers.models.dinov2.modeling_dinov2")
        hf_config = importlib.import_module("transformers.models.dinov2.configuration_dinov2").Dinov2Config(
            hidden_size=config.embed_dim, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
            patch_size=config.patch_size, image_size=images.shape[-1] if pos_embed is not None else config.img_size,
            mlp_ratio=int(config.mlp_ratio), layer_norm_eps=config.layer_norm_eps, hidden_act="gelu", qkv_bias=True,
            layerscale_value=1.0, use_swiglu_ffn=False,
        )
        model = hf.Dinov2Model(hf_config).eval()
        mapped = to_transformers(state, config, model.state_dict().keys())
        if pos_embed is not None:
            mapped["embeddings.position_embeddings"] = pos_embed
        model.load_state_dict(mapped, strict=True)
        with torch.no_grad():
            tokens = model(pixel_values=images).last_hidden_state
    return tokens[:, 0], tokens[:, 1:].mean(dim=1)


def to_transformers(state, config: DINOv2Config, hf_keys) -> dict[str, torch.Tensor]:
    """The official state dict under transformers' names (qkv split into query, key, value)."""
    new_names = "encoder.layer.0.attention.q_proj.weight" in hf_keys  # transformers ≥ 5 renamed them
    q, k, v, o = ("q_proj", "k_proj", "v_proj", "o_proj") if new_names else (
        "attention.query", "attention.key", "attention.value", "output.dense")
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(config.depth):
        a, b = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            for name, tensor in zip((q, k, v), state[a + f"attn.qkv.{part}"].chunk(3)):
                out[b + f"attention.{name}.{part}"] = tensor
            out[b + f"attention.{o}.{part}"] = state[a + f"attn.proj.{part}"]
            for same in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[b + f"{same}.{part}"] = state[a + f"{same}.{part}"]
        out[b + "layer_scale1.lambda1"] = state[a + "ls1.gamma"]
        out[b + "layer_scale2.lambda1"] = state[a + "ls2.gamma"]
    assert set(out) == set(hf_keys), sorted(set(out) ^ set(hf_keys))
    return out


# --- the network ---------------------------------------------------------------------------------


def test_port_matches_transformers_at_the_trained_grid():
    state = random_state(SMALL)
    images = torch.randn(3, 3, 70, 70, generator=torch.Generator().manual_seed(1))
    ours = build_dinov2(state, SMALL)(images)
    cls, patch_mean = transformers_features(state, SMALL, images)
    torch.testing.assert_close(ours.cls, cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.patch_mean, patch_mean, rtol=0, atol=1e-5)
    assert ours.cls.abs().max() > 0.1  # not a trivially small output


def test_port_matches_transformers_with_dinov2s_interpolation():
    """A 56×56 input (4×4 grid) against the 5×5 pos_embed: DINOv2's resize, then the same numbers."""
    state = random_state(SMALL, seed=2)
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    ours = build_dinov2(state, SMALL)(images)
    resized = official_interpolation(state["pos_embed"], 56, 56, SMALL.patch_size)
    cls, patch_mean = transformers_features(state, SMALL, images, pos_embed=resized)
    torch.testing.assert_close(ours.cls, cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.patch_mean, patch_mean, rtol=0, atol=1e-5)
    # transformers' own resize (output size, no 0.1 offset) gives other numbers: it is not DINOv2's
    their_cls, _ = transformers_features(state, SMALL, images)
    assert (their_cls - ours.cls).abs().max() > 1e-3


@pytest.mark.parametrize("grid, target, dim", [(37, 16, 8), (5, 4, 6), (5, 16, 6), (4, 4, 3)])
def test_pos_embed_interpolation_is_dinov2s(grid, target, dim):
    """37×37 → 16×16 is ViT-L/14's at 224×224: bicubic with scale factor (16 + 0.1) / 37, no antialias."""
    pos = torch.randn(1, grid * grid + 1, dim, generator=torch.Generator().manual_seed(grid))
    ours = interpolate_pos_embed(pos, target, target, offset=0.1, antialias=False)
    assert torch.equal(ours, official_interpolation(pos, 14 * target, 14 * target, 14))
    assert ours.shape == (1, target * target + 1, dim) and torch.equal(ours[:, 0], pos[:, 0])
    if grid != target:  # the scale factor, not the size, decides the sampling positions
        by_size = interpolate_pos_embed(pos, target, target, offset=0.0, antialias=False)
        assert (by_size - ours).abs().max() > 1e-2


def test_official_vitl14_layout_without_memory():
    """ViT-L/14's keys and shapes: what torch.hub's dinov2_vitl14 holds (block_chunks 0, init_values 1)."""
    layout = official_layout(VITL14)
    assert (VITL14.embed_dim, VITL14.depth, VITL14.num_heads, VITL14.patch_size, VITL14.img_size) == (1024, 24, 16, 14, 518)
    assert layout["pos_embed"] == (1, 1370, 1024) and layout["cls_token"] == (1, 1, 1024)
    assert layout["mask_token"] == (1, 1024) and layout["patch_embed.proj.weight"] == (1024, 3, 14, 14)
    assert layout["blocks.23.attn.qkv.weight"] == (3072, 1024) and layout["blocks.23.mlp.fc1.weight"] == (4096, 1024)
    assert layout["blocks.0.ls1.gamma"] == (1024,) and "blocks.24.norm1.weight" not in layout
    assert len(layout) == 5 + 24 * 14 + 2
    assert sum(math.prod(s) for s in layout.values()) == 304_368_640  # ×4 bytes ≈ the 1.22 GB file
    with torch.device("meta"):
        net = DINOv2ViT(VITL14)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == layout
    check_state_dict({k: torch.empty(s, device="meta") for k, s in layout.items()}, VITL14, "meta")


def test_bad_state_dicts_are_refused_naming_the_key():
    state = random_state(SMALL)
    cases = [
        ({k: v for k, v in state.items() if k != "blocks.1.ls2.gamma"}, "missing key 'blocks.1.ls2.gamma' (expected shape [64])"),
        ({**state, "register_tokens": torch.zeros(1, 4, 64)}, "unexpected key 'register_tokens'"),
        ({**state, "head.weight": torch.zeros(3, 64)}, "unexpected key 'head.weight'"),
        ({**state, "pos_embed": torch.zeros(1, 17, 64)}, "key 'pos_embed' has shape [1, 17, 64], expected [1, 26, 64]"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match="some.pth is not a DINOv2 state dict") as error:
            build_dinov2(bad, SMALL, source="some.pth")
        assert message in str(error.value)
    with pytest.raises(ValueError, match="expected a dict of parameter names to tensors"):
        check_state_dict({"model": {"cls_token": 1}}, SMALL, "some.pth")


# --- preprocessing and the extractor ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["torch", "pil"])
def test_preprocessing_is_edm2s(mode):
    images = torch.randint(0, 256, (3, 3, 40, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    ours = preprocess(images, mode)
    assert ours.dtype == torch.float32 and ours.shape == (3, 3, 224, 224)
    assert torch.equal(ours, edm2_preprocess(images, mode))


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vitl14_pretrain.pth"
    torch.save(random_state(SMALL, seed=5), path)
    return path


def test_extractor_is_edm2s_pipeline(small_weights):
    """Features = transformers' network with DINOv2's pos_embed resize on EDM2's preprocessed input."""
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    extractor = DINOv2Extractor(small_weights, expected_sha256=None, config=SMALL, batch_size=2)
    assert extractor.name == "dinov2-vitl14" and extractor.layers == ("dinov2", "dinov2_patch_mean")
    assert extractor.weights_sha256 == sha256_file(small_weights)
    out = extractor.extract(images, ["dinov2", "dinov2_patch_mean"])
    state = random_state(SMALL, seed=5)
    resized = official_interpolation(state["pos_embed"], 224, 224, SMALL.patch_size)
    cls, patch_mean = transformers_features(state, SMALL, edm2_preprocess(images, "torch"), pos_embed=resized)
    torch.testing.assert_close(out["dinov2"], cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["dinov2_patch_mean"], patch_mean, rtol=0, atol=1e-5)
    # the batch size changes nothing; the empty set has the right width
    whole = DINOv2Extractor(small_weights, expected_sha256=None, config=SMALL, batch_size=64).extract(images, ["dinov2"])
    torch.testing.assert_close(whole["dinov2"], out["dinov2"], rtol=0, atol=1e-6)
    assert extractor.extract(images[:0], ["dinov2"])["dinov2"].shape == (0, 64)


def test_pil_resize_and_grey_images(small_weights):
    extractor = DINOv2Extractor(small_weights, resize="pil", expected_sha256=None, config=SMALL)
    assert extractor.name == NAMES["pil"] == "dinov2-vitl14+pil-resize"
    grey = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    as_rgb = grey.repeat(1, 3, 1, 1)
    assert torch.equal(extractor.extract(grey, ["dinov2"])["dinov2"], extractor.extract(as_rgb, ["dinov2"])["dinov2"])
    with torch.no_grad():
        expected = extractor.net(edm2_preprocess(as_rgb, "pil")).cls
    torch.testing.assert_close(extractor.extract(grey, ["dinov2"])["dinov2"], expected, rtol=0, atol=1e-6)
    for channels in (2, 4):
        with pytest.raises(ValueError, match=r"1 \(grey\) or 3 \(RGB\) channels, got shape \(1, %d, 8, 8\)" % channels):
            extractor.extract(torch.zeros(1, channels, 8, 8, dtype=torch.uint8), ["dinov2"])
    with pytest.raises(ValueError, match="has no layer"):
        extractor.extract(grey, ["pool"])


def test_extractor_refusals(small_weights, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown resize 'bilinear'; accepted: torch, pil"):
        DINOv2Extractor(small_weights, resize="bilinear", expected_sha256=None, config=SMALL)
    with pytest.raises(WeightsHashError, match="is not the expected"):
        DINOv2Extractor(small_weights, expected_sha256="0" * 64, config=SMALL)
    with pytest.raises(ValueError, match="is not a DINOv2 state dict for ViT embed_dim 1024"):
        DINOv2Extractor(small_weights, expected_sha256=None)  # the file is not ViT-L/14's layout
    pickled = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, pickled)  # a pickled module: weights_only refuses it
    with pytest.raises(ValueError, match="torch.load\\(weights_only=True\\) refused it"):
        DINOv2Extractor(pickled, expected_sha256=None, config=SMALL)
    # as tests elsewhere will: the random file stands in for the official one through the defaults
    monkeypatch.setitem(DINOv2Extractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(small_weights))
    monkeypatch.setitem(DINOv2Extractor.__init__.__kwdefaults__, "config", SMALL)
    monkeypatch.setenv("CMBENCH_DINOV2_WEIGHTS", str(small_weights.parent))
    assert DINOv2Extractor().weights_path == small_weights
