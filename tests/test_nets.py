"""SmallUNet and the architecture registry."""

import pytest
import torch

from cmbench.nets import ARCHITECTURES, SmallUNet, build_network
from cmbench.nets.embeddings import FourierEmbedding, positional_embedding
from cmbench.nets.small_unet import group_count


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(img_resolution=8, img_channels=1, model_channels=16)
    config.update(kwargs)
    return SmallUNet(**config).eval()


@pytest.mark.parametrize("resolution", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(resolution, channels):
    net = make(img_resolution=resolution, img_channels=channels)
    x = torch.randn(2, channels, resolution, resolution)
    out = net(x, torch.tensor([0.1, -0.5]))
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


def test_three_levels_and_two_blocks():
    net = make(img_resolution=16, channel_mult=(1, 2, 2), num_blocks=2)
    x = torch.randn(3, 1, 16, 16)
    assert net(x, torch.zeros(3)).shape == x.shape


@pytest.mark.parametrize("resolution", [4, 12, 7])
def test_bad_resolution_rejected(resolution):
    with pytest.raises(ValueError, match="power of two"):
        SmallUNet(img_resolution=resolution, img_channels=1, channel_mult=(1, 2, 2))


def test_output_depends_on_noise_labels():
    net = make()
    x = torch.randn(2, 1, 8, 8)
    a = net(x, torch.tensor([0.0, 0.0]))
    b = net(x, torch.tensor([1.0, 1.0]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("embedding", ["positional", "fourier"])
def test_embeddings_give_different_outputs_per_time(embedding):
    net = make(embedding=embedding)
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([-1.0, 1.0]))
    assert not torch.allclose(out[0], out[1])


def test_unknown_embedding_rejected():
    with pytest.raises(ValueError, match="positional, fourier"):
        make(embedding="learned")


def test_positional_embedding_cos_sin_order():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    emb = positional_embedding(t, 8)
    freqs = torch.tensor([10000.0 ** (-i / 4) for i in range(4)], dtype=torch.float64)
    assert torch.allclose(emb[:, :4], torch.cos(t[:, None] * freqs))
    assert torch.allclose(emb[:, 4:], torch.sin(t[:, None] * freqs))
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64))


def test_fourier_embedding_is_seeded_and_cos_sin():
    a, b = FourierEmbedding(8, scale=16.0), FourierEmbedding(8, scale=16.0)
    assert torch.equal(a.freqs, b.freqs)
    t = torch.tensor([0.3])
    expected = torch.cat([torch.cos(2 * torch.pi * a.freqs * 0.3), torch.sin(2 * torch.pi * a.freqs * 0.3)])
    assert torch.allclose(a(t)[0], expected, atol=1e-5)
    assert "freqs" in a.state_dict()


def test_group_count_divides():
    for channels in [1, 3, 6, 16, 24, 48, 96, 100, 256]:
        g = group_count(channels)
        assert channels % g == 0 and 1 <= g <= max(1, min(32, channels // 4))
    assert group_count(256) == 32


def test_conditional_labels():
    net = make(label_dim=4)
    x = torch.randn(2, 1, 8, 8)
    t = torch.zeros(2)
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, t)
    with pytest.raises(ValueError, match="integer"):
        net(x, t, torch.tensor([0.0, 1.0]))
    a = net(x, t, torch.tensor([0, 0]))
    b = net(x, t, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)


def test_unconditional_rejects_labels():
    net = make()
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([0, 1]))


def test_s_embedding():
    net = make(s_embedding=True)
    x = torch.randn(2, 1, 8, 8)
    t = torch.ones(2)
    with pytest.raises(ValueError, match="s_noise_labels are required"):
        net(x, t)
    a = net(x, t, s_noise_labels=torch.zeros(2))
    b = net(x, t, s_noise_labels=torch.full((2,), -2.0))
    assert not torch.allclose(a, b)
    plain = make()
    with pytest.raises(ValueError, match="no s embedding"):
        plain(x, t, s_noise_labels=torch.zeros(2))


def test_s_branch_has_no_label_term():
    net = make(s_embedding=True, label_dim=3)
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("time_embed_s.") for n in names)
    assert sum(n.startswith("label_embed.") for n in names) == 1


def test_float64_input_returns_float64():
    net = make()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = net(x, torch.zeros(2, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert next(net.parameters()).dtype == torch.float32
    assert torch.allclose(out, net(x.float(), torch.zeros(2)).double())


def test_wrong_input_shape_rejected():
    net = make()
    with pytest.raises(ValueError, match=r"\[B, 1, 8, 8\]"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="noise_labels"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(3))


def test_default_config_under_one_million_parameters():
    for res, ch in [(8, 1), (16, 3)]:
        net = SmallUNet(img_resolution=res, img_channels=ch)
        count = sum(p.numel() for p in net.parameters())
        assert 10_000 < count < 1_000_000


def test_gradients_flow():
    net = make(label_dim=2, s_embedding=True).train()
    x = torch.randn(2, 1, 8, 8)
    loss = net(x, torch.randn(2), torch.tensor([0, 1]), torch.randn(2)).square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["conv_in.weight"].abs().sum() > 0
    assert grads["time_embed_s.mlp.0.weight"].abs().sum() > 0
    assert grads["label_embed.weight"].abs().sum() > 0


def test_registry_and_build():
    assert ARCHITECTURES["small_unet"] is SmallUNet
    net = build_network("small_unet", {"img_resolution": 8, "img_channels": 1, "channel_mult": [1, 2]})
    assert isinstance(net, SmallUNet)


def test_build_network_unknown_arch():
    with pytest.raises(ValueError) as info:
        build_network("big_unet", {})
    assert "big_unet" in str(info.value) and "small_unet" in str(info.value)


def test_build_network_bad_kwarg():
    with pytest.raises(ValueError) as info:
        build_network("small_unet", {"img_resolution": 8, "img_channels": 1, "num_res_blocks": 2})
    message = str(info.value)
    assert "small_unet" in message and "num_res_blocks" in message
    assert "num_blocks" in message and "model_channels" in message


def test_build_network_missing_required_kwarg():
    with pytest.raises(ValueError, match="img_channels"):
        build_network("small_unet", {"img_resolution": 8})
