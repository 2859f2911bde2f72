"""The rendered report page: value ± se in every metric column, marks, captions, plots per computed
metric, no machine paths, only computed metrics' options, and the responsive structure the
browser benchmark (benchmarks/report_screenshots.py) measures. Made-up rows, no suite run."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cmbench.report import image_grid_png, render_report
from cmbench.report.layout import layout_problems
from cmbench.report.tables import METRIC_COLUMNS

HOME = "/home/alice/work"
ALL_OPTIONS = {"is_splits": 10, "pr_k": 3, "pr_batch_size": 10000, "fid_sqrt": "eigh", "kid_subsets": 100,
               "kid_subset_size": 1000, "dc_k": 5, "kid_capped": False, "is_split_size": None, "is_shuffle_seed": None}
METRIC_VALUES = {  # column: (value, se) of the first row; the second row's values are shifted
    "fid": (5.304, 1.051), "sfid": (6.2, 0.4), "fd_dinov2": (61.27, 2.4), "cmmd": (0.412, 0.015),
    "is_mean": (9.63, 0.045), "kid": (0.00123, 0.00021),
    "precision": (0.7123, 0.0071), "recall": (0.5, 0.011), "density": (0.9, 0.02), "coverage": (0.8, 0.015),
    "bpd": (3.2, 0.05),
}


def _row(row_id: str, nfe: int, shift: float, **extra) -> dict:
    metrics = {}
    for column in METRIC_COLUMNS:
        value, se = METRIC_VALUES[column.key]
        metrics[column.key] = value * (1 + shift) if column.key != "bpd" else value
        metrics[column.se_key] = se
    return {"row_id": row_id, "suite": "all", "model": "edm-a", "family": "edm", "sampler": "heun", "nfe": nfe,
            "num_samples": 500, "seconds_per_sample": 1e-4 * nfe, "bpd_nfe": 120.0, "bpd_protocol": "exact",
            "grid": f"grids/{row_id}.png", "metric_options": ALL_OPTIONS, "status": "ok", **metrics, **extra}


def _rows(run_dir: Path) -> list[dict]:
    return [
        _row("edm.heun.nfe5", 5, 0.0),
        _row("edm.heun.nfe9", 9, 0.02, grid=f"{run_dir}/grids/edm.heun.nfe9.png"),  # absolute, inside the run
        {"row_id": "edm.heun.nfe1", "suite": "all", "model": "edm-a", "family": "edm", "sampler": "heun", "nfe": 1,
         "num_samples": 500, "status": "failed", "fid": None, "fid_se": None,
         "error": f"checkpoint {HOME}/ckpt/edm.pt could not be read", "metric_options": ALL_OPTIONS},
        {"row_id": "cd.ms.nfe1", "suite": "all", "model": "cd-a", "family": "cd", "sampler": "cm_multistep", "nfe": 1,
         "num_samples": 500, "fid": 9.5, "fid_se": None, "is_mean": math.nan, "precision": 0.6, "precision_se": 0.01,
         "seconds_per_sample": math.nan, "samples": f"{HOME}/samples/cd.npz"},
    ]


def _metadata() -> dict:
    return {
        "suite": "all", "suite_file": f"{HOME}/suites/all.yaml",
        "description": "Analytic mixture: precision/recall saturate in 192-d pixel space.",
        "reference": {"path": f"{HOME}/suites/../reference_stats/ref.npz", "sha256": "ef" * 32},
        "metrics": ["fid", "inception_score"], "metric_options": ALL_OPTIONS,
        "uncertainty": {"bootstrap": 20, "seed": 0}, "regression": {"z": 2.5, "thresholds": {}},
        "paper": {"source": "Paper 2023", "rows": {"edm.heun.nfe5": {"fid": 5.0}}},
    }


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[str, Path]:
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "grids").mkdir()
    rng = np.random.default_rng(0)
    for row_id in ("edm.heun.nfe5", "edm.heun.nfe9"):
        (run_dir / "grids" / f"{row_id}.png").write_bytes(
            image_grid_png(rng.integers(0, 256, (4, 3, 4, 4), dtype=np.uint8), scale=2))
    rows = _rows(run_dir)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps(_metadata()), encoding="utf-8")
    return render_report(run_dir).read_text(encoding="utf-8"), run_dir


class _Tables(HTMLParser):
    """The comparison tables' cells as text: {row title: [cell texts]}, and their header texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.headers: list[str] = []
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._in_header = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("title"):
            self._row = attrs["title"]
            self.rows[self._row] = []
        elif tag in ("td", "th"):
            self._cell, self._in_header = [], tag == "th"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._in_header:
                self.headers.append(text)
            elif self._row is not None:
                self.rows[self._row].append(text)
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _comparison(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html[html.index('<section id="comparison">'):html.index("</section>", html.index('id="comparison"'))])
    return parser


def test_every_metric_column_shows_value_plus_minus_se(page) -> None:
    tables = _comparison(page[0])
    for row_id in ("edm.heun.nfe5", "edm.heun.nfe9"):
        cells = tables.rows[row_id][3:3 + len(METRIC_COLUMNS)]
        assert len(cells) == len(METRIC_COLUMNS)
        assert all(re.fullmatch(r"(≈ )?-?\d+(\.\d+)? ± \d+(\.\d+)?", cell) for cell in cells), cells
    nfe5 = tables.rows["edm.heun.nfe5"]
    assert nfe5[3] == "≈ 5.3 ± 1.1"  # FID: 2 significant digits of se; tied with NFE 9
    assert "≈ 0.00123 ± 0.00021" in nfe5  # KID keeps its small scale
    assert "NLL (bits/dim) [exact] ↓" in tables.headers and "IS ↑" in tables.headers


def test_values_without_se_are_marked_and_non_numbers_are_dashes(page) -> None:
    html = page[0]
    cd = _comparison(html).rows["cd.ms.nfe1"]
    assert cd[3] == "9.5no se"  # FID: value alone, labelled
    assert cd[4] == "—"  # sFID absent
    assert cd[5] == "—"  # IS NaN: never shown as a number
    assert cd[-2] == "—"  # seconds NaN
    assert not re.search(r">\s*-?(nan|inf)\b", html, re.IGNORECASE)


def test_marks_follow_direction_and_the_suites_z(page) -> None:
    rows = _comparison(page[0]).rows
    # 2 % apart with se of 1-2 % of the value: beyond noise only where the se is small (z = 2.5).
    nfe5, nfe9 = rows["edm.heun.nfe5"], rows["edm.heun.nfe9"]
    assert nfe5[3].startswith("≈") and nfe9[3].startswith("≈")  # FID 5.30 vs 5.41 ± 1.05
    assert "z = 2.5" in page[0]
    html = page[0]
    # precision 0.7265 ± 0.0071 vs 0.7123 ± 0.0071: 0.0142 < 2.5·0.0100; IS 9.82 vs 9.63 ± 0.045: beyond.
    assert '<td class="num best" title="best beyond noise"><strong>9.823 ± 0.045</strong></td>' in html
    assert '<td class="num best" title="best beyond noise"><strong>9.63' not in html
    # KID is lower-better: the lower (first) row would be best, but 0.00002 apart is a tie.
    assert nfe5[6].startswith("≈") and nfe9[6].startswith("≈")


def test_failed_rows_say_so(page) -> None:
    html = page[0]
    assert "failed: checkpoint edm.pt could not be read" in html
    assert "edm-a · heun · NFE 1 failed" in _captions(html)


def _captions(html: str) -> list[str]:
    """The sample grids' captions as plain text, whitespace collapsed."""
    grids = html[html.index('<section id="grids">'):html.index('<section id="metadata">')]
    return [" ".join(re.sub(r"<[^>]+>", " ", caption).split())
            for caption in re.findall(r"<figcaption>(.*?)</figcaption>", grids, re.DOTALL)]


def test_grids_are_captioned_with_their_rows_numbers(page) -> None:
    html = page[0]
    captions = _captions(html)
    assert len(captions) == 4
    nfe5 = next(caption for caption in captions if caption.startswith("edm-a · heun · NFE 5 "))
    assert nfe5.startswith("edm-a · heun · NFE 5 FID 5.3 ± 1.1 sFID 6.20 ± 0.40 FD_DINOv2 61.3 ± 2.4 CMMD 0.412 ± 0.015 "
                           "IS 9.630 ± 0.045")
    assert "NLL (bits/dim) [exact] 3.200 ± 0.050" in nfe5
    assert ('alt="samples of edm-a · heun · NFE 5 — FID 5.3 ± 1.1, sFID 6.20 ± 0.40, FD_DINOv2 61.3 ± 2.4, '
            'CMMD 0.412 ± 0.015, IS 9.630 ± 0.045') in html
    grids = html[html.index('<section id="grids">'):html.index('<section id="metadata">')]
    assert grids.count("data:image/png;base64,") == 2  # the absolute grid path inside the run still loads


def test_no_machine_paths_in_the_page(page) -> None:
    html, run_dir = page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert HOME not in text and "/home/" not in text
    assert str(run_dir) not in text and "/tmp/" not in text
    assert not re.search(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]+", re.sub(r"<[^>]+>", " ", text)), "an absolute path"
    assert "all.yaml" in text and "ref.npz" in text and "ef" * 32 in text  # names and hashes instead


def test_only_computed_metrics_options_are_shown(page) -> None:
    html = page[0]
    metadata = html[html.index('<section id="metadata">'):html.index('<section id="rows">')]
    assert "fid_sqrt" in metadata and "is_splits" in metadata
    for other in ("kid_subsets", "pr_k", "dc_k"):
        assert other not in metadata
    details = html[html.index('<section id="rows">'):]
    # The failed row was scored with FID only: its metric options are FID's.
    failed = details[details.index("edm.heun.nfe1"):details.index("</details>", details.index("edm.heun.nfe1"))]
    assert "fid_sqrt" in failed and "kid_subsets" not in failed and "is_splits" not in failed


def test_a_plot_per_computed_metric_against_nfe_and_time(page) -> None:
    html = page[0]
    section = html[html.index('<section id="trade-offs">'):html.index('<section id="grids">')]
    for column in METRIC_COLUMNS:
        start = section.index(f'<h3 id="plot-{column.key}">')
        block = section[start:section.find("<h3", start + 1)]
        expected = 1 if column.key == "bpd" else 2
        assert block.count('<img src="data:image/png;base64,') == expected, column.key
        assert "(bars: ± one standard error)" in block
    assert 'alt="FID against function evaluations' in section
    assert 'alt="FID against wall-clock µs per sample' in section
    assert '<ul class="series">' in section and "edm-a · heun" in section and "cd-a · cm_multistep" in section


def test_description_is_prominent_and_first(page) -> None:
    html = page[0]
    about = html.index('<section class="suite-note" id="about">')
    assert about < html.index('<section id="comparison">')
    assert "precision/recall saturate in 192-d pixel space" in html[about:about + 400]


def test_paper_numbers_at_the_tables_precision(page) -> None:
    html = page[0]
    paper = html[html.index('<section id="paper">'):html.index("</section>", html.index('<section id="paper">'))]
    assert '<td class="num">5.0</td>' in paper and '<td class="num">5.3 ± 1.1</td>' in paper
    assert '<td class="num">+0.3</td>' in paper


def test_responsive_structure(page) -> None:
    html = page[0]
    assert layout_problems(html) == []
    assert html.count('<div class="table-scroll"') == html.count("<table")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_layout_problems_finds_broken_pages() -> None:
    broken = "<html><head><style>.table-scroll { overflow: hidden }</style></head><body><table></table></body></html>"
    problems = layout_problems(broken)
    assert any("table #0" in p for p in problems) and any("viewport" in p for p in problems)
    assert any("overflow-x" in p for p in problems) and any("max-width" in p for p in problems)
