"""``cmbench nll`` and ``cmbench stats compute`` split over ranks: the numbers do not depend on the world size.

In one process a simulated world runs each rank's call in turn (the main rank last, its gather
answered from a mailbox the others filled) to check the split itself; then ``torchrun`` (run as
``python -m torch.distributed.run``) starts two real gloo processes, and their output is compared
with one process's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cmbench.cli import main
from cmbench.cli_parser import build_parser
from cmbench.distributed import SINGLE, World
from cmbench.features.toy import ToyClassifierExtractor
from cmbench.images import to_uint8
from cmbench.likelihood_ctm import CTMEvalBPD
from cmbench.metrics.npz_array import NpzArray
from cmbench.metrics.reference import load_reference
from cmbench.models import GaussianMixtureModel
from cmbench.models.gmm import mixture_from_spec
from cmbench.nll import ExactProtocol, evaluate_nll
from cmbench.stats import compute_reference_stats, open_images
from cmbench.zoo.toy.classifier import DEFAULT_CLASSIFIER
from launch import torchrun

CPU = torch.device("cpu")
SHAPE = (1, 2, 2)
MIXTURE = {"random": {"count": 3, "seed": 0, "mean_scale": 0.6, "std": 0.2}}


@dataclass(frozen=True)
class SimulatedWorld(World):
    """A rank of a world whose ranks run one after another in this process: ranks 1.. post their
    gathered value to ``mailbox``; the main rank, run last, gets them all. ``share`` gives each rank
    its own value (the main rank's is what the callers under test return)."""

    mailbox: dict = field(default_factory=dict, compare=False)

    def gather(self, value: Any) -> list[Any] | None:
        self.mailbox[self.rank] = value
        return [self.mailbox[rank] for rank in range(self.size)] if self.main else None

    def share(self, value: Any) -> Any:
        return value


def run_ranks(size: int, call: Callable[[World], Any]) -> list[Any]:
    """``call(world)`` for every rank of a simulated world of ``size``, the main rank last; results by rank."""
    mailbox: dict = {}
    results = {rank: call(SimulatedWorld(rank=rank, size=size, mailbox=mailbox)) for rank in reversed(range(size))}
    return [results[rank] for rank in range(size)]


# --- nll ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixture():
    """A 3-component mixture on 2×2 grey images and 11 uint8 images drawn from it."""
    model = GaussianMixtureModel(mixture_from_spec(MIXTURE, 4), SHAPE)
    g = torch.Generator().manual_seed(1)
    components = torch.randint(0, 3, (11,), generator=g)
    x = model.mixture.sample(components, torch.randn(11, 4, generator=g, dtype=torch.float64))
    return model, x.reshape(-1, *SHAPE)


@pytest.mark.parametrize("protocol, continuous", [
    (ExactProtocol(rtol=1e-2, atol=1e-2), False),
    (ExactProtocol("exact", rtol=1e-2, atol=1e-2), False),
    (ExactProtocol(rtol=1e-2, atol=1e-2), True),
    (CTMEvalBPD(), False),
], ids=["hutchinson", "exact-divergence", "continuous", "ctm_eval_bpd"])
def test_nll_is_the_same_for_every_world_size(mixture, protocol, continuous):
    """11 images in batches of 3 (4 batches) over 3 ranks (1, 1 and 2 batches) and 5 (one with none):
    the main rank's result equals one process's bit for bit."""
    model, x = mixture
    images = x.float().clamp(-1, 1) if continuous else to_uint8(x)

    def nll(world: World) -> dict | None:
        return evaluate_nll(model, images, protocol, continuous=continuous, passes=2, batch_size=3, seed=5,
                            device=CPU, progress=False, world=world)

    alone = nll(SINGLE)
    for size in (3, 5):
        results = run_ranks(size, nll)
        assert results[0] == alone, size
        assert results[1:] == [None] * (size - 1)
    assert alone["num_images"] == 11 and alone["nfe_mean"] > 10


# --- image sources --------------------------------------------------------------------------------


def _sources(tmp_path) -> dict[str, Any]:
    images = to_uint8(torch.rand(23, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "stored.npz", nhwc)
    np.savez_compressed(tmp_path / "deflated.npz", nhwc)
    np.savez(tmp_path / "float.npz", nhwc.astype(np.float32) / 127.5 - 1)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(nhwc):
        Image.fromarray(image[:, :, 0]).save(tmp_path / "pngs" / f"{i:03d}.png")
    return {"toy": open_images("toy:test", limit=23), "stored": open_images(str(tmp_path / "stored.npz")),
            "deflated": open_images(str(tmp_path / "deflated.npz")),
            "float": open_images(str(tmp_path / "float.npz"), quantisation="round"),
            "folder": open_images(str(tmp_path / "pngs"), channels=1)}


def test_a_share_of_batches_is_those_batches_of_the_whole_grid(tmp_path):
    for name, source in _sources(tmp_path).items():
        whole = list(source.batches(5))
        assert [len(b) for b in whole] == [5, 5, 5, 5, 3] and source.num_batches(5) == 5, name
        for numbers in (range(0, 2), range(2, 5), range(4, 5), range(3, 3)):
            share = list(source.batches(5, numbers))
            assert len(share) == len(numbers), (name, numbers)
            for got, want in zip(share, whole[numbers.start : numbers.stop]):
                assert torch.equal(got, want), (name, numbers)
    with pytest.raises(ValueError, match="consecutive"):
        next(source.batches(5, range(0, 4, 2)))


def test_npz_rows_from_a_start_row(tmp_path):
    data = np.arange(7 * 3, dtype=np.int16).reshape(7, 3)
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "a.npz", data)
        array = NpzArray(tmp_path / "a.npz", "arr_0")
        np.testing.assert_array_equal(np.concatenate(list(array.batches(2, start=3))), data[3:])
        assert [len(b) for b in array.batches(2, 6, start=3)] == [2, 1]
        assert list(array.batches(2, start=7)) == []


# --- stats compute --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_extractor():
    return ToyClassifierExtractor(DEFAULT_CLASSIFIER)


@pytest.mark.parametrize("keep", [0, 5, 30, 1000])
def test_reference_stats_are_the_same_for_every_world_size(toy_extractor, keep):
    """60 digits in batches of 8 (8 batches) over 2, 3 and 9 ranks: mean and covariance within
    1e-12 (relative) of one process's, the same count and the same first ``keep`` pool rows."""
    source = open_images("toy:test", channels=1, limit=60)

    def stats(world: World):
        return compute_reference_stats(source, toy_extractor, keep=keep, batch_size=8, progress=False, world=world)

    alone = stats(SINGLE)
    for size in (2, 3, 9):
        main_stats, *others = run_ranks(size, stats)
        assert others == [None] * (size - 1)
        assert main_stats.meta["num_images"] == 60 and main_stats.meta["world_size"] == size
        assert main_stats.meta["kept_features"] == alone.meta["kept_features"]
        for layer in alone.mu:
            scale = np.abs(alone.sigma[layer]).max()
            assert np.abs(main_stats.mu[layer] - alone.mu[layer]).max() <= 1e-12 * np.abs(alone.mu[layer]).max()
            assert np.abs(main_stats.sigma[layer] - alone.sigma[layer]).max() <= 1e-12 * scale
        assert main_stats.features.keys() == alone.features.keys()
        for layer, rows in alone.features.items():
            assert len(rows) == min(keep, 60) and np.array_equal(main_stats.features[layer], rows)


def rank_1_of_2(argv: list[str]):
    """The parsed command line as rank 1 of a simulated world of two sees it."""
    args = build_parser().parse_args(argv)
    args.world = SimulatedWorld(rank=1, size=2)
    return args


def test_other_ranks_do_their_share_and_write_and_print_nothing(tmp_path, capsys):
    """Rank 1 of 2 extracts (or solves) its share, then leaves the file and the report to rank 0."""
    out = tmp_path / "stats.npz"
    args = rank_1_of_2(["stats", "compute", "--suite", "toy", "--images", "toy:test", "--limit", "20",
                        "--batch-size", "8", "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    assert not out.exists() and args.world.mailbox[1].sums["pool"].count == 12  # batches 1 and 2 of 3
    suite = {"name": "mix", "num_samples": 4, "metrics": ["fid"], "features": {"extractor": "pixels"},
             "reference": {"model": "mix", "num_images": 8}, "runs": [{"model": "mix", "sampler": "euler", "nfe": [1]}],
             "models": {"mix": {"family": "gmm", "image_shape": list(SHAPE), **MIXTURE}}}
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))
    np.savez(tmp_path / "data.npz", np.full((5, 2, 2, 1), 100, np.uint8))
    out = tmp_path / "nll.json"
    args = rank_1_of_2(["nll", str(tmp_path / "suite.yaml"), "--model", "mix", "--data", str(tmp_path / "data.npz"),
                        "--batch-size", "2", "--passes", "1", "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    assert not out.exists() and len(args.world.mailbox[1].per_image) == 3  # batches 1 and 2 of 3
    assert capsys.readouterr().out == ""


# --- torchrun -------------------------------------------------------------------------------------


NLL = ["nll", "toy", "--model", "edm", "--data", "toy:test", "--limit", "6", "--batch-size", "2", "--passes", "2",
       "--rtol", "1e-3", "--atol", "1e-3", "--threads", "1", "--quiet"]


def test_torchrun_nll_matches_one_process(tmp_path, capsys):
    """Toy EDM, 6 digits in 3 batches over 2 processes: bits/dim and its standard error bit for bit."""
    assert main([*NLL, "--out", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    printed = torchrun([*NLL, "--out", str(tmp_path / "two.json")], tmp_path).stdout
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert json.loads(printed) == two  # printed once, by rank 0
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert two == one and two["num_images"] == 6


STATS = ["stats", "compute", "--suite", "toy", "--images", "toy:test", "--limit", "100", "--batch-size", "16",
         "--keep-features", "40", "--threads", "1", "--quiet"]


def test_torchrun_stats_compute_matches_one_process(tmp_path, capsys):
    """Toy digits, 100 images in 7 batches over 2 processes: the same statistics and pool rows."""
    assert main([*STATS, "--out", str(tmp_path / "one.npz")]) == 0
    capsys.readouterr()
    printed = torchrun([*STATS, "--out", str(tmp_path / "two.npz")], tmp_path).stdout
    assert printed.count("wrote ") == 1
    one, two = load_reference(tmp_path / "one.npz"), load_reference(tmp_path / "two.npz")
    assert (one.meta["world_size"], two.meta["world_size"], two.meta["num_images"]) == (1, 2, 100)
    for layer in one.mu:
        assert np.abs(two.mu[layer] - one.mu[layer]).max() <= 1e-12 * np.abs(one.mu[layer]).max()
        assert np.abs(two.sigma[layer] - one.sigma[layer]).max() <= 1e-12 * np.abs(one.sigma[layer]).max()
    assert np.array_equal(two.features["pool"], one.features["pool"]) and len(one.features["pool"]) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]
