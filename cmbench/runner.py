"""Running a suite: for each row, generate images seed by seed, extract features once, score.

The unit of work is a list of seeds (:func:`generate_features`), so a later multi-process mode
gives each rank its own seed slice and gathers the features; nothing else changes.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .atomic import atomic_write_bytes, atomic_write_text
from .checkpoints import sha256_file
from .features import FeatureExtractor, build_extractor
from .images import to_uint8
from .metrics import METRICS, ReferenceStats, compute_metrics, layers_for
from .metrics.reference import load_reference
from .models import ModelAdapter, build_model
from .nll import TOY_PREFIX, evaluate_nll, load_images
from .report import image_grid_png, render_report
from .results import ResultStore
from .samplers import Sampler, get_sampler
from .seeds import SampleNoise, seed_range
from .suite import Row, Suite
from .zoo import resolve_checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def default_output_dir(suite: Suite) -> Path:
    return Path(suite.output_dir) if suite.output_dir else Path("reports") / suite.name


def generate_features(
    model: ModelAdapter,
    sampler: Sampler,
    sigmas: torch.Tensor,
    options: dict[str, Any],
    seeds: list[int],
    *,
    batch_size: int,
    device: torch.device,
    quantisation: str,
    extractor: FeatureExtractor,
    layers: tuple[str, ...],
    keep_images: int = 0,
    progress: bool = False,
    desc: str = "",
) -> tuple[dict[str, np.ndarray], torch.Tensor, int, float]:
    """Sample the images of ``seeds`` and extract ``layers`` from them in one pass.

    Returns (features by layer, the first ``keep_images`` uint8 images, NFE per image,
    seconds spent in the sampler).
    """
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    kept: list[torch.Tensor] = []
    nfe, seconds = None, 0.0
    batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        noise = SampleNoise(batch, device)
        latents = noise.randn(model.image_shape)
        labels = noise.randint(model.label_dim) if model.label_dim else None
        start = time.perf_counter()
        with torch.no_grad():
            images, batch_nfe = sampler.run(model, latents, sigmas, noise=noise, labels=labels, options=options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        if nfe is not None and batch_nfe != nfe:
            raise RuntimeError(f"{desc}: the sampler made {batch_nfe} evaluations on one batch and {nfe} on another")
        nfe = batch_nfe
        uint8 = to_uint8(images, quantisation)
        if sum(len(k) for k in kept) < keep_images:
            kept.append(uint8.cpu())
        if layers:
            with torch.no_grad():
                feats = extractor.extract(uint8, layers)
            for layer in layers:
                chunks[layer].append(feats[layer].float().cpu())
    features = {layer: torch.cat(parts).numpy() for layer, parts in chunks.items()}
    grid = torch.cat(kept)[:keep_images] if kept else torch.zeros(0, dtype=torch.uint8)
    return features, grid, int(nfe), seconds


def analytic_reference(suite: Suite, model, extractor: FeatureExtractor, layers: tuple[str, ...]) -> ReferenceStats:
    """Reference statistics from exact draws of an analytic mixture (seed ``seed + i`` per image)."""
    spec = suite.reference
    mixture = model.mixture
    pool: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    seeds = seed_range(spec["seed"], spec["num_images"])
    for i in range(0, len(seeds), suite.batch_size):
        gens = [torch.Generator().manual_seed(s % (1 << 32)) for s in seeds[i : i + suite.batch_size]]
        comps = torch.stack([torch.multinomial(mixture.weights.cpu(), 1, generator=g)[0] for g in gens])
        normals = torch.stack([torch.randn(mixture.dim, generator=g, dtype=torch.float64) for g in gens])
        x = mixture.sample(comps.to(mixture.means.device), normals.to(mixture.means.device))
        images = to_uint8(x.reshape(-1, *model.image_shape), suite.quantisation)
        feats = extractor.extract(images, layers)
        for layer in layers:
            pool[layer].append(feats[layer].float().cpu())
    features = {layer: torch.cat(parts).numpy() for layer, parts in pool.items()}
    meta = {
        **extractor.identity, "num_images": spec["num_images"], "resolution": list(model.image_shape[1:]),
        "source": f"exact draws of analytic model {spec['model']!r} (seeds {seeds[0]}..{seeds[-1]})",
        "quantisation": suite.quantisation,
    }
    keep = {"pool": min(spec["num_images"], 10000)} if "pool" in features else None
    return ReferenceStats.from_features(features, meta, keep_features=keep)


def load_suite_reference(suite: Suite, models: dict, extractor: FeatureExtractor):
    """The reference statistics a suite names, checked against the run's extractor, and a description."""
    if not suite.reference:
        return None, {}
    if "path" in suite.reference:
        path = suite.resolve(suite.reference["path"])
        stats = load_reference(path)
        stats.check_compatible(extractor.identity, str(path))
        _check_reference_covers(stats, suite, path)
        return stats, {"path": str(path), "sha256": sha256_file(path), **stats.meta}
    stats = analytic_reference(suite, models[suite.reference["model"]], extractor, _reference_layers(suite))
    return stats, {**suite.reference, **stats.meta}


def _reference_layers(suite: Suite) -> tuple[str, ...]:
    """The feature layers whose real-data statistics the suite's metrics compare against."""
    return tuple(sorted({layer for m in suite.metrics if METRICS[m].needs_reference for layer in METRICS[m].layers}))


def _check_reference_covers(stats: ReferenceStats, suite: Suite, path: Path) -> None:
    """Fail before sampling when a reference file cannot serve the suite's metrics."""
    missing = sorted(set(_reference_layers(suite)) - set(stats.mu))
    if missing:
        raise ValueError(f"reference statistics {path} have no layer(s) {', '.join(missing)}; they have {', '.join(sorted(stats.mu))}")
    if "precision_recall" in suite.metrics:
        real = stats.features.get("pool")
        if real is None or len(real) <= suite.metric_options.pr_k:
            count = 0 if real is None else len(real)
            raise ValueError(f"reference statistics {path} keep {count} real feature rows; precision/recall "
                             f"with k = {suite.metric_options.pr_k} needs more (recompute them keeping features)")


def run_suite(
    suite: Suite,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    recompute_changed: bool = False,
    progress: bool = True,
) -> Path:
    """Run every unfinished row of ``suite`` into ``out_dir``; returns the report's path."""
    out = Path(out_dir) if out_dir else default_output_dir(suite)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device or suite.device)
    store = ResultStore(out)
    models: dict[str, ModelAdapter] = {}

    def model_for(name: str) -> ModelAdapter:
        if name not in models:
            spec = suite.models[name]
            models[name] = build_model(spec.family, spec.options, suite.base_dir, str(dev))
        return models[name]

    for name in {suite.features.get("model"), suite.reference.get("model")} - {None}:
        model_for(name)
    extractor = build_extractor(suite.features, models, base_dir=suite.base_dir).to(dev)
    layers = layers_for(suite.metrics)
    extractor.check_layers(layers)
    file_hashes = {**suite_file_hashes(suite), "extractor": extractor.weights_sha256}
    pending = _pending_rows(suite, store, file_hashes, recompute_changed)
    reference, reference_info = (None, {}) if not pending else load_suite_reference(suite, models, extractor)
    if pending:
        _write_run_metadata(out, suite, dev, extractor, reference_info)

    likelihood_images = load_likelihood_images(suite) if pending and suite.likelihood else None
    likelihoods: dict[str, dict] = {}
    for row in pending:
        model = model_for(row.model)
        result = evaluate_row(suite, row, model, extractor, layers, reference, dev, out, progress)
        if likelihood_images is not None:
            if row.model not in likelihoods:
                likelihoods[row.model] = suite_likelihood(suite, model, likelihood_images, dev, progress)
            result.update(likelihoods[row.model])
        result["fingerprint"] = suite.row_fingerprint(row, file_hashes)
        store.put(result)
        if progress:
            shown = {k: round(v, 4) for k, v in result.items() if k in _metric_columns(suite) and v is not None}
            tqdm.write(f"{row.row_id}: nfe={result['nfe']} {shown}")
    if store.rows:
        store.write_csv()
    return render_report(out)


def evaluate_row(suite, row: Row, model, extractor, layers, reference, device, out: Path, progress: bool) -> dict[str, Any]:
    sampler = get_sampler(row.sampler)
    sigmas = sampler.schedule(model.noise_range, row.nfe, row.options)
    seeds = seed_range(suite.seed_start, suite.num_samples)
    features, grid, nfe, seconds = generate_features(
        model, sampler, sigmas, row.options, seeds, batch_size=suite.batch_size, device=device,
        quantisation=suite.quantisation, extractor=extractor, layers=layers,
        keep_images=suite.grid_images, progress=progress, desc=row.row_id,
    )
    metrics = compute_metrics(suite.metrics, features, reference, suite.metric_options)
    grid_path = None
    if len(grid):
        grid_path = f"grids/{row.row_id}.png"
        scale = max(1, 32 // model.image_shape[-1])
        atomic_write_bytes(out / grid_path, image_grid_png(grid, scale=scale))
    return {
        "suite": suite.name, "row_id": row.row_id, "model": row.model, "family": model.family,
        "sampler": row.sampler, "sampler_label": row.label if row.label != row.sampler else _label(row),
        "nfe": nfe, "num_samples": suite.num_samples,
        **dict.fromkeys(sorted(_metric_columns(suite))), **metrics,
        "seconds_per_sample": seconds / suite.num_samples, "seed_start": suite.seed_start,
        "checkpoint_sha256": model.checkpoint_sha256, "cmbench_version": __version__,
        "schedule": [float(s) for s in sigmas], "options": row.options, "grid": grid_path,
        **extractor.identity, "quantisation": suite.quantisation, "device": str(device),
        "finished_at": _now(),
    }


def _label(row: Row) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in sorted(row.options.items()) if not isinstance(v, (dict, list))]
    return f"{row.sampler} " + " ".join(parts) if parts else row.sampler


def _metric_columns(suite: Suite) -> set[str]:
    return {col for m in suite.metrics for col in METRICS[m].columns}


def load_likelihood_images(suite: Suite) -> torch.Tensor:
    """The uint8 images of the suite's ``likelihood.data`` (a toy split or an .npz), up to ``limit``."""
    data = suite.likelihood["data"]
    images = load_images(data if data.startswith(TOY_PREFIX) else str(suite.resolve(data)), continuous=False)
    return images[: suite.likelihood.get("limit", len(images))]


def suite_likelihood(suite: Suite, model: ModelAdapter, images: torch.Tensor, device: torch.device, progress: bool) -> dict:
    """bits/dim of ``images`` under ``model`` (None for models without score access): ``bpd``,
    its standard error and the solver's mean NFE, once per model."""
    if not model.has("denoise"):
        return {"bpd": None, "bpd_stderr": None, "bpd_nfe": None}
    spec = suite.likelihood
    result = evaluate_nll(
        model, images, continuous=False, passes=spec["passes"], divergence=spec["divergence"],
        batch_size=spec["batch_size"], rtol=spec["rtol"], atol=spec["atol"], seed=spec["seed"],
        device=device, progress=progress,
    )
    return {"bpd": result["bpd"], "bpd_stderr": result["stderr"], "bpd_nfe": result["nfe_mean"]}


def suite_file_hashes(suite: Suite) -> dict[str, str]:
    """sha256 of every checkpoint (by model name) and of the reference and likelihood data files."""
    hashes = {name: sha256_file(resolve_checkpoint(spec.options["checkpoint"], suite.base_dir)[0])
              for name, spec in suite.models.items() if "checkpoint" in spec.options}
    if "path" in suite.reference:
        hashes["reference"] = sha256_file(suite.resolve(suite.reference["path"]))
    data = suite.likelihood.get("data", TOY_PREFIX)
    if not data.startswith(TOY_PREFIX):
        hashes["likelihood"] = sha256_file(suite.resolve(data))
    return hashes


def _pending_rows(suite: Suite, store: ResultStore, file_hashes: dict[str, str], recompute_changed: bool) -> list[Row]:
    pending = []
    for row in suite.rows:
        done = store.get(row.row_id)
        if done is None:
            pending.append(row)
        elif done.get("fingerprint") != suite.row_fingerprint(row, file_hashes):
            if not recompute_changed:
                raise RuntimeError(
                    f"{store.run_dir / 'results.jsonl'}: row {row.row_id} was computed with a different "
                    "configuration than the suite now gives; use another --out folder, or pass "
                    "--recompute-changed to replace such rows"
                )
            pending.append(row)
    return pending


def _write_run_metadata(out: Path, suite: Suite, device: torch.device, extractor, reference_info: dict) -> None:
    meta = {
        "suite": suite.name, "suite_file": suite.source, "description": suite.description,
        "cmbench_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "seed_start": suite.seed_start, "num_samples": suite.num_samples, "batch_size": suite.batch_size,
        "quantisation": suite.quantisation, "extractor": extractor.identity, "reference": reference_info,
        "metrics": list(suite.metrics), "metric_options": asdict(suite.metric_options), "started_at": _now(),
    }
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2, default=str) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
