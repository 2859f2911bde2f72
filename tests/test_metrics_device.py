"""The k-NN metrics and KID run on the run's device; CPU and CUDA give the same numbers."""

import numpy as np
import pytest
import torch

from cmbench.metrics import MetricOptions, ReferenceStats, compute_metrics

NAMES = ["precision_recall", "kid", "density_coverage"]


def _setup():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(400, 16)), rng.normal(0.2, 1.0, size=(300, 16))
    meta = {"extractor": "x", "extractor_sha256": "0", "num_images": 400, "resolution": [4, 4], "source": "test"}
    reference = ReferenceStats.from_features({"pool": real}, meta, keep_features={"pool": 400})
    return {"pool": fake.astype(np.float32)}, reference, MetricOptions(kid_subsets=5, kid_subset_size=200)


def test_an_explicit_cpu_device_changes_nothing():
    features, reference, options = _setup()
    assert compute_metrics(NAMES, features, reference, options, device="cpu") == compute_metrics(NAMES, features, reference, options)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is present")
def test_cuda_matches_cpu():
    features, reference, options = _setup()
    cpu = compute_metrics(NAMES, features, reference, options)
    gpu = compute_metrics(NAMES, features, reference, options, device="cuda")
    assert gpu.keys() == cpu.keys()
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-6, abs=1e-9), key


def test_capped_kid_uses_subsets_of_the_smaller_set_size_as_clean_fid():
    from cmbench.metrics.kid import kernel_inception_distance

    features, reference, _ = _setup()
    capped = MetricOptions(kid_subsets=5, kid_subset_size=1000, kid_capped=True)
    got = compute_metrics(["kid"], features, reference, capped)
    mean, std = kernel_inception_distance(reference.features["pool"], features["pool"], subsets=5, subset_size=300)
    assert (got["kid"], got["kid_std"]) == (mean, std)
    with pytest.raises(ValueError, match="kid_subset_size"):
        compute_metrics(["kid"], features, reference, MetricOptions(kid_subsets=5, kid_subset_size=1000))
