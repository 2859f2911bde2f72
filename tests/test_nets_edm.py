"""EDM's SongUNet / DhariwalUNet and CTM's CIFAR-10 SongUNet: structure, behaviour, known outputs.

The key and parameter counts and the golden outputs below were produced by the official code
(NVlabs/edm ``training/networks.py``, Kim-Dongjun/ctm-cifar10 ``cm/networks.py``) built with
the same arguments and filled with the same RNG-free weights; these tests do not need that code.
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from cmbench.nets.dhariwal_unet import DhariwalUNet
from cmbench.nets.edm_presets import EDM_PRESETS, edm_preset_network
from cmbench.nets.song_unet import SongUNet

NETS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}

# preset -> (state-dict keys, parameters); identical for the official classes.
OFFICIAL_COUNTS = {
    "edm-cifar10-32x32-cond-vp": (427, 55_735_299),
    "edm-cifar10-32x32-uncond-vp": (425, 55_733_891),
    "edm-cifar10-32x32-cond-ve": (434, 56_400_643),
    "edm-cifar10-32x32-uncond-ve": (432, 56_397_827),
    "edm-ffhq-64x64-uncond-vp": (553, 61_805_571),
    "edm-ffhq-64x64-uncond-ve": (563, 62_761_091),
    "edm-afhqv2-64x64-uncond-vp": (553, 61_805_571),
    "edm-afhqv2-64x64-uncond-ve": (563, 62_761_091),
    "edm-imagenet-64x64-cond-adm": (553, 295_899_267),
    "ctm-cifar10-32x32-cond": (496, 60_396_675),
    "ctm-cifar10-32x32-uncond": (494, 60_395_267),
}

SPOT_SHAPES = {
    "edm-cifar10-32x32-cond-vp": {
        "map_label.weight": (128, 10),
        "map_augment.weight": (128, 9),
        "map_layer0.weight": (512, 128),
        "map_layer1.bias": (512,),
        "enc.32x32_conv.weight": (128, 3, 3, 3),
        "enc.32x32_block0.affine.weight": (256, 512),
        "enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2),
        "enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
        "dec.8x8_in0.qkv.weight": (768, 256, 1, 1),
        "dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    },
    "edm-cifar10-32x32-uncond-ve": {
        "map_noise.freqs": (128,),
        "map_augment.weight": (256, 9),
        "map_layer0.weight": (512, 256),
        "enc.16x16_down.conv0.resample_filter": (1, 1, 4, 4),
        "enc.16x16_aux_residual.weight": (256, 3, 3, 3),
        "enc.16x16_aux_residual.resample_filter": (1, 1, 4, 4),
        "enc.8x8_aux_residual.weight": (256, 256, 3, 3),
    },
    "edm-imagenet-64x64-cond-adm": {
        "map_layer0.weight": (768, 192),
        "map_label.weight": (768, 1000),
        "enc.64x64_conv.weight": (192, 3, 3, 3),
        "enc.32x32_down.skip.resample_filter": (1, 1, 2, 2),
        "enc.32x32_block0.affine.weight": (768, 768),
        "enc.16x16_block0.qkv.weight": (1728, 576, 1, 1),
        "dec.8x8_in0.qkv.weight": (2304, 768, 1, 1),
        "out_norm.weight": (192,),
        "out_conv.weight": (3, 192, 3, 3),
    },
    "ctm-cifar10-32x32-cond": {
        "map_layer0_s.weight": (512, 128),
        "map_layer1_s.bias": (512,),
        "enc.32x32_block0.affine_s.weight": (256, 512),
        "dec.32x32_block4.affine_s.bias": (256,),
        "dec.8x8_in0.affine_s.weight": (256, 512),
    },
}

ABSENT_KEYS = {
    "edm-cifar10-32x32-uncond-vp": ["map_label.weight", "map_noise.freqs", "map_layer0_s.weight"],
    "edm-imagenet-64x64-cond-adm": ["map_augment.weight", "map_label.bias", "enc.32x32_down.skip.weight"],
    "ctm-cifar10-32x32-uncond": ["map_augment.weight", "map_label.weight"],
}

# EDM's constructor arguments and defaults (NVlabs/edm), which EDM pickles' _init_kwargs use.
EDM_SONG_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
    num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0, embedding_type="positional",
    channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=[1, 1],
)
CTM_SONG_EXTRAS = dict(s_embedding=False, training_mode="", linear_probing=False)
EDM_DHARIWAL_DEFAULTS = dict(
    label_dim=0, augment_dim=0, model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4,
    num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.10, label_dropout=0,
)

TINY = dict(
    img_resolution=8, in_channels=3, out_channels=3, model_channels=16, channel_mult=[1, 2],
    num_blocks=1, attn_resolutions=[4], dropout=0.0,
)
DDPMPP = dict(embedding_type="positional", channel_mult_noise=1, encoder_type="standard", resample_filter=[1, 1])
NCSNPP = dict(embedding_type="fourier", channel_mult_noise=2, encoder_type="residual", resample_filter=[1, 3, 3, 1])

# name -> (class, kwargs, (sum, mean |out|, every 23rd value)) from the official code.
GOLDEN = {
    "song_ncsnpp_residual_skip": (
        "SongUNet",
        dict(TINY, **NCSNPP, decoder_type="skip", label_dim=3, augment_dim=2),
        (
            -593.1771264672279, 1.5929430439136922,
            [-1.712348, -2.718145, -3.002667, 0.187406, 0.311254, -0.350068, -2.759441, -2.497417, -1.14825,
             -2.499527, -2.819405, -1.652469, 0.26011, 0.041533, -1.55779, -2.570742, -1.908079]
        ),
    ),
    "song_ddpmpp_skip_standard": (
        "SongUNet",
        dict(TINY, **dict(DDPMPP, encoder_type="skip"), decoder_type="standard"),
        (
            -396.9874200820923, 1.314544522203505,
            [0.644562, 0.682679, 0.207652, -1.926768, -2.471459, -2.550792, -1.324738, -1.202226, -1.099157,
             0.575803, 0.20196, 0.399833, -2.480699, -2.459811, -1.621981, -1.223869, -0.820011]
        ),
    ),
    "dhariwal": (
        "DhariwalUNet",
        dict(TINY, model_channels=32, label_dim=3, augment_dim=2),
        (
            -111.6653043627739, 1.305330538811783,
            [1.171658, 1.338442, 1.656404, 0.179142, -0.190778, -0.499084, -1.782738, -2.086514, -1.169092,
             1.613109, 0.909351, 0.485548, -0.01498, -0.245601, -3.226576, -2.539043, -3.325325]
        ),
    ),
    "ctm": (
        "SongUNet",
        dict(TINY, **DDPMPP, decoder_type="standard", label_dim=3, s_embedding=True),
        (
            153.03953099250793, 0.6892854437076797,
            [1.719357, 1.179131, 1.554735, -0.019878, 0.045281, 0.317745, -0.566401, -0.219141, -0.038937,
             1.015774, 1.305332, 1.346117, 0.256648, 0.22037, -1.066801, -0.124873, 0.292469]
        ),
    ),
}


def deterministic_fill(net: torch.nn.Module) -> None:
    """Overwrite every parameter and non-filter buffer with fixed pseudo-random values.

    A sine hash rather than an RNG, so the official code could be filled identically; uniform
    with variance ``1 / fan_in`` so that every conditioning path visibly moves the output.
    """
    with torch.no_grad():
        for idx, (name, tensor) in enumerate(sorted(net.state_dict().items())):
            if name.endswith("resample_filter"):
                continue
            n = tensor.numel()
            fan_in = n // tensor.shape[0] if tensor.ndim >= 2 else 1
            k = torch.arange(n, dtype=torch.float64)
            u = torch.frac(torch.sin(12.9898 * k + 78.233 * idx).abs() * 43758.5453)
            tensor.copy_(((2 * u - 1) * math.sqrt(3 / fan_in)).reshape(tensor.shape).to(tensor.dtype))


def golden_input(batch: int, channels: int, res: int) -> torch.Tensor:
    values = torch.sin(0.37 * torch.arange(batch * channels * res * res, dtype=torch.float64))
    return values.reshape(batch, channels, res, res).float()


def build(cls_name: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return NETS[cls_name](**copy.deepcopy(kwargs)).eval()


def perturbed(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """``net`` with noise added to every parameter, so zero-initialised layers carry signal too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return net


def tiny_inputs(net, batch=3, res=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.in_channels, res, res, generator=generator)
    noise = torch.linspace(-1.5, 1.0, batch)
    labels = torch.arange(batch) % net.label_dim if net.label_dim else None
    return x, noise, labels


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EDM_PRESETS))
def test_preset_key_and_parameter_counts_match_official(name):
    with torch.device("meta"):
        net = edm_preset_network(name)
    keys, params = OFFICIAL_COUNTS[name]
    assert len(net.state_dict()) == keys
    assert sum(p.numel() for p in net.parameters()) == params
    for key, shape in SPOT_SHAPES.get(name, {}).items():
        assert tuple(net.state_dict()[key].shape) == shape, key
    for key in ABSENT_KEYS.get(name, []):
        assert key not in net.state_dict()


def test_presets_cover_the_released_networks():
    assert set(OFFICIAL_COUNTS) == set(EDM_PRESETS)
    for class_name, kwargs in EDM_PRESETS.values():
        assert class_name in NETS
        assert all(isinstance(v, (int, float, str, bool, list)) for v in kwargs.values())


def test_adm_imagenet64_has_the_cm_papers_295_9m_parameters():
    with torch.device("meta"):
        net = edm_preset_network("edm-imagenet-64x64-cond-adm")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 295.9


def test_fourier_frequencies_are_a_state_dict_buffer():
    with torch.device("meta"):
        net = edm_preset_network("edm-cifar10-32x32-cond-ve")
    assert "map_noise.freqs" in dict(net.named_buffers())
    assert "map_noise.freqs" in net.state_dict()


def _defaults(cls) -> dict:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


@pytest.mark.parametrize(
    "cls, expected",
    [(SongUNet, dict(EDM_SONG_DEFAULTS, **CTM_SONG_EXTRAS)), (DhariwalUNet, EDM_DHARIWAL_DEFAULTS)],
)
def test_constructor_takes_edms_names_and_defaults(cls, expected):
    defaults = _defaults(cls)
    assert list(defaults)[:3] == ["img_resolution", "in_channels", "out_channels"]
    assert all(defaults[k] is inspect.Parameter.empty for k in ("img_resolution", "in_channels", "out_channels"))
    rest = {k: (list(v) if isinstance(v, tuple) else v) for k, v in list(defaults.items())[3:]}
    assert rest == expected


# --- forward behaviour -------------------------------------------------------------------------


SONG_VARIANTS = [
    dict(DDPMPP, decoder_type="standard"),
    dict(NCSNPP, decoder_type="standard"),
    dict(DDPMPP, encoder_type="skip", decoder_type="skip"),
    dict(NCSNPP, encoder_type="residual", decoder_type="skip"),
    dict(NCSNPP, encoder_type="skip", decoder_type="standard"),
]


def _variant_id(variant: dict) -> str:
    return f"{variant['embedding_type']}-{variant['encoder_type']}-{variant['decoder_type']}"


@pytest.mark.parametrize("variant", SONG_VARIANTS, ids=_variant_id)
def test_song_unet_forward_shapes_finite_and_label_sensitive(variant):
    net = perturbed(build("SongUNet", dict(TINY, **variant, label_dim=4, augment_dim=3)))
    x, noise, labels = tiny_inputs(net)
    with torch.no_grad():
        out = net(x, noise, labels)
        other_labels = net(x, noise, (labels + 1) % 4)
        other_noise = net(x, noise + 0.5, labels)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out - other_labels).abs().max() > 1e-4
    assert (out - other_noise).abs().max() > 1e-4


def test_song_unet_three_levels_and_other_out_channels():
    net = perturbed(build("SongUNet", dict(TINY, img_resolution=16, channel_mult=[1, 2, 2], out_channels=6)))
    x, noise, _ = tiny_inputs(net, res=16)
    with torch.no_grad():
        out = net(x, noise)
    assert out.shape == (3, 6, 16, 16) and torch.isfinite(out).all()


def test_dhariwal_unet_forward_shapes_finite_and_label_sensitive():
    net = perturbed(build("DhariwalUNet", dict(TINY, model_channels=32, label_dim=5)))
    x, noise, labels = tiny_inputs(net)
    with torch.no_grad():
        out = net(x, noise, labels)
        other = net(x, noise, (labels + 2) % 5)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - other).abs().max() > 1e-4


def test_missing_augment_labels_mean_a_zero_augmentation():
    nets = [("SongUNet", dict(TINY, augment_dim=9)), ("DhariwalUNet", dict(TINY, model_channels=32, augment_dim=9))]
    for cls_name, kwargs in nets:
        net = perturbed(build(cls_name, kwargs))
        x, noise, _ = tiny_inputs(net)
        with torch.no_grad():
            plain = net(x, noise)
            zero = net(x, noise, augment_labels=torch.zeros(3, 9))
            augmented = net(x, noise, augment_labels=torch.ones(3, 9))
        assert torch.equal(plain, zero)
        assert (plain - augmented).abs().max() > 1e-4


def test_ctm_s_branch_matters_and_is_required():
    net = perturbed(build("SongUNet", dict(TINY, label_dim=3, s_embedding=True)))
    x, noise, labels = tiny_inputs(net)
    with torch.no_grad():
        out = net(x, noise, labels, s_noise_labels=noise - 1.0)
        other_s = net(x, noise, labels, s_noise_labels=noise - 0.2)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - other_s).abs().max() > 1e-4
    with pytest.raises(ValueError, match="s_noise_labels are required"):
        net(x, noise, labels)
    with pytest.raises(ValueError, match=r"s_noise_labels must have shape \[3\]"):
        net(x, noise, labels, s_noise_labels=noise[:2])


def test_ctm_training_mode_spelling_builds_the_same_net():
    by_flag = build("SongUNet", dict(TINY, s_embedding=True))
    by_mode = build("SongUNet", dict(TINY, training_mode="ctm"))
    shapes = [{k: v.shape for k, v in net.state_dict().items()} for net in (by_flag, by_mode)]
    assert shapes[0] == shapes[1]
    assert build("SongUNet", dict(TINY, training_mode="teacher")).s_embedding is False


def test_s_labels_rejected_without_s_branch():
    for cls_name, kwargs in [("SongUNet", TINY), ("DhariwalUNet", dict(TINY, model_channels=32))]:
        net = build(cls_name, kwargs)
        x, noise, _ = tiny_inputs(net)
        with pytest.raises(ValueError, match="s_noise_labels"):
            net(x, noise, s_noise_labels=noise)


@pytest.mark.parametrize("cls_name", ["SongUNet", "DhariwalUNet"])
def test_class_label_errors(cls_name):
    width = dict(model_channels=32) if cls_name == "DhariwalUNet" else {}
    conditional = build(cls_name, dict(TINY, label_dim=4, **width))
    x, noise, labels = tiny_inputs(conditional)
    with pytest.raises(ValueError, match="class-conditional"):
        conditional(x, noise)
    with pytest.raises(ValueError, match="integer indices"):
        conditional(x, noise, torch.nn.functional.one_hot(labels, 4).float())
    with pytest.raises(ValueError, match="integer indices"):
        conditional(x, noise, labels[:2])
    unconditional = build(cls_name, dict(TINY, **width))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(x, noise, labels)
    with pytest.raises(ValueError, match=r"noise_labels must have shape \[3\]"):
        unconditional(x, noise[:, None])
    with pytest.raises(ValueError, match="augment_dim=0"):
        unconditional(x, noise, augment_labels=torch.zeros(3, 9))


def test_constructor_errors_name_the_problem():
    with pytest.raises(ValueError, match="embedding_type 'sinusoidal'"):
        SongUNet(8, 3, 3, embedding_type="sinusoidal")
    with pytest.raises(ValueError, match="decoder_type 'residual'"):
        SongUNet(8, 3, 3, decoder_type="residual")
    with pytest.raises(ValueError, match="linear_probing"):
        SongUNet(8, 3, 3, channel_mult=[1, 2], linear_probing=True)
    with pytest.raises(ValueError, match="img_resolution"):
        DhariwalUNet(12, 3, 3, channel_mult=[1, 2, 2, 2])


# --- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls_name, kwargs", [(g[0], g[1]) for g in GOLDEN.values()], ids=list(GOLDEN))
def test_state_dict_round_trip_is_strict_and_exact(cls_name, kwargs):
    source = perturbed(build(cls_name, kwargs, seed=1))
    target = build(cls_name, kwargs, seed=2)
    target.load_state_dict(source.state_dict(), strict=True)
    x, noise, labels = tiny_inputs(source)
    extra = dict(s_noise_labels=noise - 1) if kwargs.get("s_embedding") else {}
    with torch.no_grad():
        assert torch.equal(source(x, noise, labels, **extra), target(x, noise, labels, **extra))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_outputs_match_the_official_code(name):
    cls_name, kwargs, (total, mean_abs, strided) = GOLDEN[name]
    net = build(cls_name, kwargs)
    deterministic_fill(net)
    x = golden_input(2, 3, 8)
    noise = torch.tensor([-1.2, 0.9])
    labels = torch.tensor([2, 0]) if kwargs.get("label_dim") else None
    extra = {}
    if kwargs.get("s_embedding"):
        extra["s_noise_labels"] = torch.tensor([-1.5, -0.4])
    if kwargs.get("augment_dim"):
        extra["augment_labels"] = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    with torch.no_grad():
        out = net(x, noise, labels, **extra).double()
    assert out.sum().item() == pytest.approx(total, rel=1e-5, abs=1e-4)
    assert out.abs().mean().item() == pytest.approx(mean_abs, rel=1e-5)
    assert out.flatten()[::23].tolist() == pytest.approx(strided, abs=5e-6)


def test_meta_device_build_allocates_nothing():
    with torch.device("meta"):
        net = edm_preset_network("edm-cifar10-32x32-uncond-ve")
    assert all(t.is_meta for t in net.state_dict().values())


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown EDM network preset 'edm-cifar100'"):
        edm_preset_network("edm-cifar100")
