"""Evaluator profiles: each paper's evaluation protocol as one named set of conventions.

Published FIDs for the same checkpoint disagree because evaluators differ in quantisation,
network, matrix square root, IS splits and reference files (facts.md §4). A profile fixes all of
them, so a suite says ``profile: adm`` and gets the ADM evaluator's numbers:

- ``extractor``: the feature network (``inception-tf``: TF's 2015 Inception-v3 with TF1's
  bilinear resize, as every profile here except ``toy`` uses);
- ``metrics`` and ``metric_options``: which numbers, and the conventions that change them;
- ``quantisation``: how the samples become uint8 in the paper's sampling code;
- ``reference_formats``: which reference-statistics files the protocol's numbers are against.

Conventions a profile cannot reproduce yet are listed in its ``differences``; docs/metrics.md shows
the table (``cmbench profiles`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .metrics import MetricOptions
from .metrics.reference_formats import ADM, CLEAN_FID, CMBENCH, EDM, EDM2


@dataclass(frozen=True)
class Profile:
    name: str
    protocol: str
    extractor: str
    metrics: tuple[str, ...]
    metric_options: MetricOptions
    quantisation: str
    reference_formats: tuple[str, ...]
    differences: str = ""


_PROFILES: tuple[Profile, ...] = (
    Profile(
        name="adm",
        protocol="openai guided-diffusion's evaluator (the ADM, CD and CT papers' ImageNet / LSUN tables)",
        extractor="inception-tf",
        metrics=("fid", "sfid", "inception_score", "precision_recall"),
        metric_options=MetricOptions(fid_sqrt="sqrtm", is_split_size=5000, pr_k=3, pr_batch_size=10000),
        quantisation="truncate",
        reference_formats=(ADM,),
        differences="precision/recall distances in float32 (ADM: float16, float32 only where float16 overflows)",
    ),
    Profile(
        name="edm",
        protocol="EDM's fid.py (FID of 50k images against EDM's reference statistics)",
        extractor="inception-tf",
        metrics=("fid",),
        metric_options=MetricOptions(fid_sqrt="sqrtm"),
        quantisation="round",
        reference_formats=(EDM, CMBENCH),
    ),
    Profile(
        name="edm2",
        protocol=("EDM2's calculate_metrics.py (FID with NVIDIA's Inception port and FD_DINOv2 with DINOv2 ViT-L/14, "
                  "images resized to 224 by torch's bicubic + antialias; Fréchet distances by scipy sqrtm) against "
                  "EDM2's reference statistics"),
        extractor="inception-tf",
        metrics=("fid", "fd_dinov2"),
        metric_options=MetricOptions(fid_sqrt="sqrtm"),
        quantisation="round",
        reference_formats=(EDM2, CMBENCH),
        differences=("EDM2's latent (SD-VAE) models decode with truncation (clamp(0, 1)·255 → uint8; cmbench rounds, "
                     "as EDM2's pixel models: x·127.5 + 128 → uint8); calc scores a random subset of a larger image "
                     "folder (cmbench: the row's seeds); sqrtm keeps the real part without pytorch-fid's 1e-6 retry "
                     "and imaginary-part check (cmbench fails on an imaginary diagonal beyond 1e-3)"),
    ),
    Profile(
        name="clean-fid",
        protocol="clean-fid in mode legacy_tensorflow (the CM paper's CIFAR-10 FID)",
        extractor="inception-tf",
        metrics=("fid", "kid"),
        metric_options=MetricOptions(fid_sqrt="sqrtm", kid_capped=True),
        quantisation="truncate",
        reference_formats=(CLEAN_FID, CMBENCH),
        differences="KID over torch-fidelity's seeded subsets (clean-fid draws its own from the global RNG)",
    ),
    Profile(
        name="ctm-cifar10",
        protocol=("CTM's CIFAR-10 numbers (Kim-Dongjun/ctm-cifar10): samples quantised by its image_sample.py, FID by its "
                  "fid_npzs.py with EDM's detector against EDM's cifar10-32x32.npz"),
        extractor="inception-tf",
        metrics=("fid",),
        metric_options=MetricOptions(fid_sqrt="sqrtm"),
        quantisation="truncate",
        reference_formats=(EDM, CMBENCH),
    ),
    Profile(
        name="dmd2",
        protocol=("DMD2's ImageNet-64 numbers (tianweiy/DMD2 main/edm/test_folder_edm.py): truncated samples, FID with "
                  "EDM's detector against EDM's imagenet-64x64.npz"),
        extractor="inception-tf",
        metrics=("fid",),
        metric_options=MetricOptions(fid_sqrt="sqrtm"),
        quantisation="truncate",
        reference_formats=(EDM, CMBENCH),
        differences=("sample i's class is i mod 1000 (cmbench: drawn from the sample's seed); the covariance sum "
                     "starts at ones (cmbench: zeros, a change of 1/(N − 1) in every entry)"),
    ),
    Profile(
        name="cm-cifar10",
        protocol=("the CM paper's CIFAR-10 table (openai/consistency_models_cifar10 jcm/metrics.py): FID by clean-fid "
                  "legacy_tensorflow against its CIFAR-10 train statistics, IS by torch-fidelity's calculate_metrics"),
        extractor="inception-tf",
        metrics=("fid", "inception_score"),
        metric_options=MetricOptions(fid_sqrt="sqrtm", is_splits=10, is_shuffle_seed=2020),
        quantisation="truncate",
        reference_formats=(CLEAN_FID, CMBENCH),
    ),
    Profile(
        name="torch-fidelity",
        protocol="torch-fidelity's defaults (FID, IS, KID)",
        extractor="inception-tf",
        metrics=("fid", "inception_score", "kid"),
        metric_options=MetricOptions(fid_sqrt="eigh", is_splits=10, is_shuffle_seed=2020,
                                     kid_subsets=100, kid_subset_size=1000),
        quantisation="round",
        reference_formats=(CMBENCH,),
    ),
    Profile(
        name="toy",
        protocol="the toy world: the toy classifier's features of the 8×8 digits",
        extractor="toy-classifier",
        metrics=("fid", "inception_score", "precision_recall"),
        metric_options=MetricOptions(is_splits=10, pr_k=3),
        quantisation="round",
        reference_formats=(CMBENCH,),
    ),
)



def _with_clean_mode(profiles: tuple[Profile, ...]):
    """clean-fid's clean mode is its legacy_tensorflow profile with the resize outside the network."""
    for p in profiles:
        yield p
        if p.name == "clean-fid":
            yield replace(p, name="clean-fid-clean", extractor="inception-tf+clean-resize",
                          protocol="clean-fid in mode clean (PIL bicubic resize outside the network, no requantisation)")


PROFILES: dict[str, Profile] = {p.name: p for p in _with_clean_mode(_PROFILES)}

METRIC_NETWORK_TEXT = {
    "fd_dinov2": ("FD_DINOv2 on DINOv2 ViT-L/14's CLS output (dinov2-vitl14: uint8 → float, bicubic + antialias resize "
                  "to 224, /255, ImageNet mean/std; features.dinov2: {extractor: dinov2-vitl14+pil-resize} for "
                  "dgm-eval's PIL bicubic)"),
    "cmmd": ("CMMD on CLIP ViT-L/14@336's normalised image embeddings (clip-vitl14-336), MMD² with a Gaussian kernel "
             "of σ = 10, ×1000, against every reference row"),
}
"""How the metrics that name their own network compute their features."""

PROFILE_KEYS = ("metric_options", "quantisation")
"""Suite keys a profile sets; a suite with a profile leaves them out. ``metrics`` there adds
metrics to the profile's own (e.g. ``kid``, ``density_coverage``), and ``features`` may add a
weights path or checkpoint for the profile's extractor."""


def with_extra_metrics(profile: Profile, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The profile's metrics, then any others a suite asks for."""
    return profile.metrics + tuple(m for m in extra if m not in profile.metrics)


def describe_profiles() -> str:
    """A plain-text table of every profile's conventions."""
    lines = []
    for p in PROFILES.values():
        o = p.metric_options
        is_split = f"splits of {o.is_split_size}" if o.is_split_size else f"{o.is_splits} splits"
        if o.is_shuffle_seed is not None:
            is_split += f" after RandomState({o.is_shuffle_seed})"
        lines += [
            f"{p.name}: {p.protocol}",
            f"  extractor {p.extractor}; quantisation {p.quantisation}; metrics {', '.join(p.metrics)}",
            f"  FID square root {o.fid_sqrt}; IS {is_split}; precision/recall k = {o.pr_k}; "
            f"KID {o.kid_subsets} × {o.kid_subset_size}{' (capped at the set sizes)' if o.kid_capped else ''}; reference formats {', '.join(p.reference_formats)}",
        ]
        lines += [f"  {METRIC_NETWORK_TEXT[m]}" for m in p.metrics if m in METRIC_NETWORK_TEXT]
        if p.differences:
            lines.append(f"  not reproduced: {p.differences}")
    return "\n".join(lines)
