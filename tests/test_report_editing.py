"""The report's zero-shot editing section: editing rows (``kind: edit``) get a table, a PSNR plot
and grids per task, and never reach the generation sections. Made-up rows and tiny grids, no run."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cmbench.report import image_grid_png, render_report
from cmbench.report.layout import layout_problems

HOME = "/home/alice/work"
OPTIONS = {"is_splits": 10, "pr_k": 3, "pr_batch_size": 10000, "fid_sqrt": "eigh", "kid_subsets": 100,
           "kid_subset_size": 1000, "dc_k": 5, "kid_capped": False, "is_split_size": None, "is_shuffle_seed": None}
CM_ALGORITHM = "CM Algorithm 4 (replacement after each clamped f)"
FAILURE = "box.cd.cm_multistep.nfe4: psnr is not finite for seeds 3, 7"


def _generation_rows() -> list[dict]:
    """Two EDM rows whose FID se (0.012) sets the generation FID's precision at three decimals."""
    return [{"row_id": f"edm.heun.nfe{nfe}", "suite": "mixed", "model": "edm-a", "family": "edm", "sampler": "heun",
             "nfe": nfe, "num_samples": 500, "fid": fid, "fid_se": 0.0123, "seconds_per_sample": 1e-4 * nfe,
             "grid": f"grids/edm.heun.nfe{nfe}.png", "status": "ok", "metric_options": OPTIONS}
            for nfe, fid in ((5, 5.30412), (9, 4.81234))]


def _edit_row(task: str, model: str, family: str, nfe: int, **numbers) -> dict:
    params = {"box": {"mask": "box", "size": 0.5}, "sr2": {"factor": 2}}[task]
    row_id = f"{task}.{model}.cm_multistep.nfe{nfe}"
    return {
        "row_id": row_id, "suite": "mixed", "kind": "edit", "task": task,
        "task_kind": "inpainting" if task == "box" else "superres", "task_params": params,
        "edit_algorithm": CM_ALGORITHM, "edit_data": f"PNG folder {HOME}/data/faces (64 images)",
        "model": model, "family": family, "sampler": "cm_multistep", "sampler_label": "cm_multistep", "nfe": nfe,
        "num_samples": 64, "status": "ok", "grid": f"grids/{row_id}.png", "grid_truth": f"grids/{task}.truth.png",
        "grid_degraded": f"grids/{task}.degraded.png", "conventions": {"psnr": {"data_range": 1.0}},
        "metric_options": OPTIONS, **numbers,
    }


def _edit_rows() -> list[dict]:
    """sr2 first in the file, so the section must list it before box. In box, NFE 2's PSNR beats
    NFE 1's far beyond noise (14.50 ± 0.11 vs 12.35 ± 0.12), their FIDs tie (50 ± 5 vs 45 ± 5);
    NFE 4 failed. PSNR's median se (0.1234) gives it two decimals, FID's (5) one."""
    return [
        _edit_row("sr2", "ct-a", "ct", 1, psnr=20.0, psnr_se=0.2, ssim=0.9, ssim_se=0.01, lpips=0.1234,
                  lpips_se=0.0056),
        _edit_row("box", "cd-a", "cd", 1, psnr=12.3456, psnr_se=0.1234, ssim=0.41234, ssim_se=0.0123,
                  consistency_rms=0.0, consistency_rms_se=0.0, consistency_max=0.0, fid=50.04, fid_se=5.0),
        _edit_row("box", "cd-a", "cd", 2, psnr=14.5, psnr_se=0.11, ssim=0.5, ssim_se=0.012,
                  consistency_rms=0.0, consistency_rms_se=0.0, consistency_max=0.0, fid=45.0, fid_se=5.0),
        {"row_id": "box.cd-a.cm_multistep.nfe4", "suite": "mixed", "kind": "edit", "task": "box", "model": "cd-a",
         "family": "cd", "sampler": "cm_multistep", "nfe": 4, "num_samples": 64, "status": "failed", "error": FAILURE,
         "psnr": None, "fid": None},
    ]


def _grid_files(rows: list[dict]) -> set[str]:
    return {row[key] for row in rows for key in ("grid", "grid_truth", "grid_degraded") if row.get(key)}


def _write_run(run_dir: Path, rows: list[dict]) -> Path:
    """A run folder: results.jsonl, run.json and a distinct random grid for every grid a row names."""
    (run_dir / "grids").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in sorted(_grid_files(rows)):
        (run_dir / name).write_bytes(image_grid_png(rng.integers(0, 256, (4, 1, 4, 4), dtype=np.uint8), scale=2))
    (run_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    metadata = {"suite": "mixed", "metrics": ["fid"], "metric_options": OPTIONS,
                "uncertainty": {"bootstrap": 20, "seed": 0}, "regression": {"z": 3, "thresholds": {}}}
    (run_dir / "run.json").write_text(json.dumps(metadata), encoding="utf-8")
    return run_dir


def _section(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}">')
    return html[start:html.index("</section>", start)]


class _Tables(HTMLParser):
    """Each table's rows as {row title: [(cell text, cell class)]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list[tuple[str, str]]]] = []
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._class = ""

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append({})
        elif tag == "tr" and attributes.get("title"):
            self._row = attributes["title"]
            self.tables[-1][self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell, self._class = [], attributes.get("class") or ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[-1][self._row].append(("".join(self._cell).strip(), self._class))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(html: str) -> list[dict[str, list[tuple[str, str]]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def _embedded(run_dir: Path, name: str) -> str:
    return "data:image/png;base64," + base64.b64encode((run_dir / name).read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[str, Path]:
    run_dir = _write_run(tmp_path_factory.mktemp("mixed"), _generation_rows() + _edit_rows())
    return render_report(run_dir).read_text(encoding="utf-8"), run_dir


def test_a_section_and_a_table_per_task_in_the_order_rows_name_them(mixed) -> None:
    html, _ = mixed
    editing = _section(html, "editing")
    assert "Zero-shot editing" in editing
    assert editing.index('id="edit-sr2"') < editing.index('id="edit-box"')
    tables = _tables(editing)
    assert [set(table) for table in tables] == [
        {"sr2.ct-a.cm_multistep.nfe1"},
        {"box.cd-a.cm_multistep.nfe1", "box.cd-a.cm_multistep.nfe2", "box.cd-a.cm_multistep.nfe4"},
    ]
    box = editing[editing.index('id="edit-box"'):]
    assert "inpainting: mask=box, size=0.5" in box[:box.index("<table")]
    assert f"cm_multistep: {CM_ALGORITHM}" in box[:box.index("<table")]
    assert "superres: factor=2" in editing


def test_editing_numbers_are_value_plus_minus_se_and_best_only_beyond_noise(mixed) -> None:
    html, _ = mixed
    sr2, box = _tables(_section(html, "editing"))
    # model, sampler, NFE, then PSNR, SSIM, LPIPS (sr2 only), Residual (box only), FID (box only)
    assert [text for text, _ in sr2["sr2.ct-a.cm_multistep.nfe1"]] == ["ct-a", "cm_multistep", "1", "20.00 ± 0.20",
                                                                          "0.900 ± 0.010", "0.1234 ± 0.0056"]
    nfe1, nfe2 = box["box.cd-a.cm_multistep.nfe1"], box["box.cd-a.cm_multistep.nfe2"]
    assert [text for text, _ in nfe1[3:]] == ["12.35 ± 0.12", "0.412 ± 0.012", "0.0000 ± 0.0000", "≈ 50.0 ± 5.0"]
    assert nfe2[3] == ("14.50 ± 0.11", "num best")
    assert "best" not in nfe1[3][1] and "tied" not in nfe1[3][1]
    assert [cell[1] for cell in (nfe1[6], nfe2[6])] == ["num tied", "num tied"]  # FID 50 ± 5 vs 45 ± 5
    assert nfe2[5][1] == "num"  # the residual has no direction: never marked


def test_a_failed_edit_row_shows_its_error(mixed) -> None:
    html, _ = mixed
    editing = _section(html, "editing")
    failed = _tables(editing)[1]["box.cd-a.cm_multistep.nfe4"]
    assert failed[3] == (f"failed: {FAILURE}", "failed")
    figure = editing[editing.index('id="edit-grid-box.cd-a.cm_multistep.nfe4"'):]
    assert '<span class="failed">failed</span>' in figure[:figure.index("</figure>")]


def test_truth_degraded_and_output_grids_are_embedded(mixed) -> None:
    html, run_dir = mixed
    editing = _section(html, "editing")
    for task in ("box", "sr2"):
        for name in (f"grids/{task}.truth.png", f"grids/{task}.degraded.png"):
            assert editing.count(_embedded(run_dir, name)) == 1  # once per task, not once per row
    for row in _edit_rows():
        if row.get("grid"):
            src = _embedded(run_dir, row["grid"])
            assert editing.count(src) == 1 and html.count(src) == 1
    caption = editing[editing.index('id="edit-grid-box.cd-a.cm_multistep.nfe2"'):]
    caption = caption[:caption.index("</figure>")]
    assert "cd-a · cm_multistep · NFE 2" in caption and "14.50 ± 0.11" in caption
    assert 'alt="box: PSNR (dB) against function evaluations' in editing


def test_edit_rows_stay_out_of_the_generation_sections(mixed) -> None:
    html, _ = mixed
    comparison = _section(html, "comparison")
    assert [set(table) for table in _tables(comparison)] == [{"edm.heun.nfe5", "edm.heun.nfe9"}]
    assert 'id="family-cd"' not in html and 'id="family-ct"' not in html
    assert "5.304 ± 0.012" in comparison  # generation FID's precision comes from generation rows alone
    assert "2 result rows" in html and "4 editing rows in 2 tasks" in html
    grids = _section(html, "grids")
    assert 'id="grid-edm.heun.nfe5"' in grids and "cm_multistep" not in grids
    assert "cm_multistep" not in _section(html, "trade-offs")
    assert "box.cd-a.cm_multistep.nfe1" in _section(html, "rows")  # provenance still lists every row


def test_the_mixed_page_keeps_its_promises(mixed) -> None:
    html, _ = mixed
    assert layout_problems(html) == []
    assert HOME not in html and "faces (64 images)" in _section(html, "editing")


def test_a_generation_only_run_has_no_editing_section(tmp_path: Path) -> None:
    html = render_report(_write_run(tmp_path, _generation_rows())).read_text(encoding="utf-8")
    assert 'id="editing"' not in html and "Zero-shot editing" not in html and "editing row" not in html
    assert 'id="trade-offs"' in html and 'id="grids"' in html


def test_an_editing_only_run_says_where_its_rows_are(tmp_path: Path) -> None:
    html = render_report(_write_run(tmp_path, _edit_rows())).read_text(encoding="utf-8")
    assert "No generation rows in this run" in _section(html, "comparison")
    assert 'id="trade-offs"' not in html and 'id="grids"' not in html
    assert len(_tables(_section(html, "editing"))) == 2


def test_the_report_knows_the_runners_edit_kind() -> None:
    from cmbench.editing.run import EDIT_KIND
    from cmbench.report.editing import EDIT_KIND as REPORTED_KIND
    assert REPORTED_KIND == EDIT_KIND
