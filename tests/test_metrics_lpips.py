"""cmbench's LPIPS (Zhang et al. 2018) against the lpips package, and its weights files.

No real trunk weights are needed (nor downloaded): the tests write random weights in the
official formats (a torchvision state dict with ``features.*`` and ``classifier.*`` keys of the
real shapes; an lpips v0.1 heads file with non-negative ``lin{k}.model.1.weight``), build
cmbench's LPIPS from those files and compare it with ``lpips.LPIPS`` built from the same heads
file, whose trunk is a transcription of torchvision's ``features`` below, loaded from the same
trunk file and served in place of ``torchvision.models.alexnet`` / ``vgg16`` by
:func:`cmbench.reference_impls.lpips_imported`. The classifier entries are stride-0 views of one
number (real keys and shapes, a file of a few MB): cmbench ignores them, and loading them would
cost seconds. The official heads files shipped in the lpips wheel are checked against the pinned
digests and compared too. Measured on the CPU: the distances of float images agree exactly (max
|diff| 0.0, both nets, 64×64 and 32×32); the tolerance asserted is 1e-5.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cmbench.images import from_uint8
from cmbench.metrics.lpips import (
    BACKBONE_FILES,
    ENV_VAR,
    HEADS_FILES,
    LPIPS,
    LPIPS_CONVENTION,
    LPIPSFile,
    check_lpips_size,
    find_lpips_weights,
    load_lpips,
    lpips_convention,
    lpips_distances,
    lpips_weights_identity,
    verify_lpips_file,
)
from cmbench.nets.lpips_trunks import MIN_IMAGE_SIZE, LPIPSTrunk
from cmbench.reference_impls import lpips_imported
from cmbench.weights import WeightsHashError

TOLERANCE = 1e-5
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
CLASSIFIER_SHAPES = {  # torchvision's classifier entries, ignored by LPIPS
    "alex": {"1": (4096, 256 * 6 * 6), "4": (4096, 4096), "6": (1000, 4096)},
    "vgg": {"0": (4096, 512 * 7 * 7), "3": (4096, 4096), "6": (1000, 4096)},
}


# --- a transcription of torchvision's trunks (torchvision/models/alexnet.py and vgg.py) ----------


class TorchvisionAlexNetFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )


class TorchvisionVGG16Features(nn.Module):
    cfg_d = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for v in self.cfg_d:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)


REFERENCE_TRUNKS = {"alex": TorchvisionAlexNetFeatures, "vgg": TorchvisionVGG16Features}


def random_torchvision_state_dict(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision AlexNet / VGG16 state dict: He-normal ``features.*``, ``classifier.*`` of the real shapes."""
    torch.manual_seed(seed)
    trunk = REFERENCE_TRUNKS[net]()
    with torch.no_grad():
        for module in trunk.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                module.bias.normal_(0.0, 0.05)
    state = {key: value.clone() for key, value in trunk.state_dict().items()}
    for index, shape in CLASSIFIER_SHAPES[net].items():
        state[f"classifier.{index}.weight"] = torch.full((1,), 0.01).expand(shape)
        state[f"classifier.{index}.bias"] = torch.zeros(1).expand(shape[0])
    return state


def random_heads_state_dict(net: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """An lpips v0.1 heads file's content: non-negative 1×1 conv weights ``[1, C, 1, 1]`` per layer."""
    generator = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(CHANNELS[net])}


def reference_factory(net: str, state: dict[str, torch.Tensor]):
    """What lpips calls as ``torchvision.models.alexnet`` / ``vgg16``: the transcription with ``state`` loaded."""

    def build(pretrained: bool = False, **_):
        assert not pretrained, "lpips asked for torchvision's own weights"
        model = REFERENCE_TRUNKS[net]()
        model.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
        return model

    return build


def reference_lpips(net: str, backbone: Path, heads: Path | None):
    """``lpips.LPIPS`` with the trunk from ``backbone`` and the heads from ``heads`` (None: the wheel's)."""
    state = torch.load(backbone, map_location="cpu", weights_only=True)
    factories = {"alexnet" if net == "alex" else "vgg16": reference_factory(net, state)}
    with lpips_imported(**factories) as lpips:
        model = lpips.LPIPS(pretrained=True, net=net, model_path=None if heads is None else str(heads),
                            pnet_rand=True, verbose=False)
    assert "lpips" not in sys.modules and "torchvision" not in sys.modules
    return model


@pytest.fixture(scope="module", params=["alex", "vgg"])
def files(request, tmp_path_factory) -> tuple[str, Path, Path]:
    net = request.param
    folder = tmp_path_factory.mktemp(f"lpips-{net}")
    backbone, heads = folder / BACKBONE_FILES[net].file_name, folder / HEADS_FILES[net].file_name
    torch.save(random_torchvision_state_dict(net), backbone)
    torch.save(random_heads_state_dict(net), heads)
    return net, backbone, heads


def random_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


# --- agreement with the lpips package -------------------------------------------------------------


def test_lpips_agrees_with_the_lpips_package(files):
    net, backbone, heads = files
    ours = load_lpips(net, backbone=backbone, heads=heads, check=False)
    theirs = reference_lpips(net, backbone, heads)
    sizes = (64, 32) if net == "alex" else (64,)
    for size in sizes:
        a, b = (from_uint8(random_images(3, size, seed=seed)) for seed in (1, 2))
        with torch.no_grad():
            expected = theirs(a, b).view(-1)
            got = ours(a, b)
        assert got.shape == (3,)
        assert expected.abs().min() > 1e-3  # a real distance, not a degenerate 0
        torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)
        with torch.no_grad():  # identical images are at distance 0
            assert ours(a, a).abs().max() == 0


def test_lpips_distances_of_uint8_and_grey_images(files):
    net, backbone, heads = files
    model = load_lpips(net, backbone=backbone, heads=heads, check=False)
    theirs = reference_lpips(net, backbone, heads)
    size = MIN_IMAGE_SIZE[net] + 1
    output, truth = random_images(5, size, seed=3), random_images(5, size, seed=4)
    got = lpips_distances(output.numpy(), truth, model, batch_size=2)
    assert got.dtype == np.float64 and got.shape == (5,)
    with torch.no_grad():  # lpips' own conversion (im2tensor): float64 v / 127.5 - 1, then float32
        expected = theirs(*(torch.Tensor(x.numpy() / 127.5 - 1) for x in (output, truth))).view(-1).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    grey_out, grey_truth = output[:, :1], truth[:, :1]
    as_rgb = lpips_distances(grey_out.repeat(1, 3, 1, 1), grey_truth.repeat(1, 3, 1, 1), model)
    np.testing.assert_array_equal(lpips_distances(grey_out, grey_truth, model), as_rgb)
    assert lpips_distances(output[:0], truth[:0], model).shape == (0,)


# --- weights files ----------------------------------------------------------------------------------


def test_the_official_heads_files_match_the_pinned_digests():
    """The heads files the lpips wheel ships hash to the pinned sha256 and size."""
    spec = importlib.util.find_spec("lpips")
    if spec is None:
        pytest.skip("the lpips package is not installed (pip install cmbench[test])")
    folder = Path(spec.origin).parent / "weights" / "v0.1"
    for net in ("alex", "vgg"):
        assert verify_lpips_file(folder / f"{net}.pth", HEADS_FILES[net]) == HEADS_FILES[net].sha256
        assert (folder / f"{net}.pth").stat().st_size == HEADS_FILES[net].size


def test_official_heads_with_a_random_trunk_agree(tmp_path):
    spec = importlib.util.find_spec("lpips")
    if spec is None:
        pytest.skip("the lpips package is not installed (pip install cmbench[test])")
    official_heads = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    backbone = tmp_path / BACKBONE_FILES["alex"].file_name
    torch.save(random_torchvision_state_dict("alex", seed=5), backbone)
    with pytest.raises(WeightsHashError, match="7be5be79"):  # a random trunk fails torch hub's prefix check
        find_lpips_weights("alex", backbone=backbone, heads=official_heads)
    heads_copy = tmp_path / HEADS_FILES["alex"].file_name
    heads_copy.write_bytes(official_heads.read_bytes())
    weights = find_lpips_weights("alex", backbone=backbone, heads=tmp_path, check=False)
    assert weights.heads == heads_copy
    verify_lpips_file(weights.heads, HEADS_FILES["alex"])  # the pinned digest holds for the copy
    ours = load_lpips("alex", backbone=backbone, heads=heads_copy, check=False)
    theirs = reference_lpips("alex", backbone, None)  # lpips loads its own alex.pth
    a, b = (from_uint8(random_images(2, 48, seed=seed)) for seed in (6, 7))
    with torch.no_grad():
        torch.testing.assert_close(ours(a, b), theirs(a, b).view(-1), rtol=0, atol=TOLERANCE)


def test_weights_are_found_in_the_variable_and_the_caches_and_identified(files, tmp_path, monkeypatch):
    net, backbone, heads = files
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_VAR, str(backbone.parent))
    weights = find_lpips_weights(net, check=False)
    assert (weights.backbone, weights.heads) == (backbone, heads)
    monkeypatch.delenv(ENV_VAR)
    cache = tmp_path / "cache" / "cmbench"
    cache.mkdir(parents=True)
    for path in (backbone, heads):
        (cache / path.name).symlink_to(path)
    assert find_lpips_weights(net, check=False).heads == cache / heads.name
    identity = lpips_weights_identity(load_lpips(net, check=False).weights)
    assert identity["lpips_backbone"] == BACKBONE_FILES[net].file_name
    assert identity["lpips_heads_sha256"] == hashlib.sha256(heads.read_bytes()).hexdigest()
    assert set(identity) == {"lpips_backbone", "lpips_backbone_sha256", "lpips_heads", "lpips_heads_sha256"}
    assert lpips_convention(net) == {**LPIPS_CONVENTION, "lpips_net": net}
    assert LPIPS_CONVENTION["lpips_version"] == "0.1"


def test_a_missing_file_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as missing:
        find_lpips_weights("vgg")
    text = str(missing.value)
    for part in ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                 str(hub / "vgg16-397923af.pth"), ENV_VAR, "never downloads"):
        assert part in text, (part, text)
    hub.mkdir(parents=True)
    torch.save(random_torchvision_state_dict("alex"), hub / BACKBONE_FILES["alex"].file_name)
    with pytest.raises(FileNotFoundError) as missing:
        find_lpips_weights("alex", check=False)
    text = str(missing.value)
    for part in ("lpips_v0.1_alex.pth", "richzhang/PerceptualSimilarity", "lpips/weights/v0.1/alex.pth",
                 HEADS_FILES["alex"].sha256, str(hub / "lpips_v0.1_alex.pth")):
        assert part in text, (part, text)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))  # a variable that leads nowhere is an error
    with pytest.raises(FileNotFoundError, match=f"\\${ENV_VAR} is set"):
        find_lpips_weights("alex", check=False)
    with pytest.raises(FileNotFoundError, match="neither the file nor a folder"):
        find_lpips_weights("alex", backbone=tmp_path / "nothing.pth", check=False)


def test_a_heads_file_with_the_wrong_content_is_refused(tmp_path):
    heads = tmp_path / HEADS_FILES["alex"].file_name
    torch.save(random_heads_state_dict("alex"), heads)
    with pytest.raises(WeightsHashError) as wrong:
        verify_lpips_file(heads, HEADS_FILES["alex"])
    assert str(heads) in str(wrong.value) and HEADS_FILES["alex"].sha256 in str(wrong.value)
    assert "richzhang/PerceptualSimilarity" in str(wrong.value)
    digest = hashlib.sha256(heads.read_bytes()).hexdigest()
    prefix_only = LPIPSFile("a test file", heads.name, "nowhere", hash_prefix=digest[:8])
    assert verify_lpips_file(heads, prefix_only) == digest


def test_files_with_the_wrong_keys_are_refused_by_name(files, tmp_path):
    net, backbone, heads = files
    resnet_like = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, resnet_like)
    with pytest.raises(ValueError) as wrong:
        load_lpips(net, backbone=resnet_like, heads=heads, check=False)
    text = str(wrong.value)
    assert str(resnet_like) in text and "conv1.weight" in text and "fc.weight" in text and "features.0.weight" in text
    other = "vgg" if net == "alex" else "alex"
    with pytest.raises(ValueError, match="wrong shapes|missing|unexpected") as wrong:  # the other trunk's file
        load_lpips(other, backbone=backbone, heads=heads, check=False)
    assert str(backbone) in str(wrong.value)
    bad_heads = tmp_path / "heads.pth"
    torch.save({"lin0.weight": torch.zeros(1, 64, 1, 1)}, bad_heads)
    with pytest.raises(ValueError) as wrong:
        load_lpips(net, backbone=backbone, heads=bad_heads, check=False)
    text = str(wrong.value)
    assert str(bad_heads) in text and "lin0.weight" in text and "lin4.model.1.weight" in text
    pickled_code = tmp_path / "code.pth"
    torch.save({"features.0.weight": nn.ReLU()}, pickled_code)
    with pytest.raises(ValueError, match="weights_only"):
        load_lpips(net, backbone=pickled_code, heads=heads, check=False)


# --- image sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_minimum_image_sizes_are_the_trunks_real_ones(net):
    size = MIN_IMAGE_SIZE[net]
    assert size == {"alex": 31, "vgg": 16}[net]
    trunk = LPIPSTrunk(net).eval()
    with torch.no_grad():
        assert [t.shape[-1] for t in trunk(torch.zeros(1, 3, size, size))][-1] == 1
        with pytest.raises(RuntimeError):
            trunk(torch.zeros(1, 3, size - 1, size + 40))
    check_lpips_size(net, size, size)
    with pytest.raises(ValueError, match=f"at least {size}×{size}.*got {size}×{size - 1}"):
        check_lpips_size(net, size, size - 1)
    images = random_images(2, size - 1)
    with pytest.raises(ValueError, match=f"LPIPS-{net} needs images of at least"):
        lpips_distances(images, images, LPIPS(net))


# --- no torchvision, no lpips at run time --------------------------------------------------------------

SCRIPT = r"""
import importlib.abc, json, sys

attempts = []


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("torchvision", "lpips"):
            attempts.append(fullname)
            raise ImportError(fullname)
        return None


sys.meta_path.insert(0, Blocker())
import torch
from cmbench.metrics.lpips import load_lpips, lpips_distances

model = load_lpips(sys.argv[1], backbone=sys.argv[2], heads=sys.argv[3], check=False)
images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
distances = lpips_distances(images, images, model).tolist()
print("RESULT " + json.dumps({"attempts": attempts, "distances": distances,
                              "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torchvision", "lpips"))}))
"""


@pytest.mark.parametrize("files", ["alex"], indirect=True)
def test_runtime_module_imports_neither_torchvision_nor_lpips(files):
    net, backbone, heads = files
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, net, str(backbone), str(heads)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"attempts": [], "distances": [0.0, 0.0], "loaded": []}
