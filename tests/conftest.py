"""Fixtures several test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cmbench.checkpoints import sha256_file
from cmbench.features.inception import InceptionExtractor
from cmbench.weights import INCEPTION_WEIGHTS
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
