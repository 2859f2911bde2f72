"""Tests for the HTML report, its plots and the sample-grid PNGs."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cmbench.report import image_grid_png, render_report
from cmbench import atomic as atomic_module
from cmbench.report.plots import metric_plot_png, metric_series, nfe_axis, series_styles

EVIL_MODEL = "<script>alert(1)</script>"


FULL_METRIC_OPTIONS = {"is_splits": 10, "pr_k": 3, "pr_batch_size": 10000, "fid_sqrt": "eigh", "kid_subsets": 100,
                       "kid_subset_size": 1000, "dc_k": 5, "kid_capped": False, "is_split_size": None,
                       "is_shuffle_seed": None}


def _rows() -> list[dict]:
    """Made-up rows: EDM's two differ beyond noise (FID 12.35 ± 1.05 vs 7.5 ± 0.98, z = 3), CD's
    two do not (20.0 ± 1.5 vs 15.25 ± 1.2); the CTM row has no numbers at all."""
    return [
        {
            "row_id": "mix.heun.nfe5", "suite": "toy", "model": "edm-toy", "family": "edm",
            "sampler": "heun", "nfe": 5, "num_samples": 1000, "fid": 12.3456, "fid_se": 1.05, "is_mean": 3.2,
            "is_std": 0.05, "is_mean_se": 0.021, "precision": 0.71234, "precision_se": 0.0123, "recall": 0.5,
            "recall_se": 0.011, "seconds_per_sample": 0.000123456,
            "schedule": [80.0, 24.46789, 5.8, 0.002], "options": {"rho": 7, "churn": None},
            "grid": "grids/mix.heun.nfe5.png", "checkpoint_sha256": "ab" * 32, "metric_options": FULL_METRIC_OPTIONS,
        },
        {
            "row_id": "mix.heun.nfe9", "suite": "toy", "model": "edm-toy", "family": "edm",
            "sampler": "heun", "nfe": 9, "num_samples": 1000, "fid": 7.5, "fid_se": 0.98, "seconds_per_sample": 0.002,
            "grid": "grids/mix.heun.nfe9.png",
        },
        {
            "row_id": "cd.ms.nfe1", "suite": "toy", "model": "cd-toy", "family": "cd",
            "sampler": "cm_multistep", "nfe": 1, "fid": 20.0, "fid_se": 1.5, "grid": "grids/missing.png",
        },
        {
            "row_id": "cd.ms.nfe2", "suite": "toy", "model": "cd-toy", "family": "cd",
            "sampler": "cm_multistep", "nfe": 2, "fid": 15.25, "fid_se": 1.2, "bpd": None,
        },
        {
            "row_id": "evil.row", "suite": "toy", "model": EVIL_MODEL, "family": "ctm",
            "sampler": "ctm_gamma", "sampler_label": "ctm_gamma γ=0", "nfe": 1,
        },
    ]


def _write_run(run_dir: Path, rows: list[dict], *, run_json: bool = True) -> None:
    (run_dir / "grids").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for row_id in ("mix.heun.nfe5", "mix.heun.nfe9"):
        images = rng.integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)
        (run_dir / "grids" / f"{row_id}.png").write_bytes(image_grid_png(images, scale=2))
    (run_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    if run_json:
        metadata = {
            "suite": "toy", "cmbench_version": "0.1.0", "device": "cpu", "seed_start": 0,
            "extractor": {"name": "toy-classifier", "sha256": "cd" * 32},
            "metrics": ["fid", "inception_score", "precision_recall"], "metric_options": FULL_METRIC_OPTIONS,
            "started_at": "2025-01-01T00:00:00Z",
        }
        (run_dir / "run.json").write_text(json.dumps(metadata), encoding="utf-8")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> str:
    """The report of _rows(), rendered once for the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("run")
    _write_run(run_dir, _rows())
    return render_report(run_dir).read_text(encoding="utf-8")


def test_report_lists_models_and_formatted_metrics(report_html: str) -> None:
    for model in ("edm-toy", "cd-toy"):
        assert model in report_html
    # FID to the decimals of two significant digits of its median se (1.125): one.
    for fid in ("12.3 ± 1.1", "7.5 ± 1.0", "20.0 ± 1.5", "15.2 ± 1.2"):
        assert fid in report_html
    assert "3.200 ± 0.021" in report_html  # IS ± its bootstrap se, not ± is_std over splits
    assert "0.712 ± 0.012" in report_html
    assert "ms / sample" in report_html and ">0.123<" in report_html and ">2.00<" in report_html
    assert "1,000" in report_html
    assert "ctm_gamma γ=0" in report_html
    assert "80, 24.47, 5.8, 0.002" in report_html  # schedule to 4 significant digits


def test_family_tables_follow_family_order(report_html: str) -> None:
    edm = report_html.index('id="family-edm"')
    cd = report_html.index('id="family-cd"')
    ctm = report_html.index('id="family-ctm"')
    assert edm < cd < ctm
    assert report_html.index("mix.heun.nfe5") < report_html.index("mix.heun.nfe9")


def test_report_is_self_contained(report_html: str) -> None:
    assert "data:image/png;base64," in report_html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", report_html, re.IGNORECASE)
    assert "<link" not in report_html.lower()
    assert "@import" not in report_html
    assert "url(" not in report_html


def test_report_inlines_grids_and_notes_missing_ones(tmp_path: Path) -> None:
    _write_run(tmp_path, _rows())
    html = render_report(tmp_path).read_text(encoding="utf-8")
    for row_id in ("mix.heun.nfe5", "mix.heun.nfe9"):
        encoded = base64.b64encode((tmp_path / "grids" / f"{row_id}.png").read_bytes()).decode("ascii")
        assert f"data:image/png;base64,{encoded}" in html
    assert "Grid image grids/missing.png not found." in html
    grids = html[html.index('<section id="grids">'):html.index('<section id="metadata">')]
    assert grids.count('src="data:image/png;base64,') == 2


def test_data_is_escaped(report_html: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report_html
    assert "<script" not in report_html.lower()


def test_missing_metrics_render_as_dash(report_html: str) -> None:
    row = re.search(r"<tr title=\"evil.row\">(.*?)</tr>", report_html, re.DOTALL)
    assert row is not None
    assert row.group(1).count("—") >= 5  # fid, IS, precision, recall, seconds, samples


def test_best_is_marked_only_beyond_noise(report_html: str) -> None:
    # EDM: 7.5 ± 0.98 beats 12.35 ± 1.05 by 4.85 > 3·1.44; CD: 15.25 vs 20.0 differ by 4.75 < 3·1.92.
    assert '<td class="num best" title="best beyond noise"><strong>7.5 ± 1.0</strong></td>' in report_html
    assert "<strong>12.3 ± 1.1</strong>" not in report_html
    for cd in ("20.0 ± 1.5", "15.2 ± 1.2"):
        assert f'<td class="num tied" title="tied for best within noise"><span class="mark">≈</span> {cd}</td>' in report_html
    assert "<strong>15.2 ± 1.2</strong>" not in report_html
    assert "z = 3" in report_html  # the legend states the z it used


def test_metric_columns_only_when_present(report_html: str) -> None:
    assert '<th class="num">FID <span class="dir" title="lower is better">↓</span></th>' in report_html
    assert '<th class="num">IS <span class="dir" title="higher is better">↑</span></th>' in report_html
    assert "sFID" not in report_html
    assert "bits/dim" not in report_html  # bpd is only ever null


def test_report_without_run_json_still_renders(tmp_path: Path) -> None:
    _write_run(tmp_path, _rows(), run_json=False)
    html = render_report(tmp_path, title="no metadata").read_text(encoding="utf-8")
    assert "<title>no metadata</title>" in html
    assert "No run.json in the run directory" in html


def test_run_metadata_is_rendered(report_html: str) -> None:
    assert "toy-classifier" in report_html
    assert "started_at" in report_html


def test_rendering_twice_replaces_atomically(tmp_path: Path) -> None:
    _write_run(tmp_path, _rows())
    before = set(os.listdir(tmp_path))
    first = render_report(tmp_path, title="first")
    second = render_report(tmp_path, title="second")
    assert first == second == tmp_path / "report.html"
    assert "<title>second</title>" in second.read_text(encoding="utf-8")
    assert set(os.listdir(tmp_path)) == before | {"report.html"}


def test_failed_write_keeps_old_report_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    _write_run(tmp_path, _rows())
    report = render_report(tmp_path, title="old")
    before = set(os.listdir(tmp_path))

    def failing_replace(source, target):
        raise OSError("disk went away")

    monkeypatch.setattr(atomic_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        render_report(tmp_path, title="new")
    assert set(os.listdir(tmp_path)) == before
    assert "<title>old</title>" in report.read_text(encoding="utf-8")


def test_bad_results_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('{"row_id": "a", "model": "m", "family": "edm", "sampler": "heun"}\n')
    with pytest.raises(ValueError, match=r"results.jsonl:1: .*nfe"):
        render_report(tmp_path)


def test_image_grid_png_size_and_mode() -> None:
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    picture = Image.open(io.BytesIO(image_grid_png(images, ncols=4, scale=2)))
    # 4 columns x 3 rows of 16x16 tiles, 1-pixel separators between and around them.
    assert picture.size == (4 * (16 + 1) + 1, 3 * (16 + 1) + 1)
    assert picture.mode == "RGB"
    grey = Image.open(io.BytesIO(image_grid_png(np.zeros((4, 1, 8, 8), dtype=np.uint8))))
    assert grey.mode == "L" and grey.size == (2 * 9 + 1, 2 * 9 + 1)


def test_image_grid_png_places_pixels() -> None:
    images = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    images[1] = 200
    grid = np.asarray(Image.open(io.BytesIO(image_grid_png(images, ncols=2, scale=1))))
    assert grid[1, 1] == 0 and grid[1, 4] == 200 and grid[0, 0] == grid[1, 3] != 200


def test_image_grid_png_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="uint8"):
        image_grid_png(torch.rand(4, 3, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        image_grid_png(np.zeros((4, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        image_grid_png(np.zeros((4, 2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="4 dimensions"):
        image_grid_png(np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="scale"):
        image_grid_png(np.zeros((1, 3, 8, 8), dtype=np.uint8), scale=0)


def test_metric_plot_png() -> None:
    rows = _rows()
    styles = series_styles(f"{row['model']} · {row['sampler']}" for row in rows)
    empty = metric_series([{**row, "fid": None} for row in rows], "fid", "fid_se", nfe_axis())
    assert empty == {} and metric_plot_png(empty, styles, x_axis=nfe_axis(), y_label="FID", title="t") is None
    series = metric_series(rows, "fid", "fid_se", nfe_axis())
    assert series["edm-toy · heun"][0].se == 1.05
    png = metric_plot_png(series, styles, x_axis=nfe_axis(), y_label="FID", title="FID vs NFE")
    assert png is not None and png.startswith(b"\x89PNG")


def test_flat_metadata_lists_render_on_one_line(report_html: str) -> None:
    assert "[&#34;fid&#34;, &#34;inception_score&#34;, &#34;precision_recall&#34;]" in report_html


def test_suite_description_is_shown_escaped(tmp_path: Path) -> None:
    _write_run(tmp_path, _rows())
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["description"] = "Why CTM <lags> here"
    (tmp_path / "run.json").write_text(json.dumps(meta))
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert '<p class="description">Why CTM &lt;lags&gt; here</p>' in html
