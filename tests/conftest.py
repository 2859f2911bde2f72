"""Fixtures several test modules share."""

from __future__ import annotations

import os

# As the command line does (cmbench.threads.prefer_passive_waiting), before torch loads: idle
# OpenMP threads sleep rather than spin, so torch's idle threads do not slow numpy's and scipy's
# BLAS calls in the same process (the in-process runs of the tests took half as long again).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from cmbench.checkpoints import sha256_file  # noqa: E402
from cmbench.features.inception import InceptionExtractor  # noqa: E402
from cmbench.weights import CLIP_WEIGHTS, DINOV2_WEIGHTS, INCEPTION_WEIGHTS  # noqa: E402
from test_inception import random_official_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """A weights file of the official Inception-v3's layout, with random weights."""
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS.file_name
    torch.save(random_official_state_dict(), path)
    return path


@pytest.fixture
def official_inception(inception_weights, monkeypatch) -> Path:
    """Let suites and profiles use the random weights file as if it were the official one."""
    monkeypatch.setitem(InceptionExtractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(inception_weights))
    monkeypatch.setenv("CMBENCH_INCEPTION_WEIGHTS", str(inception_weights))
    return inception_weights


def stand_in_as_official(monkeypatch, extractor: type, path: Path, config, env_var: str) -> Path:
    """Let ``extractor`` (built by suites and profiles) take the small random file at ``path`` as its
    official weights: its digest and network layout become the defaults, its variable names the file."""
    monkeypatch.setitem(extractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(path))
    monkeypatch.setitem(extractor.__init__.__kwdefaults__, "config", config)
    monkeypatch.setenv(env_var, str(path))
    return path


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory) -> Path:
    """A DINOv2 weights file in the official key layout, small (``SMALL``) and random."""
    from test_dinov2 import SMALL, random_state

    path = tmp_path_factory.mktemp("dinov2") / DINOV2_WEIGHTS.file_name
    torch.save(random_state(SMALL, seed=3), path)
    return path


@pytest.fixture
def official_dinov2(dinov2_weights, monkeypatch) -> Path:
    """Let suites and profiles use the small random DINOv2 file as if it were the official ViT-L/14."""
    from cmbench.features.dinov2 import DINOv2Extractor
    from test_dinov2 import SMALL

    return stand_in_as_official(monkeypatch, DINOv2Extractor, dinov2_weights, SMALL, DINOV2_WEIGHTS.env_var)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    """A CLIP vision file in Hugging Face's layout, small (``SMALL``) with random weights."""
    from cmbench.nets.clip_vision import CLIPVisionTower
    from test_clip_cmmd import SMALL

    tower = CLIPVisionTower(SMALL)
    generator = torch.Generator().manual_seed(4)
    state = {key: value + 0.2 * torch.randn(value.shape, generator=generator) for key, value in tower.state_dict().items()}
    path = tmp_path_factory.mktemp("clip") / CLIP_WEIGHTS.file_name
    torch.save(state, path)
    return path


@pytest.fixture
def official_clip(clip_weights, monkeypatch) -> Path:
    """Let suites use the small random CLIP file as if it were the official ViT-L/14@336."""
    from cmbench.features.clip import CLIPExtractor
    from test_clip_cmmd import SMALL

    return stand_in_as_official(monkeypatch, CLIPExtractor, clip_weights, SMALL, CLIP_WEIGHTS.env_var)


@pytest.fixture
def exact_low_rank_sqrtm(monkeypatch) -> None:
    """FID's sqrtm (17 s per 2048² matrix on one core) as the exact low-rank square root, for runs of a
    few samples, whose covariances have low rank (test_readme.low_rank_trace_sqrt)."""
    from cmbench.metrics import fid
    from test_readme import low_rank_trace_sqrt

    monkeypatch.setattr(fid, "_trace_sqrt_sqrtm", low_rank_trace_sqrt)
