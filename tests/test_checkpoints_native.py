"""cmbench's native checkpoint format: round trip, hashes, and refusal of anything else."""

import collections
import hashlib

import pytest
import torch

from cmbench.checkpoints import FORMAT, load_native, save_native, sha256_file
from cmbench.nets import build_network

ARCH_KWARGS = {"img_resolution": 8, "img_channels": 1, "model_channels": 8, "label_dim": 3}


def random_net(seed=0):
    torch.manual_seed(seed)
    net = build_network("small_unet", ARCH_KWARGS)
    with torch.no_grad():  # move every parameter off its default init
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def save(path, net, **kwargs):
    return save_native(
        path,
        net,
        arch="small_unet",
        arch_kwargs=ARCH_KWARGS,
        family="cd",
        model_options={"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5},
        meta={"steps": 10, "note": "test", "tags": ("a", "b")},
        **kwargs,
    )


def test_round_trip_same_outputs(tmp_path):
    net = random_net()
    path = tmp_path / "model.pt"
    digest = save(path, net)
    assert digest == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()

    ckpt = load_native(path)
    assert ckpt.sha256 == digest
    assert ckpt.path == path
    assert ckpt.arch == "small_unet" and ckpt.family == "cd"
    assert ckpt.arch_kwargs == ARCH_KWARGS
    assert ckpt.model_options["sigma_max"] == 80.0
    assert ckpt.meta["tags"] == ("a", "b")
    assert not ckpt.net.training

    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([0.2, -0.7])
    y = torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.equal(ckpt.net(x, t, y), net(x, t, y))
        assert not torch.equal(random_net(seed=1)(x, t, y), net(x, t, y))


def test_file_is_plain_data(tmp_path):
    path = tmp_path / "model.pt"
    save(path, random_net())
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT == "cmbench-native-v1"
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_save_rejects_non_plain_meta(tmp_path):
    with pytest.raises(ValueError, match="meta"):
        save_native(tmp_path / "m.pt", random_net(), arch="small_unet", arch_kwargs=ARCH_KWARGS,
                    family="cd", model_options={}, meta={"when": object()})
    assert not (tmp_path / "m.pt").exists()


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "model.pt"
    first = save(path, random_net(0))
    with pytest.raises(FileExistsError, match="model.pt"):
        save(path, random_net(1))
    assert sha256_file(path) == first
    second = save(path, random_net(1), overwrite=True)
    assert second != first and sha256_file(path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp files left


def test_expected_sha256(tmp_path):
    path = tmp_path / "model.pt"
    digest = save(path, random_net())
    assert load_native(path, expected_sha256=digest).sha256 == digest
    with pytest.raises(ValueError) as info:
        load_native(path, expected_sha256="0" * 64)
    message = str(info.value)
    assert "model.pt" in message and "0" * 64 in message and digest in message


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_native(tmp_path / "nope.pt")


def test_wrong_format_key(tmp_path):
    path = tmp_path / "other.pt"
    save(path, random_net())
    payload = torch.load(path, weights_only=True)
    payload["format"] = "somebody-else-v3"
    torch.save(payload, path)
    with pytest.raises(ValueError) as info:
        load_native(path)
    message = str(info.value)
    assert "other.pt" in message and "somebody-else-v3" in message and FORMAT in message


def test_plain_state_dict_is_not_native(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(random_net().state_dict(), path)
    with pytest.raises(ValueError, match="format"):
        load_native(path)


def test_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "broken.pt"
    save(path, random_net())
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["conv_in.weight"]
    payload["state_dict"]["extra.bias"] = torch.zeros(3)
    payload["state_dict"]["conv_out.bias"] = torch.zeros(5)
    torch.save(payload, path)
    with pytest.raises(ValueError) as info:
        load_native(path)
    message = str(info.value)
    assert "broken.pt" in message
    assert "missing" in message and "conv_in.weight" in message
    assert "unexpected" in message and "extra.bias" in message
    assert "conv_out.bias" in message and "(5,)" in message


def test_bad_arch_kwargs_named(tmp_path):
    path = tmp_path / "kw.pt"
    save(path, random_net())
    payload = torch.load(path, weights_only=True)
    payload["arch_kwargs"]["heads"] = 4
    torch.save(payload, path)
    with pytest.raises(ValueError, match="kw.pt.*heads"):
        load_native(path)


# --- files that would run code if unpickled -------------------------------------------------

def _write_flag(path):
    with open(path, "w") as f:
        f.write("executed")


class Exploit:
    def __init__(self, flag_path):
        self.flag_path = flag_path

    def __reduce__(self):
        return (_write_flag, (self.flag_path,))


class SneakyDict(collections.OrderedDict):
    pass


def test_malicious_object_is_not_executed(tmp_path):
    flag = tmp_path / "flag"
    path = tmp_path / "evil.pt"
    payload = torch.load(_saved(tmp_path), weights_only=True)
    payload["meta"] = {"x": Exploit(str(flag))}
    torch.save(payload, path)  # torch.save pickles the object with plain pickle

    with pytest.raises(ValueError) as info:
        load_native(path)
    message = str(info.value)
    assert "evil.pt" in message and "not a cmbench native checkpoint" in message
    assert not flag.exists()

    # control: unrestricted unpickling of the same file does run the payload
    torch.load(path, weights_only=False)
    assert flag.read_text() == "executed"


def test_custom_class_refused(tmp_path):
    path = tmp_path / "sneaky.pt"
    payload = torch.load(_saved(tmp_path), weights_only=True)
    payload["state_dict"] = SneakyDict(payload["state_dict"])
    torch.save(payload, path)
    with pytest.raises(ValueError, match="sneaky.pt.*non-tensor objects"):
        load_native(path)


def test_garbage_file_refused(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_native(path)


def _saved(tmp_path):
    path = tmp_path / "good.pt"
    save(path, random_net())
    return path


def test_float16_storage_halves_the_file_and_loads_the_rounded_weights(tmp_path):
    from cmbench.nets import build_network

    kwargs = {"img_resolution": 8, "img_channels": 1, "hidden": 64, "depth": 2, "emb_dim": 16}
    torch.manual_seed(0)
    net = build_network("toy_mlp", kwargs)
    common = dict(arch="toy_mlp", arch_kwargs=kwargs, family="edm", model_options={"image_shape": [1, 8, 8]})
    save_native(tmp_path / "full.pt", net, **common)
    save_native(tmp_path / "half.pt", net, storage_dtype=torch.float16, **common)
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    loaded = load_native(tmp_path / "half.pt").net
    for (name, p), q in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert q.dtype == p.dtype, name
        assert torch.equal(q, p.to(torch.float16).to(p.dtype)), name
