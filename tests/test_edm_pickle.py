"""EDM ``.pkl`` snapshots: rebuilt into cmbench's nets without running the pickle's code.

The snapshots are written here the way EDM's persistence writes them: every network object
pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with the module source,
class name and instance ``__dict__`` in ``meta``; torch containers and tensors pickle as usual.
"""

import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import edm_snapshots
from cmbench.checkpoints.edm_pickle import (
    ALLOWED_GLOBALS,
    RefusedGlobalError,
    load_edm_pickle,
    read_edm_records,
)

# Real Python source of an EDM-like network and preconditioner (EDM's nets take one-hot labels).
SRC = textwrap.dedent(
    '''
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, model_channels=4):
            super().__init__()
            self.label_dim = label_dim
            self.conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)
            self.map_label = nn.Linear(label_dim, model_channels) if label_dim else None
            self.blocks = nn.ModuleDict({"8x8_a": nn.Conv2d(model_channels, model_channels, 1)})
            self.out = nn.Conv2d(model_channels, out_channels, 1)
            self.register_buffer("scale", torch.tensor([1.5]))
            self.register_buffer("unused", None)

        def forward(self, x, noise_labels, class_labels, augment_labels=None):
            h = self.conv(x) * self.scale + noise_labels.reshape(-1, 1, 1, 1)
            if self.map_label is not None:
                h = h + self.map_label(class_labels)[:, :, None, None]
            return self.out(torch.relu(self.blocks["8x8_a"](h)))

    class Precond(nn.Module):
        def __init__(self, model, **attributes):
            super().__init__()
            for name, value in attributes.items():
                setattr(self, name, value)
            self.model = model

    class VPPrecond(Precond):
        pass
    '''
)
NS = {}
exec(SRC, NS)  # the test's own copy of the classes, to build the original objects
TinyNet, Precond = NS["TinyNet"], NS["Precond"]


class CmbenchTiny(TinyNet):
    """Stand-in for a cmbench net: same parameters, cmbench's call with integer labels."""

    def forward(self, x, noise_labels, class_labels=None, s_noise_labels=None):
        onehot = F.one_hot(class_labels, self.label_dim).float() if self.label_dim else None
        return super().forward(x, noise_labels, onehot)


TINY_KWARGS = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=4, model_channels=4)
VP_ATTRS = dict(img_resolution=8, img_channels=3, label_dim=4, use_fp16=False, beta_d=19.9,
                beta_min=0.1, M=1000, epsilon_t=1e-5, sigma_min=0.002, sigma_max=80.0)
EDM_ATTRS = dict(img_resolution=8, img_channels=3, label_dim=4, use_fp16=True, sigma_min=0,
                 sigma_max=float("inf"), sigma_data=np.float64(0.5))


def poison_src(marker):
    """Module source that leaves a marker file and fails if anyone executes it."""
    return f"open({str(marker)!r}, 'w').write('ran')\nraise RuntimeError('embedded source ran')\n" + SRC


def perturbed(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


def write_snapshot(path, precond, net_name, net_kwargs, *, src=SRC, **kwargs):
    return edm_snapshots.write_snapshot(path, precond, net_name, net_kwargs, src=src, **kwargs)


def tiny_vp_precond(seed=0):
    torch.manual_seed(seed)
    return Precond(perturbed(TinyNet(**TINY_KWARGS), seed), **VP_ATTRS).eval()


def inputs(label_dim=4, channels=3, resolution=8):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, channels, resolution, resolution, generator=gen)
    return x, torch.tensor([0.3, -1.2]), torch.tensor([1, label_dim - 1]) if label_dim else None


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_stand_in_round_trip_without_running_source(tmp_path, protocol):
    marker = tmp_path / "source-ran"
    precond = tiny_vp_precond()
    path = write_snapshot(tmp_path / "snap.pkl", precond, "SongUNet", TINY_KWARGS,
                          src=poison_src(marker), protocol=protocol)

    loaded = load_edm_pickle(path, networks={"SongUNet": CmbenchTiny})
    assert not marker.exists()
    assert isinstance(loaded.net, CmbenchTiny) and not loaded.net.training
    assert loaded.preconditioning == "vp"
    assert loaded.options == {
        "image_shape": [3, 8, 8], "label_dim": 4, "sigma_min": 0.002, "sigma_max": 80.0,
        "use_fp16": False, "precond_class": "VPPrecond", "network_class": "SongUNet",
        "beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5,
    }
    assert loaded.network_kwargs == TINY_KWARGS
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.path == path and not loaded.trusted_code

    x, t, y = inputs()
    with torch.no_grad():
        expected = precond.model(x, t, F.one_hot(y, 4).float())
        assert torch.equal(loaded.net(x, t, y), expected)
        other = tiny_vp_precond(seed=5).model
        assert not torch.equal(other(x, t, F.one_hot(y, 4).float()), expected)


def test_records_keep_structure_as_data(tmp_path):
    precond = tiny_vp_precond()
    path = write_snapshot(tmp_path / "snap.pkl", precond, "SongUNet", TINY_KWARGS, precond_name="EDMPrecond")
    top = read_edm_records(path.read_bytes(), path)
    assert set(top) == {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}
    record = top["ema"]
    assert record.class_name == "EDMPrecond" and record.persistent and record.version == 6
    assert record.module_src == SRC and record.module_name is None
    assert record.attributes["beta_d"] == 19.9
    model = record.submodules["model"]
    assert model.init_kwargs == TINY_KWARGS and model.init_args == ()
    assert model.buffers["unused"] is None
    blocks = model.submodules["blocks"]
    assert (blocks.module_name, blocks.class_name, blocks.persistent) == ("torch.nn.modules.container", "ModuleDict", False)
    assert set(model.state_dict()) == set(precond.model.state_dict())
    for key, value in precond.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_edm_options_numpy_scalars_and_bare_preconditioner(tmp_path):
    torch.manual_seed(0)
    precond = Precond(perturbed(TinyNet(**TINY_KWARGS)), **EDM_ATTRS).eval()
    path = write_snapshot(tmp_path / "net.pkl", precond, "DhariwalUNet", TINY_KWARGS,
                          precond_name="EDMPrecond", top="net")
    loaded = load_edm_pickle(path, networks={"DhariwalUNet": CmbenchTiny})
    assert loaded.preconditioning == "edm"
    assert loaded.options["sigma_data"] == 0.5 and type(loaded.options["sigma_data"]) is float
    assert loaded.options["sigma_min"] == 0.0 and loaded.options["sigma_max"] == float("inf")
    assert loaded.options["use_fp16"] is True


@pytest.mark.skipif(not np.__version__.startswith("2"), reason="rewrites numpy 2's scalar global")
def test_numpy_1_scalar_global_accepted(tmp_path):
    torch.manual_seed(0)
    precond = Precond(perturbed(TinyNet(**TINY_KWARGS)), **EDM_ATTRS).eval()
    path = write_snapshot(tmp_path / "net.pkl", precond, "SongUNet", TINY_KWARGS,
                          precond_name="EDMPrecond", protocol=2)
    data = path.read_bytes()
    assert b"numpy._core.multiarray\nscalar\n" in data
    path.write_bytes(data.replace(b"numpy._core.multiarray\nscalar\n", b"numpy.core.multiarray\nscalar\n"))
    assert load_edm_pickle(path, networks={"SongUNet": CmbenchTiny}).options["sigma_data"] == 0.5


def test_iddpm_sigma_table(tmp_path):
    torch.manual_seed(0)
    precond = Precond(perturbed(TinyNet(**{**TINY_KWARGS, "out_channels": 6})), img_resolution=8,
                      img_channels=3, label_dim=4, use_fp16=False, C_1=0.001, C_2=0.008, M=4,
                      sigma_min=0.1, sigma_max=9.0)
    precond.register_buffer("u", torch.tensor([9.0, 3.0, 1.0, 0.1, 0.0]))
    path = write_snapshot(tmp_path / "snap.pkl", precond, "DhariwalUNet",
                          {**TINY_KWARGS, "out_channels": 6}, precond_name="iDDPMPrecond")
    loaded = load_edm_pickle(path, networks={"DhariwalUNet": CmbenchTiny})
    assert loaded.preconditioning == "iddpm"
    assert loaded.options["sigma_table"] == pytest.approx([9.0, 3.0, 1.0, 0.1, 0.0])
    assert (loaded.options["C_1"], loaded.options["C_2"], loaded.options["M"]) == (0.001, 0.008, 4)


def test_real_song_unet(tmp_path):
    from cmbench.nets import song_unet
    kwargs = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=4, augment_dim=9,
                  model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                  dropout=0.13, embedding_type="fourier", channel_mult_noise=2,
                  encoder_type="residual", resample_filter=[1, 3, 3, 1])
    torch.manual_seed(0)
    net = perturbed(song_unet.SongUNet(**kwargs))
    precond = Precond(net, img_resolution=8, img_channels=3, label_dim=4, use_fp16=False,
                      sigma_min=0.02, sigma_max=100)
    marker = tmp_path / "source-ran"
    path = write_snapshot(tmp_path / "ve.pkl", precond, "SongUNet", kwargs,
                          precond_name="VEPrecond", src=poison_src(marker))
    loaded = load_edm_pickle(path)
    assert not marker.exists()
    assert type(loaded.net) is song_unet.SongUNet and loaded.preconditioning == "ve"
    assert loaded.options["sigma_max"] == 100.0
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.net(x, t, y), net(x, t, y))


def test_real_dhariwal_unet(tmp_path):
    from cmbench.nets import dhariwal_unet
    kwargs = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=5, augment_dim=0,
                  model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)
    torch.manual_seed(0)
    net = perturbed(dhariwal_unet.DhariwalUNet(**kwargs))
    precond = Precond(net, img_resolution=8, img_channels=3, label_dim=5, use_fp16=True,
                      sigma_min=0, sigma_max=float("inf"), sigma_data=0.5)
    path = write_snapshot(tmp_path / "adm.pkl", precond, "DhariwalUNet", kwargs, precond_name="EDMPrecond")
    loaded = load_edm_pickle(path)
    assert type(loaded.net) is dhariwal_unet.DhariwalUNet and loaded.preconditioning == "edm"
    x, t, y = inputs(label_dim=5)
    with torch.no_grad():
        assert torch.equal(loaded.net(x, t, y), net(x, t, y))


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_malicious_global_refused_and_not_run(tmp_path, kind):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    func, args, name = {
        "os.system": (os.system, (command,), f"{os.system.__module__}.system"),
        "builtins.eval": (eval, (f"open({str(marker)!r}, 'w')",), "builtins.eval"),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],), "subprocess.Popen"),
    }[kind]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": _Evil(func, args)}))
    with pytest.raises(RefusedGlobalError) as info:
        load_edm_pickle(path)
    message = str(info.value)
    assert str(path) in message and name in message
    assert "trust_pickle_code=True" in message and "torch._utils._rebuild_tensor_v2" in message
    assert not marker.exists()


def test_malicious_storage_bytes_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Evil(os.system, (f"touch {marker}",)))
    path = tmp_path / "evil-storage.pkl"
    path.write_bytes(pickle.dumps({"ema": _Evil(torch.storage._load_from_bytes, (inner,))}))
    with pytest.raises(ValueError, match="weights_only=True") as info:
        load_edm_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_unknown_classes_named(tmp_path):
    precond = tiny_vp_precond()
    path = write_snapshot(tmp_path / "a.pkl", precond, "SongUNet", TINY_KWARGS, precond_name="FancyPrecond")
    with pytest.raises(ValueError, match="unknown preconditioner class 'FancyPrecond'; accepted: EDMPrecond, VPPrecond"):
        load_edm_pickle(path, networks={"SongUNet": CmbenchTiny})
    path = write_snapshot(tmp_path / "b.pkl", precond, "MysteryUNet", TINY_KWARGS)
    with pytest.raises(ValueError, match="unknown network class 'MysteryUNet'; accepted: DhariwalUNet, SongUNet"):
        load_edm_pickle(path)


def test_weights_that_do_not_fit_are_listed(tmp_path):
    path = write_snapshot(tmp_path / "a.pkl", tiny_vp_precond(), "SongUNet", TINY_KWARGS)
    wider = lambda **kw: CmbenchTiny(**{**kw, "model_channels": 5})  # noqa: E731
    with pytest.raises(ValueError, match=r"shape mismatches .*conv\.weight: file \(4, 3, 3, 3\) vs net \(5, 3, 3, 3\)"):
        load_edm_pickle(path, networks={"SongUNet": wider})
    with pytest.raises(ValueError, match="cannot build SongUNet from the snapshot's constructor arguments"):
        load_edm_pickle(path, networks={"SongUNet": lambda **kw: CmbenchTiny(**kw, depth=3)})


def test_corrupt_files_and_wrong_layouts(tmp_path):
    path = write_snapshot(tmp_path / "good.pkl", tiny_vp_precond(), "SongUNet", TINY_KWARGS)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pkl is not a readable EDM snapshot"):
        load_edm_pickle(truncated)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(ValueError, match="garbage.pkl is not a readable EDM snapshot"):
        load_edm_pickle(garbage)
    no_ema = tmp_path / "no-ema.pkl"
    no_ema.write_bytes(pickle.dumps({"G_ema": 1, "D": 2}))
    with pytest.raises(ValueError, match=r"no 'ema' key \(keys: 'G_ema', 'D'\)"):
        load_edm_pickle(no_ema)
    with pytest.raises(FileNotFoundError):
        load_edm_pickle(tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_edm_pickle(path, expected_sha256="0" * 64, networks={"SongUNet": CmbenchTiny})


def test_allow_list_has_no_code_runners():
    for name in ("builtins.eval", "builtins.exec", "os.system", "torch.load",
                 "builtins.__import__", "copyreg._reconstructor", "torch_utils.persistence._src_to_module"):
        assert name not in ALLOWED_GLOBALS
    # ECT snapshots pickle a bound method as getattr(owner, name): it resolves to an inert recorder
    assert ALLOWED_GLOBALS["builtins.getattr"] is not getattr
    assert all(value not in (getattr, eval, exec, __import__) for value in ALLOWED_GLOBALS.values())


@pytest.fixture
def edm_code_on_path(tmp_path, monkeypatch):
    """A minimal stand-in for EDM's torch_utils/dnnlib that, like EDM, executes module_src."""
    root = tmp_path / "edm_repo"
    (root / "torch_utils").mkdir(parents=True)
    (root / "dnnlib").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "dnnlib" / "__init__.py").write_text("")
    (root / "torch_utils" / "persistence.py").write_text(textwrap.dedent(
        """
        import types
        import torch

        def _reconstruct_persistent_obj(meta):
            module = types.ModuleType("_embedded")
            exec(meta["module_src"], module.__dict__)
            cls = module.__dict__.get(meta["class_name"]) or getattr(torch.nn, meta["class_name"])
            obj = cls.__new__(cls)
            obj.__dict__.update(meta["state"])
            return obj
        """
    ))
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("torch_utils", "dnnlib"):
            del sys.modules[name]


def test_trusted_path_runs_edm_code(tmp_path, edm_code_on_path):
    precond = tiny_vp_precond()
    path = write_snapshot(tmp_path / "snap.pkl", precond, "TinyNet", TINY_KWARGS)
    loaded = load_edm_pickle(path, trust_pickle_code=True)
    assert loaded.trusted_code and loaded.preconditioning == "vp"
    assert loaded.options["beta_d"] == 19.9 and loaded.options["network_class"] == "TinyNet"
    assert loaded.network_kwargs == TINY_KWARGS
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.net(x, t, y), precond.model(x, t, F.one_hot(y, 4).float()))
    with pytest.raises(ValueError, match="s_noise_labels"):
        loaded.net(x, t, y, t)


def test_trusted_path_needs_edm_code(tmp_path):
    if importlib.util.find_spec("torch_utils") is not None:
        pytest.skip("EDM's torch_utils is importable here")
    path = write_snapshot(tmp_path / "snap.pkl", tiny_vp_precond(), "SongUNet", TINY_KWARGS)
    with pytest.raises(ValueError, match="put the EDM repository .* on PYTHONPATH"):
        load_edm_pickle(path, trust_pickle_code=True)
