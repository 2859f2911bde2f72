"""The CM paper's CIFAR-10 flax checkpoints: cmbench's msgpack reader, NCSN++ port and mapping, against JAX.

A small NCSN++ (tests/flax_ncsnpp.py, a flax transcription with the official parameter tree)
gets random values in every array, is written exactly as openai/consistency_models_cifar10's
``save_checkpoint`` writes a training state (``flax.serialization.to_bytes`` of a struct
dataclass with the fields of ``jcm.models.utils.State``), and is loaded by cmbench, which never
imports JAX or flax. The network output, the EDM denoiser and the CM consistency function are
compared with JAX's at σ = 0.002, 1 and 80. The official configuration is checked for a total
mapping from shapes alone (``jax.eval_shape``), without allocating a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import flax
import flax.serialization
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
import pytest
import torch

from cmbench.checkpoints.flax_msgpack import SKIPPED, flatten_tree, read_flax_msgpack
from cmbench.checkpoints.flax_ncsnpp import (
    FLAX_ARCHS,
    check_flax_tree,
    flax_arch,
    flax_leaves,
    load_flax_checkpoint,
)
from cmbench.checkpoints.official import OfficialArch
from cmbench.models import build_model
from cmbench.nets import build_network
from cmbench.suite import parse_suite
from cmbench.validate import ConfigError

from flax_ncsnpp import NCSNppCIFAR10, randomized

SMALL = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
SIZE = 16
SMALL_PRESET = "ncsnpp-test-small"
SIGMA_DATA, SIGMA_MIN = 0.5, 0.002
SIGMAS = (0.002, 1.0, 80.0)
TOLERANCE = 1e-5  # relative to the largest output value


@flax.struct.dataclass
class State:
    """The fields of jcm.models.utils.State, in its order."""

    step: Any
    lr: float
    ema_rate: float
    params: Any
    params_ema: Any
    model_state: Any
    opt_state: Any
    rng_state: Any


def training_state(params_ema, **replace) -> State:
    """A state as the official training loop saves it: other weights in ``params``, Adam's moments
    in ``opt_state`` (optax named tuples), a raw PRNG key, a NumPy scalar step."""
    params = randomized(params_ema, seed=7)
    fields = dict(step=np.int32(80), lr=2e-4, ema_rate=0.9999, params=params, params_ema=params_ema, model_state={},
                  opt_state=jax.jit(optax.adam(2e-4).init)(params),
                  rng_state=jax.random.PRNGKey(42))
    return State(**{**fields, **replace})


def write_state(path: Path, state) -> Path:
    path.write_bytes(flax.serialization.to_bytes(state))
    return path


@pytest.fixture(scope="module")
def reference():
    """The flax model, its random ``params_ema`` and JAX's outputs: per σ, the input x (NHWC) and
    F(c_in·x, 0.25·ln σ), the denoiser D and the consistency function f as jcm's get_denoiser_fn
    and get_distiller_fn (pred_t = σ_min) compute them, in float32."""
    model = NCSNppCIFAR10(**SMALL)
    zeros = jnp.zeros((2, SIZE, SIZE, 3))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), zeros, jnp.zeros((2,)))["params"]  # eager init: 30 s
    params = randomized(shapes, seed=1)
    apply = jax.jit(model.apply)  # one compile for all σ instead of one per operation
    rng = np.random.default_rng(5)
    outputs = {}
    for sigma in SIGMAS:
        x = jnp.asarray((rng.standard_normal((2, SIZE, SIZE, 3)) * math.hypot(sigma, SIGMA_DATA)).astype(np.float32))
        t = jnp.full((2,), sigma, jnp.float32)
        raw = apply({"params": params}, x * (1 / jnp.sqrt(t**2 + SIGMA_DATA**2))[:, None, None, None], 0.25 * jnp.log(t))
        scale = lambda v: v[:, None, None, None]  # noqa: E731
        denoised = (x * scale(SIGMA_DATA**2 / (t**2 + SIGMA_DATA**2))
                    + raw * scale(t * SIGMA_DATA / jnp.sqrt(t**2 + SIGMA_DATA**2)))
        consistent = (x * scale(SIGMA_DATA**2 / ((t - SIGMA_MIN) ** 2 + SIGMA_DATA**2))
                      + raw * scale((t - SIGMA_MIN) * SIGMA_DATA / jnp.sqrt(t**2 + SIGMA_DATA**2)))
        outputs[sigma] = {k: np.asarray(v) for k, v in dict(x=x, raw=raw, denoise=denoised, consistency=consistent).items()}
    return model, params, outputs


@pytest.fixture(scope="module")
def checkpoint(reference, tmp_path_factory) -> Path:
    return write_state(tmp_path_factory.mktemp("flax") / "checkpoint_80", training_state(reference[1]))


@pytest.fixture
def small_preset(monkeypatch):
    preset = OfficialArch(SMALL_PRESET, "ncsnpp", dict(img_resolution=SIZE, **SMALL),
                          {**FLAX_ARCHS["ncsnpp-cifar10"].model_options, "image_shape": [3, SIZE, SIZE]}, "test")
    monkeypatch.setitem(FLAX_ARCHS, SMALL_PRESET, preset)
    return preset


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def assert_close_relative(actual: torch.Tensor, expected_nhwc: np.ndarray, what: str):
    expected = nchw(expected_nhwc).double()
    error = (actual.double() - expected).abs().max().item() / expected.abs().max().item()
    assert error <= TOLERANCE, f"{what}: relative difference {error:.2e}"


def model_from(tmp_path, family, **entry):
    raw = {"name": "t", "num_samples": 2, "reference": {"path": "unused.npz"}, "models": {"m": {"family": family, **entry}},
           "runs": [{"model": "m", "sampler": "heun" if family == "edm" else "cm_multistep", "nfe": [1]}]}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    return build_model(family, suite.models["m"].options, suite.checkpoint_dir)


# --- the msgpack reader ---------------------------------------------------------------------------


def _assert_same_tree(ours, flax_restored, path="state"):
    if isinstance(flax_restored, dict):
        assert isinstance(ours, dict) and list(ours) == list(flax_restored), path
        for key in flax_restored:
            _assert_same_tree(ours[key], flax_restored[key], f"{path}/{key}")
    elif isinstance(flax_restored, (np.ndarray, np.generic)):
        assert type(ours) is type(flax_restored) and ours.dtype == flax_restored.dtype, path
        np.testing.assert_array_equal(ours, flax_restored, err_msg=path)
    else:
        assert type(ours) is type(flax_restored) and ours == flax_restored, path


def test_reader_returns_what_flax_restores(checkpoint):
    data = checkpoint.read_bytes()
    state = read_flax_msgpack(data, checkpoint)
    _assert_same_tree(state, flax.serialization.msgpack_restore(data))
    assert list(state) == ["step", "lr", "ema_rate", "params", "params_ema", "model_state", "opt_state", "rng_state"]
    assert isinstance(state["step"], np.int32) and state["lr"] == 2e-4 and state["rng_state"].dtype == np.uint32
    assert {a.dtype for a in flatten_tree(state["params_ema"]).values()} == {np.dtype(np.float32)}


def test_reader_joins_chunked_arrays_and_reads_complex_and_scalars(tmp_path, monkeypatch):
    monkeypatch.setattr(flax.serialization, "MAX_CHUNK_SIZE", 64)  # split anything over 64 bytes
    tree = {"big": np.arange(60, dtype=np.float32).reshape(3, 4, 5), "nested": {"pair": (np.float64(2.5), 1 + 2j)},
            "flags": [True, None, "text"], "ints": np.arange(3, dtype=np.int64)}
    data = flax.serialization.to_bytes(tree)  # tuples become maps keyed "0", "1", as in a training state
    assert b"__msgpack_chunked_array__" in data
    ours = read_flax_msgpack(data, "chunks.msgpack")
    _assert_same_tree(ours, flax.serialization.msgpack_restore(data))
    assert ours["big"].shape == (3, 4, 5) and ours["nested"]["pair"]["1"] == 1 + 2j


def test_reader_skips_the_entries_it_is_not_asked_for(checkpoint):
    state = read_flax_msgpack(checkpoint.read_bytes(), checkpoint, keep=("params_ema",))
    assert [k for k, v in state.items() if v is not SKIPPED] == ["params_ema"]
    assert list(state) == ["step", "lr", "ema_rate", "params", "params_ema", "model_state", "opt_state", "rng_state"]


@pytest.mark.parametrize("value, message", [
    (msgpack.ExtType(7, b"\x00"), r"state/w: msgpack extension type 7; flax checkpoints use 1 \(ndarray\)"),
    (msgpack.ExtType(1, msgpack.packb(([2], "object", b"\x00" * 16))), r"state/w: an array of dtype b'object'"),
    (msgpack.ExtType(1, msgpack.packb(([2], "bfloat16", b"\x00" * 4))), r"state/w: an array of dtype b'bfloat16'"),
    (msgpack.ExtType(1, msgpack.packb(([3], "float32", b"\x00" * 8))), r"state/w: a malformed array: shape \(3,\) "
                                                                        r"of float32 needs 12 bytes, it has 8"),
    (msgpack.Timestamp(0), r"state/w: a msgpack Timestamp, which flax checkpoints do not hold"),
    ({1: 2}, r"state/w: a key is a int \(1\); a flax state has string keys"),
])
def test_reader_refuses_what_flax_never_writes_naming_the_entry(value, message):
    data = msgpack.packb({"state": {"w": value}}, use_bin_type=True)
    with pytest.raises(ValueError, match=r"odd\.msgpack: " + message):
        read_flax_msgpack(data, "odd.msgpack")


def test_reader_refuses_broken_and_foreign_files_naming_them(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    with pytest.raises(ValueError, match=r"cut is truncated: its msgpack data ends inside an entry"):
        read_flax_msgpack(data[: len(data) // 2], "cut")
    with pytest.raises(ValueError, match=r"longer: .*not a flax msgpack checkpoint: 3 bytes follow the msgpack map"):
        read_flax_msgpack(data + b"abc", "longer")
    with pytest.raises(ValueError, match=r"empty: the file is empty"):
        read_flax_msgpack(b"", "empty")
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt: not a flax msgpack checkpoint: it starts with b'PK.*a zip archive"):
        read_flax_msgpack((tmp_path / "w.pt").read_bytes(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"p\.pkl: .*not a flax msgpack checkpoint: .*\(a Python pickle\)"):
        read_flax_msgpack(pickle.dumps({"a": 1}), "p.pkl")
    with pytest.raises(ValueError, match=r"notes\.txt: not a flax msgpack checkpoint: it starts with b'hell'"):
        read_flax_msgpack(b"hello world", "notes.txt")


# --- the NCSN++ port and the mapping ----------------------------------------------------------------


def test_loader_gives_the_jax_networks_outputs(checkpoint, reference, small_preset):
    ckpt = load_flax_checkpoint(checkpoint, SMALL_PRESET, expected_sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    assert ckpt.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest() and not ckpt.net.training
    for sigma, out in reference[2].items():
        c_in = 1 / math.sqrt(sigma**2 + SIGMA_DATA**2)
        with torch.no_grad():
            raw = ckpt.net(nchw(out["x"] * np.float32(c_in)), torch.full((2,), 0.25 * math.log(sigma)))
        assert_close_relative(raw, out["raw"], f"F at sigma {sigma}")
    with pytest.raises(ValueError, match=r"checkpoint_80: sha256 mismatch"):
        load_flax_checkpoint(checkpoint, SMALL_PRESET, expected_sha256="0" * 64)


def test_suite_models_give_jcms_denoiser_and_consistency_function(tmp_path, checkpoint, reference, small_preset):
    (tmp_path / "ckpt").write_bytes(checkpoint.read_bytes())
    edm = model_from(tmp_path, "edm", checkpoint="ckpt", format="flax", arch=SMALL_PRESET)
    cd = model_from(tmp_path, "cd", checkpoint="ckpt", format="flax", arch=SMALL_PRESET)
    assert (edm.sigma_min, edm.sigma_max, edm.sigma_data, cd.sigma_min) == (0.002, 80.0, 0.5, 0.002)
    for sigma, out in reference[2].items():
        x = nchw(out["x"]).double()
        sigmas = torch.full((2,), sigma, dtype=torch.float64)
        with torch.no_grad():
            assert_close_relative(edm.denoise(x, sigmas), out["denoise"], f"D at sigma {sigma}")
            assert_close_relative(cd.consistency(x, sigmas), out["consistency"], f"f at sigma {sigma}")


def _mutated(params, path: str, value=None):
    """A deep copy of ``params`` with the array at ``path`` (below params_ema) replaced or removed."""
    tree = jax.tree_util.tree_map(np.asarray, params)
    *parents, leaf = path.split("/")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return tree


@pytest.mark.parametrize("path, value, message", [
    ("ResnetBlockBigGANpp_3/Conv_0/kernel", None, r"1 missing: params_ema/ResnetBlockBigGANpp_3/Conv_0/kernel"),
    ("ResnetBlockBigGANpp_3/Conv_9/kernel", np.zeros((3, 3, 4, 4), np.float32),
     r"1 not in the network: params_ema/ResnetBlockBigGANpp_3/Conv_9/kernel"),
    ("AttnBlockpp_0/NIN_1/W", np.zeros((32, 16), np.float32),
     r"1 mismatched: params_ema/AttnBlockpp_0/NIN_1/W has shape \(32, 16\), the network needs \(32, 32\)"),
    ("Dense_0/bias", np.zeros(64, np.int32), r"params_ema/Dense_0/bias has dtype int32; weights are floating point"),
])
def test_a_tree_that_does_not_fit_is_refused_naming_the_array(tmp_path, reference, small_preset, path, value, message):
    bad = write_state(tmp_path / "bad", training_state(_mutated(reference[1], path, value)))
    with pytest.raises(ValueError, match=r"bad: the params_ema tree does not fit the NCSN\+\+ network .*" + message):
        load_flax_checkpoint(bad, SMALL_PRESET)


def test_a_state_without_params_ema_is_refused_naming_its_keys(tmp_path, reference, small_preset):
    @flax.struct.dataclass
    class Bare:
        step: int
        params: Any

    bare = write_state(tmp_path / "bare", Bare(step=3, params=reference[1]))
    with pytest.raises(ValueError, match=r"bare has no 'params_ema' tree .*; top-level keys found: step, params"):
        load_flax_checkpoint(bare, SMALL_PRESET)
    truncated = tmp_path / "truncated"
    truncated.write_bytes((tmp_path / "bare").read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"truncated is truncated"):
        load_flax_checkpoint(truncated, SMALL_PRESET)


def test_the_official_configuration_maps_totally_onto_the_port():
    """jax.eval_shape of the transcription at the released configuration (no arrays allocated):
    the preset's network takes every array, 445 of them, 56,395,651 values in all."""
    model = NCSNppCIFAR10()
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,)))["params"]
    flat = flatten_tree(shapes, "params_ema")
    preset = flax_arch("ncsnpp-cifar10")
    net = build_network(preset.arch, preset.kwargs)
    leaves = flax_leaves(net)
    check_flax_tree(flat, leaves, "eval_shape")
    assert len(flat) == len(leaves) == len(net.state_dict()) == 445
    assert sum(math.prod(v.shape) for v in flat.values()) == 56_395_651
    assert preset.model_options == {"image_shape": [3, 32, 32], "label_dim": 0, "sigma_min": 0.002, "sigma_max": 80.0,
                                    "sigma_data": 0.5, "time_input": "log_sigma", "noise_label_scale": 1.0}


def test_the_port_is_unconditional_and_takes_its_own_image_size():
    net = build_network("ncsnpp", dict(img_resolution=SIZE, **SMALL))
    with pytest.raises(ValueError, match="NCSNpp is unconditional but class_labels were given"):
        net(torch.zeros(1, 3, SIZE, SIZE), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"NCSNpp: x must have shape \[B, 3, 16, 16\], got \[1, 3, 32, 32\]"):
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1))


def test_suite_entries_name_a_flax_preset_and_a_family_with_that_net(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.arch: a flax checkpoint needs its architecture preset; "
                                          r"accepted: ncsnpp-cifar10"):
        model_from(tmp_path, "cd", checkpoint="x", format="flax")
    with pytest.raises(ConfigError, match=r"models\.m\.arch: 'adm-imagenet64' is not accepted"):
        model_from(tmp_path, "cd", checkpoint="x", format="flax", arch="adm-imagenet64")
    with pytest.raises(ConfigError, match=r"models\.m\.format: a flax checkpoint holds an NCSN\+\+ net .* not ctm"):
        model_from(tmp_path, "ctm", checkpoint="x", format="flax", arch="ncsnpp-cifar10")


# --- no JAX at run time -------------------------------------------------------------------------------

NO_JAX_SCRIPT = r"""
import importlib.abc, json, sys
BLOCKED = {"jax", "jaxlib", "flax", "optax", "orbax"}
attempts = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            attempts.append(fullname)
            raise ImportError(f"test_flax_checkpoints: cmbench tried to import {fullname}")
        return None

sys.meta_path.insert(0, Blocker())
from pathlib import Path
from cmbench.checkpoints.flax_ncsnpp import FLAX_ARCHS
from cmbench.checkpoints.official import OfficialArch
from cmbench.models import build_model
preset = json.loads(sys.argv[2])
FLAX_ARCHS[preset["name"]] = OfficialArch(preset["name"], "ncsnpp", preset["kwargs"], preset["options"], "test")
model = build_model("cd", {"checkpoint": sys.argv[1], "format": "flax", "arch": preset["name"]}, Path("."))
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print("RESULT " + json.dumps({"attempts": attempts, "loaded": loaded, "sha256": model.checkpoint_sha256}))
"""


def test_loading_a_flax_checkpoint_imports_no_jax(checkpoint, small_preset):
    preset = {"name": SMALL_PRESET, "kwargs": small_preset.kwargs, "options": small_preset.model_options}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-c", NO_JAX_SCRIPT, str(checkpoint), json.dumps(preset)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"attempts": [], "loaded": [], "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}
