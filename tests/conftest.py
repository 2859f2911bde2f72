"""Fixtures several test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmbench.checkpoints import sha256_file
from cmbench.features.inception import InceptionExtractor
from cmbench.weights import DINOV2_WEIGHTS, INCEPTION_WEIGHTS
from test_inception import random_official_state_dict


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

    monkeypatch.setitem(DINOv2Extractor.__init__.__kwdefaults__, "expected_sha256", sha256_file(dinov2_weights))
    monkeypatch.setitem(DINOv2Extractor.__init__.__kwdefaults__, "config", SMALL)
    monkeypatch.setenv(DINOV2_WEIGHTS.env_var, str(dinov2_weights))
    return dinov2_weights
