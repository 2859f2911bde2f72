"""ADMUNet: the official CM / CTM checkpoints' keys and shapes, attention layout, forward pass."""

import math

import pytest
import torch

from cmbench.nets.adm_blocks import GroupNorm32, qkv_attention
from cmbench.nets.adm_unet import ADM_PRESETS, QKV_LAYOUTS, ADMUNet, adm_preset

# (state-dict keys, parameters) of the released checkpoints' nets (reference/facts.md §3).
OFFICIAL = {
    "adm-imagenet64": (541, 295_899_267),
    "adm-lsun256": (566, 526_304_771),
    "adm-imagenet64-ctm": (617, 324_100_611),
}

TINY = dict(
    image_size=16,
    in_channels=3,
    model_channels=32,
    out_channels=3,
    num_res_blocks=1,
    attention_resolutions=(8,),
    channel_mult=(1, 2),
    num_classes=10,
    num_head_channels=16,
    use_scale_shift_norm=True,
    resblock_updown=True,
)


def meta_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = ADMUNet(**adm_preset(name))
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


def randomised(net: ADMUNet, seed: int = 0) -> ADMUNet:
    """``net`` with every parameter redrawn: ADM zero-initialises its output convolutions, so a
    fresh net's output would not depend on anything."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 100
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return net.eval()


def tiny(seed: int = 0, **overrides) -> ADMUNet:
    return randomised(ADMUNet(**{**TINY, **overrides}), seed)


def inputs(batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 16, 16, generator=generator)
    t = 250 * torch.log(torch.linspace(0.01, 80.0, batch, dtype=torch.float64)).float()
    return x, t


# --- presets against the official checkpoints ---------------------------------------------


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_preset_key_and_parameter_counts(name):
    shapes = meta_shapes(name)
    keys, parameters = OFFICIAL[name]
    assert len(shapes) == keys
    assert sum(math.prod(shape) for shape in shapes.values()) == parameters


def test_presets_are_plain_data():
    def plain(value):
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    for name, kwargs in ADM_PRESETS.items():
        assert all(plain(v) for v in kwargs.values()), name
    copy = adm_preset("adm-imagenet64")
    copy["image_size"] = 1
    assert ADM_PRESETS["adm-imagenet64"]["image_size"] == 64
    with pytest.raises(ValueError, match="adm-lsun256"):
        adm_preset("adm-imagenet128")


def test_imagenet64_spot_shapes():
    shapes = meta_shapes("adm-imagenet64")
    expected = {
        "time_embed.0.weight": (768, 192),
        "time_embed.2.weight": (768, 768),
        "label_emb.weight": (1000, 768),
        "input_blocks.0.0.weight": (192, 3, 3, 3),
        "input_blocks.1.0.in_layers.0.weight": (192,),
        "input_blocks.1.0.emb_layers.1.weight": (384, 768),  # scale and shift
        "input_blocks.1.0.out_layers.3.weight": (192, 192, 3, 3),
        "input_blocks.4.0.in_layers.2.weight": (192, 192, 3, 3),  # the downsampling ResBlock
        "input_blocks.5.0.skip_connection.weight": (384, 192, 1, 1),
        "input_blocks.5.1.qkv.weight": (1152, 384, 1, 1),  # first attention: 32×32
        "input_blocks.5.1.proj_out.weight": (384, 384, 1, 1),
        "middle_block.1.qkv.weight": (2304, 768, 1, 1),
        "middle_block.1.norm.bias": (768,),
        "output_blocks.0.0.in_layers.0.weight": (1536,),
        "output_blocks.3.2.in_layers.2.weight": (768, 768, 3, 3),  # the upsampling ResBlock
        "out.0.weight": (192,),
        "out.2.weight": (3, 192, 3, 3),
    }
    assert {key: shapes.get(key) for key in expected} == expected
    assert not any(key.startswith("input_blocks.1.1.") for key in shapes)  # no attention at 64×64
    assert not any("_s." in key for key in shapes)


def test_attention_heads_follow_num_head_channels():
    with torch.device("meta"):
        net = ADMUNet(**adm_preset("adm-imagenet64"))
    assert net.input_blocks[5][1].num_heads == 384 // 64
    assert net.middle_block[1].num_heads == 768 // 64
    assert net.middle_block[1].qkv_layout == "three-heads-dim"


def test_ctm_keys_are_the_cm_keys_plus_the_s_branch():
    cm, ctm = meta_shapes("adm-imagenet64"), meta_shapes("adm-imagenet64-ctm")
    assert all(ctm[key] == shape for key, shape in cm.items())
    extra = set(ctm) - set(cm)
    assert len(extra) == 617 - 541
    assert all(key.startswith("time_embed_s.") or ".emb_layers_s.1." in key for key in extra)
    assert ctm["time_embed_s.0.weight"] == (768, 192)
    assert ctm["time_embed_s.2.bias"] == (768,)
    assert ctm["input_blocks.1.0.emb_layers_s.1.weight"] == (384, 768)
    assert ctm["middle_block.2.emb_layers_s.1.bias"] == (1536,)


def test_lsun256_spot_shapes():
    shapes = meta_shapes("adm-lsun256")
    assert "label_emb.weight" not in shapes
    assert shapes["input_blocks.1.0.emb_layers.1.weight"] == (256, 1024)  # additive, no scale/shift
    assert shapes["input_blocks.10.1.qkv.weight"] == (1536, 512, 1, 1)  # 32×32
    assert not any(key.startswith("input_blocks.8.1.") for key in shapes)  # 64×64: no attention
    assert shapes["out.2.weight"] == (3, 256, 3, 3)


# --- attention ------------------------------------------------------------------------------


def naive_attention(qkv: torch.Tensor, heads: int, layout: str) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v written out, with the packed channel order of ``layout``."""
    batch, packed, height, width = qkv.shape
    dim = packed // (3 * heads)
    flat = qkv.double().reshape(batch, packed, height * width)
    if layout == "three-heads-dim":
        q, k, v = (flat.reshape(batch, 3, heads, dim, -1)[:, i] for i in range(3))
    else:
        q, k, v = (flat.reshape(batch, heads, 3, dim, -1)[:, :, i] for i in range(3))
    weights = torch.softmax(torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(dim), dim=-1)
    out = torch.einsum("bhts,bhds->bhdt", weights, v)
    return out.reshape(batch, heads * dim, height, width).float()


@pytest.mark.parametrize("layout", QKV_LAYOUTS)
@pytest.mark.parametrize("heads", [1, 3])
def test_sdpa_attention_matches_explicit_softmax(layout, heads):
    qkv = torch.randn(2, 3 * 48, 5, 6, generator=torch.Generator().manual_seed(heads))
    torch.testing.assert_close(qkv_attention(qkv, heads, layout), naive_attention(qkv, heads, layout), atol=1e-5, rtol=1e-5)


def test_qkv_layouts_differ():
    qkv = torch.randn(1, 3 * 32, 4, 4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(qkv_attention(qkv, 2, "three-heads-dim"), qkv_attention(qkv, 2, "heads-three-dim"))


def test_attention_block_uses_the_official_layout():
    net = tiny()
    block = net.input_blocks[3][1]  # the 8×8 attention after the downsampling ResBlock
    assert block.num_heads == 64 // 16
    h = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        qkv = block.qkv(block.norm(h))
        expected = h + block.proj_out(naive_attention(qkv, block.num_heads, "three-heads-dim"))
        torch.testing.assert_close(block(h), expected, atol=1e-5, rtol=1e-5)


# --- forward pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale_shift, updown", [(True, True), (False, False), (True, False), (False, True)])
def test_tiny_forward(scale_shift, updown):
    net = tiny(use_scale_shift_norm=scale_shift, resblock_updown=updown)
    x, t = inputs()
    with torch.no_grad():
        out = net(x, t, torch.tensor([1, 7]))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_fresh_net_outputs_zero_like_adm():
    x, t = inputs()
    with torch.no_grad():
        assert ADMUNet(**TINY)(x, t, torch.tensor([0, 1])).abs().max() == 0


def test_class_labels_change_the_output_and_are_checked():
    net = tiny()
    x, t = inputs()
    with torch.no_grad():
        assert not torch.allclose(net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([3, 3])))
    with pytest.raises(ValueError, match="class_labels .* required"):
        net(x, t)
    with pytest.raises(ValueError, match="integer indices"):
        net(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        net(x, t, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny(num_classes=None)(x, t, torch.tensor([0, 1]))


def test_noise_labels_change_the_output_and_broadcast():
    net = tiny(num_classes=None)
    x, _ = inputs()
    with torch.no_grad():
        a, b = net(x, torch.tensor(-500.0)), net(x, torch.tensor(500.0))
        assert not torch.allclose(a, b)
        torch.testing.assert_close(a, net(x, torch.full((2,), -500.0)))
    with pytest.raises(ValueError, match="noise_labels must have shape"):
        net(x, torch.zeros(3))


def test_s_labels_change_a_ctm_output_and_are_required():
    net = tiny(s_embedding=True)
    x, t = inputs()
    y = torch.tensor([2, 5])
    with torch.no_grad():
        a = net(x, t, y, 250 * torch.log(torch.full((2,), 0.002)))
        b = net(x, t, y, 250 * torch.log(torch.full((2,), 1.0)))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="s_noise_labels .* required"):
        net(x, t, y)


def test_s_labels_rejected_without_s_embedding():
    net = tiny()
    x, t = inputs()
    with pytest.raises(ValueError, match="s_embedding=False"):
        net(x, t, torch.tensor([0, 1]), torch.zeros(2))


def test_samples_do_not_interact_across_the_batch():
    net = tiny()
    x, t = inputs(batch=3)
    y = torch.tensor([1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y)[1:2], net(x[1:2], t[1:2], y[1:2]), atol=1e-5, rtol=1e-5)


def test_bad_input_shape_rejected():
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        tiny()(torch.zeros(1, 3, 32, 32), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_autocast_keeps_float32_output_and_float32_group_norm():
    net = tiny()
    x, t = inputs()
    y = torch.tensor([1, 2])
    with torch.no_grad():
        reference = net(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, t, y)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - reference).abs().max() < 0.05 * reference.abs().max()
    norm = GroupNorm32(64)
    h = torch.randn(2, 64, 4, 4).bfloat16()
    torch.testing.assert_close(norm(h), torch.nn.GroupNorm(32, 64)(h.float()).bfloat16())


# --- construction and state dicts -----------------------------------------------------------


def test_state_dict_round_trip_is_strict_and_exact():
    net = tiny(s_embedding=True)
    copy = ADMUNet(**{**TINY, "s_embedding": True}).eval()
    copy.load_state_dict(net.state_dict(), strict=True)
    x, t = inputs()
    y, s = torch.tensor([4, 9]), torch.zeros(2)
    with torch.no_grad():
        assert torch.equal(net(x, t, y, s), copy(x, t, y, s))
    with pytest.raises(RuntimeError, match="emb_layers_s"):
        copy.load_state_dict(tiny().state_dict(), strict=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(attention_resolutions=(12,)), "attention resolution 12"),
        (dict(qkv_layout="heads-dim-three"), "three-heads-dim, heads-three-dim"),
        (dict(num_head_channels=24), "not divisible by num_head_channels=24"),
        (dict(model_channels=48), "multiple of 32"),
        (dict(image_size=18, channel_mult=(1, 2, 2)), "divisible by"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_settings_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        ADMUNet(**{**TINY, **overrides})


def test_lists_from_yaml_or_json_are_accepted():
    net = tiny(channel_mult=[1, 2], attention_resolutions=[8])
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, torch.tensor([1, 2])), tiny()(x, t, torch.tensor([1, 2])))
