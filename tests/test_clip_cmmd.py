"""CMMD: the CLIP image tower against transformers, the preprocessing against cmmd's steps, the
metric against cmmd's distance.py definition, and the weights loader's refusals."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cmbench.checkpoints import sha256_file
from cmbench.features.clip import MEAN, STD, CLIPExtractor, crop_and_resize
from cmbench.metrics.cmmd import cmmd
from cmbench.nets.clip_vision import VITL14_336, CLIPVisionConfig, CLIPVisionTower, load_clip_vision
from cmbench.reference_impls import torchvision_stubbed
from cmbench.weights import WeightsHashError

SMALL = CLIPVisionConfig(hidden_size=32, layers=2, heads=4, patch_size=7, image_size=28, projection_dim=16)


@pytest.fixture(scope="module")
def hf():
    """transformers' CLIP vision classes (imported with torchvision stubbed out, see reference_impls)."""
    with torchvision_stubbed(dependents=("transformers",)):
        yield importlib.import_module("transformers")


def hf_config(hf, config: CLIPVisionConfig):
    return hf.CLIPVisionConfig(
        hidden_size=config.hidden_size, intermediate_size=config.mlp_ratio * config.hidden_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, patch_size=config.patch_size,
        image_size=config.image_size, projection_dim=config.projection_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


@pytest.fixture(scope="module")
def reference(hf):
    """A small CLIPVisionModelWithProjection with random weights (LayerNorms too), in eval mode."""
    torch.manual_seed(0)
    model = hf.CLIPVisionModelWithProjection(hf_config(hf, SMALL)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == SMALL.hidden_size else 0.0))
    return model


def whole_clip_file(model, tmp_path, name="pytorch_model.bin", edit=None):
    """The model's weights written as HF's whole-CLIP file: vision entries plus text-side ones."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state |= {"text_model.embeddings.token_embedding.weight": torch.randn(10, 8), "text_projection.weight": torch.randn(16, 8),
              "logit_scale": torch.tensor(4.6), "text_model.embeddings.position_ids": torch.arange(7)[None],
              "vision_model.embeddings.position_ids": torch.arange(SMALL.positions)[None]}
    if edit:
        edit(state)
    path = tmp_path / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_tower_equals_transformers(reference, tmp_path, name):
    net = load_clip_vision(whole_clip_file(reference, tmp_path, name), SMALL)
    pixels = torch.randn(5, 3, SMALL.image_size, SMALL.image_size)
    with torch.no_grad():
        ours, theirs = net(pixels), reference(pixel_values=pixels).image_embeds
    assert ours.shape == (5, SMALL.projection_dim)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    unit = ours / ours.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(unit, theirs / theirs.norm(dim=-1, keepdim=True), rtol=0, atol=1e-5)


def test_full_size_layout_matches_transformers(hf):
    """ViT-L/14@336: the same keys and shapes as transformers' model (built on the meta device, nothing allocated)."""
    with torch.device("meta"):
        ours = CLIPVisionTower(VITL14_336).state_dict()
        theirs = hf.CLIPVisionModelWithProjection(hf_config(hf, VITL14_336)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert ours["vision_model.embeddings.position_embedding.weight"].shape == (577, 1024)
    assert ours["visual_projection.weight"].shape == (768, 1024)
    # by hand: patch conv + class + positions + pre-LN, 24 blocks (attention, MLP, 2 LNs), post-LN, projection
    block = 4 * (1024 * 1024 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 2 * 2048
    assert sum(v.numel() for v in ours.values()) == 1024 * 3 * 14 * 14 + 1024 + 577 * 1024 + 2048 + 24 * block + 2048 + 768 * 1024


def cmmd_steps_reference(images: np.ndarray, size: int) -> np.ndarray:
    """cmmd's preprocessing transcribed: PIL square crop + bicubic resize of each 8-bit image, grey
    tiled to RGB afterwards, float32 / 255, then (x − mean) / std with transformers' CLIP constants (NHWC)."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    out = []
    for image in images:  # NCHW uint8
        im = Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1))
        w, h = im.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC)
        x = np.asarray(im).astype(np.float32)
        if x.ndim == 2:
            x = np.tile(x[..., np.newaxis], (1, 1, 3))
        out.append(x / 255.0)
    batch = np.stack(out)
    return (batch - np.array(OPENAI_CLIP_MEAN, dtype=np.float32)) / np.array(OPENAI_CLIP_STD, dtype=np.float32)


def test_constants_are_clips(hf):
    processor = hf.CLIPImageProcessor()
    assert MEAN == tuple(processor.image_mean) and STD == tuple(processor.image_std)


@pytest.mark.parametrize("shape", [(3, 20, 26), (3, 41, 37), (3, 28, 28), (1, 30, 24)])
def test_extractor_equals_cmmd_steps(reference, tmp_path, shape):
    """Upsampling, downsampling (antialiased), no resize, and a grey image: features as cmmd computes them."""
    path = whole_clip_file(reference, tmp_path)
    images = torch.from_numpy(np.random.default_rng(sum(shape)).integers(0, 256, size=(4, *shape), dtype=np.uint8))
    extractor = CLIPExtractor(path, expected_sha256=None, config=SMALL, batch_size=3)
    ours = extractor.extract(images, ["clip"])["clip"]
    pixels = torch.from_numpy(cmmd_steps_reference(images.numpy(), SMALL.image_size)).permute(0, 3, 1, 2)
    with torch.no_grad():
        embeds = reference(pixel_values=pixels).image_embeds
    torch.testing.assert_close(ours, embeds / torch.linalg.norm(embeds, dim=-1, keepdim=True), rtol=0, atol=1e-5)
    assert ours.dtype == torch.float32 and ours.shape == (4, SMALL.projection_dim)


def test_crop_and_resize_keeps_a_fitting_image():
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(2, 3, 28, 28), dtype=np.uint8))
    assert torch.equal(crop_and_resize(images, 28), images)


def test_jax_resize_at_the_target_size_is_the_identity():
    """cmmd's embedding model resizes its 336×336 input to 336 again (jax.image.resize, bicubic):
    the identity, which is why cmbench does not do it."""
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(2).random((2, 336, 336, 3), dtype=np.float32)
    assert np.array_equal(np.asarray(jax.image.resize(x, x.shape, method="bicubic")), x)


def test_extractor_identity_and_checks(reference, tmp_path, monkeypatch):
    path = whole_clip_file(reference, tmp_path)
    monkeypatch.setitem(CLIPExtractor.__init__.__kwdefaults__, "config", SMALL)
    monkeypatch.setitem(CLIPExtractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(path))
    extractor = CLIPExtractor(path)
    assert extractor.identity == {"extractor": "clip-vitl14-336", "extractor_sha256": sha256_file(path)}
    assert extractor.extract(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), ["clip"])["clip"].shape == (0, SMALL.projection_dim)
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
        extractor.extract(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), ["clip"])
    with pytest.raises(ValueError, match="no layer"):
        extractor.extract(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["pool"])
    with pytest.raises(WeightsHashError):
        CLIPExtractor(path, expected_sha256="0" * 64)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("vision_model.post_layernorm.bias"), "missing entry 'vision_model.post_layernorm.bias'"),
    (lambda s: s.pop("visual_projection.weight"), "missing entry 'visual_projection.weight'"),
    (lambda s: s.update({"visual_projection.weight": torch.zeros(8, 32)}), "'visual_projection.weight' has shape \\[8, 32\\]"),
    (lambda s: s.update({"vision_model.head.weight": torch.zeros(2)}), "unknown entry 'vision_model.head.weight'"),
    (lambda s: s.update({"vision_model.pre_layrnorm.bias": torch.zeros(32, dtype=torch.int64)}), "is torch.int64"),
])
def test_loader_refusals_name_the_file_and_key(reference, tmp_path, edit, message):
    path = whole_clip_file(reference, tmp_path, edit=edit)
    with pytest.raises(ValueError, match=message) as caught:
        load_clip_vision(path, SMALL)
    assert str(path) in str(caught.value)


def test_loader_refuses_what_is_not_a_state_dict(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="expected a dict"):
        load_clip_vision(path, SMALL)
    torch.save({"a": Image.new("L", (1, 1))}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_clip_vision(path, SMALL)


def distance_py(x: np.ndarray, y: np.ndarray, dtype=np.float64) -> float:
    """cmmd's distance.py mmd transcribed with whole matrices (σ = 10, ×1000, means over all pairs)."""
    x, y = x.astype(dtype), y.astype(dtype)
    gamma = 1 / (2 * 10**2)

    def mean_kernel(a, b):
        a_sq, b_sq = np.diag(a @ a.T), np.diag(b @ b.T)
        return np.mean(np.exp(-gamma * (-2 * a @ b.T + a_sq[:, None] + b_sq[None, :])))

    return float(1000 * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


def embeddings(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, 64)) + shift
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def test_cmmd_equals_distance_py():
    x, y = embeddings(300, 0), embeddings(170, 1, shift=0.1)
    expected = distance_py(x, y)
    assert cmmd(x, y, block=64) == pytest.approx(expected, rel=1e-12)
    assert cmmd(torch.from_numpy(y), x) == pytest.approx(expected, rel=1e-12)  # symmetric; tensors too
    assert cmmd(x[:120], x[120:]) == pytest.approx(distance_py(x[:120], x[120:]), rel=1e-12)
    # cmmd runs in JAX's default float32: the same value to float32 round-off (here 2.8e-5 of 0.148)
    assert cmmd(x, y) == pytest.approx(distance_py(x, y, np.float32), abs=1e-4)


def test_cmmd_by_hand():
    """k = exp(−‖a−b‖²/200); the diagonal terms (k = 1) are part of each mean."""
    e = math.exp(-0.5)  # two points 10 apart
    assert cmmd(np.zeros((1, 2)), np.array([[10.0, 0.0]])) == pytest.approx(1000 * (2 - 2 * e), rel=1e-14)
    # X = {0, 10·e1}, Y = {0}: (2 + 2e)/4 + 1 − 2·(1 + e)/2 = (1 − e)/2
    assert cmmd(np.array([[0.0, 0.0], [10.0, 0.0]]), np.zeros((1, 2))) == pytest.approx(500 * (1 - e), rel=1e-14)
    assert cmmd(np.ones((3, 4)), np.ones((5, 4))) == 0.0
    assert cmmd(np.zeros((1, 2)), np.array([[10.0, 0.0]]), sigma=5.0, scale=1.0) == pytest.approx(2 - 2 * math.exp(-2))


@pytest.mark.parametrize("real, fake, message", [
    (np.zeros((3, 4)), np.zeros((3, 5)), "differ in width: 4 vs 5"),
    (np.zeros(4), np.zeros((3, 4)), "2-D"),
    (np.zeros((0, 4)), np.zeros((3, 4)), "empty"),
    (np.array([[0.0, np.nan]]), np.zeros((3, 2)), "NaN or infinity in 1 of 1 rows"),
    (np.zeros((2, 2)), np.array([[np.inf, 0.0]]), "fake embeddings hold NaN"),
])
def test_cmmd_refusals(real, fake, message):
    with pytest.raises(ValueError, match=message):
        cmmd(real, fake)


def test_cmmd_refuses_bad_options():
    with pytest.raises(ValueError, match="sigma"):
        cmmd(np.zeros((2, 2)), np.zeros((2, 2)), sigma=0.0)
    with pytest.raises(ValueError, match="block"):
        cmmd(np.zeros((2, 2)), np.zeros((2, 2)), block=0)
