"""Running suites end to end: result files, honest numbers, determinism, resume, changed
configurations, reference files and network checkpoints."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import cmbench
import cmbench.atomic
import cmbench.runner as runner
import cmbench.rows as rows_module
from cmbench.checkpoints import save_native
from cmbench.features import build_extractor
from cmbench.features.analytic import MixturePosteriorExtractor, PixelExtractor
from cmbench.images import to_uint8
from cmbench.metrics import inception_score as is_module
from cmbench.metrics import precision_recall as pr_module
from cmbench.metrics.fid import feature_statistics, frechet_distance
from cmbench.metrics.reference import save_reference
from cmbench.models import build_model
from cmbench.nets import build_network
from cmbench.results import COLUMNS
from cmbench.references import analytic_reference
from cmbench.runner import run_suite
from cmbench.samplers import get_sampler
from cmbench.seeds import SampleNoise, seed_range
from cmbench.suite import load_suite

REQUIRED_COLUMNS = (
    "suite", "model", "family", "sampler", "nfe", "num_samples", "fid", "is_mean", "is_std",
    "precision", "recall", "seconds_per_sample", "seed_start", "checkpoint_sha256", "cmbench_version",
)
METRIC_COLUMNS = ("fid", "is_mean", "is_std", "precision", "recall")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gmm_model(shape=(1, 4, 4), count=3) -> dict:
    return {
        "family": "gmm",
        "image_shape": list(shape),
        "random": {"count": count, "seed": 0, "mean_scale": 0.7, "std": 0.15},
        "ode_steps": 16,
    }


def tiny_raw(runs=None, **changes) -> dict:
    raw = {
        "name": "tiny",
        "num_samples": 64,
        "seed_start": 5,
        "batch_size": 32,
        "grid_images": 16,
        "features": {"extractor": "gmm-posterior", "model": "mix"},
        "metrics": ["fid", "inception_score", "precision_recall"],
        "metric_options": {"is_splits": 2, "pr_k": 3},
        "reference": {"model": "mix", "num_images": 200, "seed": 1000},
        "models": {"mix": gmm_model()},
        "runs": runs if runs is not None else [
            {"model": "mix", "sampler": "heun", "nfe": [1, 3]},
            {"model": "mix", "sampler": "cm_multistep", "nfe": [1, 2], "options": {"clip_denoised": False}},
            {"model": "mix", "sampler": "ctm_gamma", "nfe": [1]},
            {"model": "mix", "sampler": "ddim", "nfe": [1, 2]},
        ],
    }
    raw.update(changes)
    return raw


MAIN_IDS = [
    "mix.heun.nfe1", "mix.heun.nfe3", "mix.cm_multistep.nfe1", "mix.cm_multistep.nfe2",
    "mix.ctm_gamma.nfe1", "mix.ddim.nfe1", "mix.ddim.nfe2",
]


def write_suite(folder: Path, raw: dict, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_rows(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["row_id"]: r for r in rows}


def metrics_of(rows: list[dict]) -> dict[str, tuple]:
    return {r["row_id"]: tuple(r.get(c) for c in METRIC_COLUMNS) for r in rows}


class CountingEvaluate:
    """Wraps runner.evaluate_rows: records the rows it computes, optionally 'killed' at row n."""

    def __init__(self, real, kill_at: int | None = None):
        self.real, self.kill_at, self.calls = real, kill_at, []

    def __call__(self, suite, rows, *args, **kwargs):
        self.calls.extend(row.row_id for row in rows)
        if self.kill_at is not None and len(self.calls) >= self.kill_at:
            raise KeyboardInterrupt
        return self.real(suite, rows, *args, **kwargs)


def tmp_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*.tmp"))


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """The tiny suite run once; several tests read its output."""
    root = tmp_path_factory.mktemp("main")
    suite_path = write_suite(root / "suite", tiny_raw())
    suite = load_suite(suite_path)
    out = root / "out"
    report = run_suite(suite, out, device="cpu", progress=False)
    return suite, out, report


def test_results_jsonl_has_one_row_per_model_sampler_nfe(main_run):
    suite, out, _ = main_run
    rows = read_rows(out)
    assert [r["row_id"] for r in rows] == MAIN_IDS
    for row in rows:
        for column in REQUIRED_COLUMNS:
            assert column in row, f"{row['row_id']} lacks {column}"
        model, label, nfe = row["row_id"].split(".")
        assert row["suite"] == "tiny"
        assert row["model"] == model == "mix"
        assert row["family"] == "gmm"
        assert row["sampler"] == label
        assert row["nfe"] == int(nfe.removeprefix("nfe"))
        assert row["num_samples"] == 64
        assert row["seed_start"] == 5
        assert row["checkpoint_sha256"] is None  # the analytic model has no weights file
        assert row["cmbench_version"] == cmbench.__version__
        for column in METRIC_COLUMNS:
            assert isinstance(row[column], float) and math.isfinite(row[column]), (row["row_id"], column)
        assert row["fid"] >= -1e-9
        assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0
        # IS = exp(mutual information) lies in [1, number of components] for a 3-component posterior.
        assert 1.0 - 1e-9 <= row["is_mean"] <= 3.0 + 1e-9
        assert row["is_std"] >= 0.0
        assert row["seconds_per_sample"] > 0.0
        assert row["grid"] == f"grids/{row['row_id']}.png"
        assert row["extractor"] == "gmm-posterior"
        spec = next(r for r in suite.rows if r.row_id == row["row_id"])
        assert row["fingerprint"] == suite.row_fingerprint(spec, {"extractor": row["extractor_sha256"]})
    rows = by_id(rows)
    # Heun NFE 3 is two steps: the schedule is σ_max, σ_min, 0.
    assert rows["mix.heun.nfe3"]["schedule"] == pytest.approx([80.0, 0.002, 0.0])
    assert rows["mix.cm_multistep.nfe2"]["options"] == {"clip_denoised": False}


def test_certain_relations_between_rows(main_run):
    _, out, _ = main_run
    rows = by_id(read_rows(out))
    # One CM step and one γ-sampling step are both G(σ_max·z, σ_max, σ_min) on the same latents.
    assert metrics_of([rows["mix.cm_multistep.nfe1"]]).popitem()[1] == metrics_of([rows["mix.ctm_gamma.nfe1"]]).popitem()[1]
    # One DDIM step from σ ≈ e^10 outputs the posterior mean ≈ the mixture mean for every seed:
    # every image is the same, so the class posterior is the same and IS is exactly 1.
    assert rows["mix.ddim.nfe1"]["is_mean"] == pytest.approx(1.0, abs=1e-9)
    assert rows["mix.ddim.nfe1"]["is_std"] == pytest.approx(0.0, abs=1e-9)
    assert rows["mix.ddim.nfe1"]["recall"] == 0.0


def test_results_csv_matches_jsonl(main_run):
    _, out, _ = main_run
    rows = read_rows(out)
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    # The flat columns lead, in their documented order.
    assert frame.columns[0] == "suite"
    positions = [list(frame.columns).index(c) for c in REQUIRED_COLUMNS]
    assert positions == sorted(positions) and positions[-1] < len(COLUMNS)
    assert frame["row_id"].tolist() == [r["row_id"] for r in rows]
    assert len(frame) == len(rows) == len(MAIN_IDS)
    for column in REQUIRED_COLUMNS:
        assert column in frame.columns
    for row, (_, rec) in zip(rows, frame.iterrows()):
        for column in ("suite", "model", "family", "sampler", "cmbench_version"):
            assert rec[column] == row[column]
        for column in ("nfe", "num_samples", "seed_start"):
            assert int(rec[column]) == row[column]
        for column in METRIC_COLUMNS + ("seconds_per_sample",):
            assert rec[column] == row[column], (row["row_id"], column)
        assert pd.isna(rec["checkpoint_sha256"])
        assert json.loads(rec["schedule"]) == row["schedule"]


def test_report_grids_and_run_metadata(main_run):
    suite, out, report = main_run
    assert report == out / "report.html"
    html = report.read_text()
    for row_id in MAIN_IDS:
        assert row_id in html
    uris = html.split("data:image/png;base64,")[1:]
    assert len(uris) >= len(MAIN_IDS)  # a grid per row (and the FID plot)
    first = base64.b64decode(uris[0].split('"')[0])
    assert first.startswith(PNG_MAGIC)
    for row_id in MAIN_IDS:
        data = (out / "grids" / f"{row_id}.png").read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = Image.open(io.BytesIO(data))
        # 16 tiles of 4x4 pixels, upscaled 8x, in a 4x4 grid with 1-pixel separators.
        assert image.size == (4 * (4 * 8 + 1) + 1, 4 * (4 * 8 + 1) + 1)
    meta = json.loads((out / "run.json").read_text())
    assert meta["suite"] == "tiny"
    assert meta["num_samples"] == 64 and meta["batch_size"] == 32 and meta["seed_start"] == 5
    assert meta["extractor"]["extractor"] == "gmm-posterior"
    assert meta["reference"]["num_images"] == 200
    assert meta["reference"]["model"] == "mix"
    assert meta["suite_file"] == suite.source
    assert tmp_files(out) == []


# --- honest numbers ----------------------------------------------------------------------------


def test_metrics_equal_an_independent_recomputation(main_run):
    suite, out, _ = main_run
    rows = by_id(read_rows(out))
    model = build_model("gmm", suite.models["mix"].options, suite.base_dir, "cpu")
    extractor = MixturePosteriorExtractor(model.mixture)
    reference = analytic_reference(suite, model, extractor, ("pool",))
    assert reference.meta["num_images"] == 200
    seeds = seed_range(5, 64)
    assert seeds[0] == 5 and seeds[-1] == 68
    for row in suite.rows:
        sampler = get_sampler(row.sampler)
        sigmas = sampler.schedule(model.noise_range, row.nfe, row.options)
        # One batch of all 64 seeds (the run used batches of 32).
        noise = SampleNoise(seeds)
        latents = noise.randn(model.image_shape)
        with torch.no_grad():
            images, nfe = sampler.run(model, latents, sigmas, noise=noise, labels=None, options=row.options)
        assert nfe == row.nfe
        uint8 = to_uint8(images, "round")
        feats = extractor.extract(uint8, ("pool", "logits"))
        pool = feats["pool"].float().numpy()
        mu, sigma = feature_statistics(pool)
        fid = frechet_distance(mu, sigma, reference.mu["pool"], reference.sigma["pool"])
        stored = rows[row.row_id]
        assert abs(stored["fid"] - fid) <= 1e-9, (row.row_id, stored["fid"], fid)
        is_mean, is_std = is_module.inception_score(feats["logits"].float().numpy(), splits=2)
        assert abs(stored["is_mean"] - is_mean) <= 1e-9
        assert abs(stored["is_std"] - is_std) <= 1e-9
        precision, recall = pr_module.precision_recall(reference.features["pool"], pool, k=3)
        assert (stored["precision"], stored["recall"]) == pytest.approx((precision, recall), abs=1e-12)


# --- determinism -------------------------------------------------------------------------------


def determinism_raw(**changes) -> dict:
    # Rows with per-step noise (CM multistep re-noising, γ-sampling) test the per-sample streams.
    return tiny_raw(
        runs=[
            {"model": "mix", "sampler": "heun", "nfe": [3]},
            {"model": "mix", "sampler": "cm_multistep", "nfe": [2]},
            {"model": "mix", "sampler": "ctm_gamma", "nfe": [2], "options": {"gamma": 0.5}},
            {"model": "mix", "sampler": "ddim", "nfe": [2]},
        ],
        **changes,
    )


def test_same_suite_gives_identical_numbers_in_two_folders_and_any_batch_size(tmp_path):
    path = write_suite(tmp_path / "suite", determinism_raw())
    run_suite(load_suite(path), tmp_path / "a", device="cpu", progress=False)
    run_suite(load_suite(path), tmp_path / "b", device="cpu", progress=False)
    run_suite(load_suite(path, ["batch_size=7"]), tmp_path / "c", device="cpu", progress=False)
    a, b, c = (metrics_of(read_rows(tmp_path / d)) for d in "abc")
    assert len(a) == 4
    assert a == b
    assert a == c
    for row_id in a:  # the stored sample grids are the same images
        grid = f"grids/{row_id}.png"
        assert (tmp_path / "a" / grid).read_bytes() == (tmp_path / "c" / grid).read_bytes()


def test_different_seeds_give_different_numbers(tmp_path):
    """The determinism test above could pass with constant outputs; a new seed_start must move them."""
    path = write_suite(tmp_path / "suite", determinism_raw())
    run_suite(load_suite(path), tmp_path / "a", device="cpu", progress=False)
    run_suite(load_suite(path, ["seed_start=1000"]), tmp_path / "b", device="cpu", progress=False)
    a, b = metrics_of(read_rows(tmp_path / "a")), metrics_of(read_rows(tmp_path / "b"))
    assert all(a[k][0] != b[k][0] for k in a)


# --- resume ------------------------------------------------------------------------------------


def resume_raw(**changes) -> dict:
    changes.setdefault("runs", [
        {"model": "mix", "sampler": "heun", "nfe": [1, 3]},
        {"model": "mix", "sampler": "cm_multistep", "nfe": [1, 2]},
        {"model": "mix", "sampler": "ddim", "nfe": [2]},
    ])
    changes.setdefault("metrics", ["fid", "inception_score"])
    return tiny_raw(**changes)


RESUME_IDS = ["mix.heun.nfe1", "mix.heun.nfe3", "mix.cm_multistep.nfe1", "mix.cm_multistep.nfe2", "mix.ddim.nfe2"]


def test_killed_run_resumes_with_only_the_missing_rows(tmp_path, monkeypatch):
    path = write_suite(tmp_path / "suite", resume_raw())
    full = tmp_path / "full"
    run_suite(load_suite(path), full, device="cpu", progress=False)

    out = tmp_path / "out"
    killer = CountingEvaluate(runner.evaluate_rows, kill_at=3)
    monkeypatch.setattr(runner, "evaluate_rows", killer)
    monkeypatch.setattr(rows_module, "utc_now", lambda: "first-run")
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(path), out, device="cpu", progress=False)
    assert killer.calls == RESUME_IDS[:3]
    first = read_rows(out)  # parses fully: no partial line
    assert [r["row_id"] for r in first] == RESUME_IDS[:2]
    assert pd.read_csv(out / "results.csv")["row_id"].tolist() == RESUME_IDS[:2]
    assert tmp_files(out) == []

    counter = CountingEvaluate(killer.real)
    monkeypatch.setattr(runner, "evaluate_rows", counter)
    monkeypatch.setattr(rows_module, "utc_now", lambda: "second-run")
    run_suite(load_suite(path), out, device="cpu", progress=False)
    assert counter.calls == RESUME_IDS[2:]
    rows = read_rows(out)
    assert [r["row_id"] for r in rows] == RESUME_IDS
    assert rows[:2] == first  # values and finished_at untouched
    assert [r["finished_at"] for r in rows] == ["first-run"] * 2 + ["second-run"] * 3
    assert metrics_of(rows) == metrics_of(read_rows(full))
    assert pd.read_csv(out / "results.csv")["row_id"].tolist() == RESUME_IDS
    assert (out / "report.html").is_file()

    # A third run has nothing to do.
    counter.calls.clear()
    run_suite(load_suite(path), out, device="cpu", progress=False)
    assert counter.calls == []
    assert read_rows(out) == rows


def test_kill_while_writing_results_leaves_no_partial_file(tmp_path, monkeypatch):
    """Interrupt inside the atomic write of results.jsonl for the 3rd row (after the temp file exists)."""
    path = write_suite(tmp_path / "suite", resume_raw())
    out = tmp_path / "out"
    real_replace = cmbench.atomic.os.replace
    seen = {"jsonl": 0, "tmp": []}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "results.jsonl":
            seen["jsonl"] += 1
            if seen["jsonl"] == 3:
                assert Path(src).is_file() and Path(src).name.startswith(".results.jsonl.")
                seen["tmp"].append(Path(src))
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(cmbench.atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(path), out, device="cpu", progress=False)
    monkeypatch.undo()
    assert len(seen["tmp"]) == 1 and not seen["tmp"][0].exists()
    assert tmp_files(out) == []
    assert [r["row_id"] for r in read_rows(out)] == RESUME_IDS[:2]

    counter = CountingEvaluate(runner.evaluate_rows)
    monkeypatch.setattr(runner, "evaluate_rows", counter)
    run_suite(load_suite(path), out, device="cpu", progress=False)
    assert counter.calls == RESUME_IDS[2:]
    assert [r["row_id"] for r in read_rows(out)] == RESUME_IDS


def test_kill_between_jsonl_and_csv_of_last_row_is_repaired_on_rerun(tmp_path, monkeypatch):
    """A kill after the last row reached results.jsonl but before results.csv was rewritten: the
    rerun has nothing to compute but must still bring the CSV up to date."""
    path = write_suite(tmp_path / "suite", resume_raw(runs=[{"model": "mix", "sampler": "ddim", "nfe": [1, 2]}]))
    out = tmp_path / "out"
    real_replace = cmbench.atomic.os.replace
    count = {"csv": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "results.csv":
            count["csv"] += 1
            if count["csv"] == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(cmbench.atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(path), out, device="cpu", progress=False)
    monkeypatch.undo()
    assert len(read_rows(out)) == 2
    assert pd.read_csv(out / "results.csv")["row_id"].tolist() == ["mix.ddim.nfe1"]  # one row behind
    assert tmp_files(out) == []
    counter = CountingEvaluate(runner.evaluate_rows)
    monkeypatch.setattr(runner, "evaluate_rows", counter)
    run_suite(load_suite(path), out, device="cpu", progress=False)
    assert counter.calls == []
    assert pd.read_csv(out / "results.csv")["row_id"].tolist() == ["mix.ddim.nfe1", "mix.ddim.nfe2"]


# --- changed configuration ---------------------------------------------------------------------


def test_changed_suite_is_refused_unless_recompute_changed(tmp_path, monkeypatch):
    runs = [{"model": "mix", "sampler": "heun", "nfe": [1]}, {"model": "mix", "sampler": "ddim", "nfe": [2]}]
    path = write_suite(tmp_path / "suite", resume_raw(runs=runs))
    out = tmp_path / "out"
    run_suite(load_suite(path), out, device="cpu", progress=False)
    before = (out / "results.jsonl").read_bytes()

    counter = CountingEvaluate(runner.evaluate_rows)
    monkeypatch.setattr(runner, "evaluate_rows", counter)
    changed = load_suite(path, ["num_samples=32"])
    with pytest.raises(RuntimeError) as info:
        run_suite(changed, out, device="cpu", progress=False)
    assert "different configuration" in str(info.value)
    assert "--recompute-changed" in str(info.value)
    assert "mix.heun.nfe1" in str(info.value)
    assert counter.calls == []
    assert (out / "results.jsonl").read_bytes() == before

    run_suite(changed, out, device="cpu", recompute_changed=True, progress=False)
    assert counter.calls == ["mix.heun.nfe1", "mix.ddim.nfe2"]
    rows = read_rows(out)
    assert [r["num_samples"] for r in rows] == [32, 32]
    hashes = {"extractor": rows[0]["extractor_sha256"]}
    assert [r["fingerprint"] for r in rows] == [changed.row_fingerprint(r, hashes) for r in changed.rows]


def test_sampler_option_change_is_a_changed_configuration(tmp_path):
    runs = [{"model": "mix", "sampler": "ctm_gamma", "nfe": [2], "options": {"gamma": 0.0}}]
    path = write_suite(tmp_path / "suite", resume_raw(runs=runs))
    out = tmp_path / "out"
    run_suite(load_suite(path), out, device="cpu", progress=False)
    with pytest.raises(RuntimeError, match="different configuration"):
        run_suite(load_suite(path, ["runs.0.options={gamma: 1.0}"]), out, device="cpu", progress=False)


def test_added_rows_and_batch_size_are_not_a_changed_configuration(tmp_path, monkeypatch):
    runs = [{"model": "mix", "sampler": "heun", "nfe": [1]}]
    path = write_suite(tmp_path / "suite", resume_raw(runs=runs))
    out = tmp_path / "out"
    run_suite(load_suite(path), out, device="cpu", progress=False)
    counter = CountingEvaluate(runner.evaluate_rows)
    monkeypatch.setattr(runner, "evaluate_rows", counter)
    run_suite(load_suite(path, ["runs.0.nfe=[1,3]", "batch_size=16"]), out, device="cpu", progress=False)
    assert counter.calls == ["mix.heun.nfe3"]
    assert [r["row_id"] for r in read_rows(out)] == ["mix.heun.nfe1", "mix.heun.nfe3"]


# --- reference statistics from a file ----------------------------------------------------------


def analytic_stats(tmp_path: Path, extractor_name: str):
    """Reference statistics of the tiny mixture, computed with the named extractor."""
    suite = load_suite(write_suite(tmp_path / "analytic", resume_raw()))
    model = build_model("gmm", suite.models["mix"].options, suite.base_dir, "cpu")
    if extractor_name == "pixels":
        extractor = PixelExtractor()
    else:
        extractor = build_extractor(suite.features, {"mix": model})
    return suite, analytic_reference(suite, model, extractor, ("pool",))


def test_reference_from_a_file_relative_to_the_suite(tmp_path, monkeypatch):
    analytic_suite, stats = analytic_stats(tmp_path, "gmm-posterior")
    assert stats.meta["extractor"] == "gmm-posterior"
    suite_dir = tmp_path / "suites"
    save_reference(suite_dir / "refs" / "mix.npz", stats)
    runs = [{"model": "mix", "sampler": "heun", "nfe": [3]}, {"model": "mix", "sampler": "ddim", "nfe": [2]}]
    raw = tiny_raw(runs=runs, metrics=["fid", "precision_recall"], reference={"path": "refs/mix.npz"})
    path = write_suite(suite_dir, raw)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the path resolves against the suite's folder, not the cwd
    run_suite(load_suite(path), tmp_path / "from_file", device="cpu", progress=False)
    from_file = by_id(read_rows(tmp_path / "from_file"))

    raw_analytic = tiny_raw(runs=runs, metrics=["fid", "precision_recall"])
    run_suite(load_suite(write_suite(tmp_path / "a2", raw_analytic)), tmp_path / "analytic_out", device="cpu", progress=False)
    analytic = by_id(read_rows(tmp_path / "analytic_out"))
    for row_id, row in from_file.items():
        assert math.isfinite(row["fid"])
        assert row["fid"] == analytic[row_id]["fid"]
        assert row["precision"] == analytic[row_id]["precision"]
    meta = json.loads((tmp_path / "from_file" / "run.json").read_text())
    npz = suite_dir / "refs" / "mix.npz"
    assert Path(meta["reference"]["path"]) == npz
    assert meta["reference"]["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()


def test_reference_file_from_another_extractor_is_refused(tmp_path):
    _, stats = analytic_stats(tmp_path, "pixels")
    assert stats.meta["extractor"] == "pixels"
    suite_dir = tmp_path / "suites"
    save_reference(suite_dir / "pixels.npz", stats)
    raw = tiny_raw(runs=[{"model": "mix", "sampler": "ddim", "nfe": [2]}], metrics=["fid"], reference={"path": "pixels.npz"})
    path = write_suite(suite_dir, raw)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        run_suite(load_suite(path), out, device="cpu", progress=False)
    msg = str(info.value)
    assert "'pixels'" in msg and "'gmm-posterior'" in msg
    assert str(suite_dir / "pixels.npz") in msg
    assert not (out / "results.jsonl").exists()


def test_missing_reference_file(tmp_path):
    raw = tiny_raw(runs=[{"model": "mix", "sampler": "ddim", "nfe": [2]}], metrics=["fid"], reference={"path": "nope.npz"})
    path = write_suite(tmp_path / "suites", raw)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        run_suite(load_suite(path), tmp_path / "out", device="cpu", progress=False)


# --- network checkpoints -----------------------------------------------------------------------

NET_KWARGS = {"img_resolution": 8, "img_channels": 1, "model_channels": 8, "channel_mult": [1, 2]}


def test_native_checkpoints_run_through_the_runner(tmp_path, monkeypatch):
    suite_dir = tmp_path / "suite"
    hashes = {}
    for i, family in enumerate(("edm", "cd", "ctm", "pd")):
        kwargs = dict(NET_KWARGS, s_embedding=True) if family == "ctm" else dict(NET_KWARGS)
        torch.manual_seed(i)
        net = build_network("small_unet", kwargs)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        path = suite_dir / "ckpt" / f"{family}.pt"
        hashes[family] = save_native(
            path, net, arch="small_unet", arch_kwargs=kwargs, family=family,
            model_options={"image_shape": [1, 8, 8]},
        )
        assert hashes[family] == hashlib.sha256(path.read_bytes()).hexdigest()
    raw = {
        "name": "nets",
        "num_samples": 64,
        "batch_size": 32,
        "grid_images": 8,
        "features": {"extractor": "pixels"},
        "metrics": ["fid"],
        "reference": {"model": "ref", "num_images": 200},
        "models": {
            "ref": gmm_model(shape=(1, 8, 8), count=2),
            "edm": {"family": "edm", "checkpoint": "ckpt/edm.pt"},
            "cd": {"family": "cd", "checkpoint": "ckpt/cd.pt"},
            "ctm": {"family": "ctm", "checkpoint": "ckpt/ctm.pt"},
            "student": {"family": "pd", "checkpoint": "ckpt/pd.pt", "role": "student"},
            "teacher": {"family": "pd", "checkpoint": "ckpt/pd.pt", "role": "teacher"},
        },
        "runs": [
            {"model": "edm", "sampler": "heun", "nfe": [1, 3]},
            {"model": "cd", "sampler": "cm_multistep", "nfe": [1, 2]},
            {"model": "ctm", "sampler": "ctm_gamma", "nfe": [1, 2], "options": {"gamma": 0.0}},
            {"model": "student", "sampler": "ddim", "nfe": [1, 2]},
            {"model": "teacher", "sampler": "heun", "nfe": [1]},
        ],
    }
    path = write_suite(suite_dir, raw)
    monkeypatch.chdir(tmp_path)  # checkpoint paths resolve against the suite's folder
    out = tmp_path / "out"
    run_suite(load_suite(path), out, device="cpu", progress=False)
    rows = read_rows(out)
    expected = [
        ("edm.heun.nfe1", "edm", "edm", 1), ("edm.heun.nfe3", "edm", "edm", 3),
        ("cd.cm_multistep.nfe1", "cd", "cd", 1), ("cd.cm_multistep.nfe2", "cd", "cd", 2),
        ("ctm.ctm_gamma.nfe1", "ctm", "ctm", 1), ("ctm.ctm_gamma.nfe2", "ctm", "ctm", 2),
        ("student.ddim.nfe1", "pd", "pd", 1), ("student.ddim.nfe2", "pd", "pd", 2),
        ("teacher.heun.nfe1", "pd", "pd", 1),
    ]
    assert [r["row_id"] for r in rows] == [e[0] for e in expected]
    for row, (row_id, family, ckpt, nfe) in zip(rows, expected):
        assert row["family"] == family
        assert row["nfe"] == nfe
        assert row["checkpoint_sha256"] == hashes[ckpt]
        assert row["extractor"] == "pixels"
        assert isinstance(row["fid"], float) and math.isfinite(row["fid"]) and row["fid"] >= -1e-9
        assert (out / row["grid"]).read_bytes().startswith(PNG_MAGIC)
    frame = pd.read_csv(out / "results.csv")
    assert frame["checkpoint_sha256"].tolist() == [hashes[e[2]] for e in expected]
    assert frame["nfe"].tolist() == [e[3] for e in expected]
    html = (out / "report.html").read_text()
    assert all(e[0] in html for e in expected)


def test_replaced_checkpoint_is_not_silently_resumed(tmp_path):
    suite_dir = tmp_path / "suite"
    ckpt = suite_dir / "edm.pt"

    def save(seed):
        torch.manual_seed(seed)
        net = build_network("small_unet", NET_KWARGS)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return save_native(ckpt, net, arch="small_unet", arch_kwargs=NET_KWARGS, family="edm",
                           model_options={"image_shape": [1, 8, 8]}, overwrite=True)

    old = save(0)
    raw = {
        "name": "ck", "num_samples": 32, "metrics": ["fid"], "features": {"extractor": "pixels"},
        "reference": {"model": "ref", "num_images": 64},
        "models": {"ref": gmm_model(shape=(1, 8, 8), count=2), "edm": {"family": "edm", "checkpoint": "edm.pt"}},
        "runs": [{"model": "edm", "sampler": "heun", "nfe": [1]}],
    }
    path = write_suite(suite_dir, raw)
    out = tmp_path / "out"
    run_suite(load_suite(path), out, device="cpu", progress=False)
    assert read_rows(out)[0]["checkpoint_sha256"] == old
    new = save(1)
    assert new != old
    try:
        run_suite(load_suite(path), out, device="cpu", progress=False)
    except RuntimeError as err:  # refusing is fine
        assert "different configuration" in str(err)
        return
    assert [r["checkpoint_sha256"] for r in read_rows(out)] == [new]  # so is recomputing
