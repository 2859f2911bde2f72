"""The report's pure pieces: number formats, best-beyond-noise ranking, machine-path stripping and
the metric options it shows. No rendering here (tests/test_report_page.py renders pages)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from cmbench.metrics import METRICS, MetricOptions
from cmbench.report.numbers import (MISSING, decimals_for_errors, decimals_for_significant, format_fixed,
                                    format_general, format_significant, format_value_se, time_unit_for)
from cmbench.report.provenance import (METRIC_OPTION_USERS, computed_metric_options, metrics_of_row, portable_path,
                                       strip_machine_paths)
from cmbench.report.ranking import BEST, TIED, Measurement, rank_marks
from cmbench.report.tables import METRIC_COLUMNS, column_formats, report_time_unit

NOT_NUMBERS = [None, math.nan, math.inf, -math.inf, "1.5", True]


# --- numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, digits, decimals", [
    (1.05, 2, 1), (0.0026, 2, 4), (0.0996, 2, 2), (12.0, 2, 0), (9.96, 2, 0), (0.5, 1, 1), (0.0, 2, 0)])
def test_decimals_show_the_significant_digits(value, digits, decimals) -> None:
    assert decimals_for_significant(value, digits) == decimals


def test_a_column_takes_two_significant_digits_of_its_median_se() -> None:
    assert decimals_for_errors([1.05, 1.98, 5.3], default=2) == 1  # median 1.98
    assert decimals_for_errors([0.0026, 0.0046, 0.011], default=3) == 4
    assert decimals_for_errors([6.8e-5, 0.12, 0.13], default=2) == 2  # one degenerate row does not decide
    assert decimals_for_errors([None, math.nan, 0.0], default=3) == 3
    assert decimals_for_errors([1e-12, 1e-12, 1e-12], default=3) == 6  # capped


def test_value_se_formats() -> None:
    assert format_value_se(5.304, 1.051, 2) == "5.30 ± 1.05"
    assert format_value_se(5.304, 1.051, 1) == "5.3 ± 1.1"
    assert format_value_se(5.304, None, 1) == "5.3"
    assert format_value_se(5.304, math.nan, 1) == "5.3"
    assert format_value_se(5.304, -1.0, 1) == "5.3"  # a negative se is no se
    assert format_value_se(-0.0001, 0.0, 2) == "0.00 ± 0.00"  # never "-0.00"


@pytest.mark.parametrize("bad", NOT_NUMBERS)
def test_non_numbers_are_never_shown_as_numbers(bad) -> None:
    for text in (format_fixed(bad, 2), format_value_se(bad, 1.0, 2), format_significant(bad), format_general(bad, 4),
                 time_unit_for([1e-3]).format(bad)):
        assert text == MISSING


def test_significant_digits_without_exponents() -> None:
    assert [format_significant(v) for v in (0.0144, 46.87, 341.3, 1234.5, 0.999, 9.996)] == \
        ["0.0144", "46.9", "341", "1234", "0.999", "10.0"]


def test_one_time_unit_for_a_column() -> None:
    seconds = [0.0003413, 0.04687, 1.44e-05, None, math.nan]
    unit = time_unit_for(seconds)
    assert unit.symbol == "ms"
    assert [unit.format(s) for s in seconds] == ["0.341", "46.9", "0.0144", MISSING, MISSING]
    assert time_unit_for([2.9e-5, 6.1e-4]).symbol == "µs"
    assert time_unit_for([1.5, 0.2]).symbol == "s"
    assert time_unit_for([]).symbol == "s"
    rows = [{"seconds_per_sample": s} for s in seconds]
    assert report_time_unit(rows) == unit


def test_column_formats_share_decimals_and_know_when_there_is_no_se() -> None:
    rows = [{"fid": 5.304, "fid_se": 1.05, "precision": 0.7}, {"fid": 5.438, "fid_se": 1.06, "precision": 0.8}]
    fid, precision = column_formats(rows, [c for c in METRIC_COLUMNS if c.key in ("fid", "precision")])
    assert (fid.decimals, fid.has_se) == (1, True)
    assert [fid.cell_text(row) for row in rows] == ["5.3 ± 1.1", "5.4 ± 1.1"]
    assert (precision.decimals, precision.has_se) == (3, False)
    assert precision.cell_text(rows[0]) == "0.700" and not precision.lacks_se(rows[0])
    assert fid.lacks_se({"fid": 3.0}) and not fid.lacks_se({"fid": None})


# --- ranking ----------------------------------------------------------------------------------

def test_best_only_beyond_noise_lower_is_better() -> None:
    # The case: 5.304 vs 5.438 with se about 1.05 each is a tie, not a best.
    tie = [Measurement(5.438, 1.06, "a"), Measurement(5.304, 1.05, "b"), Measurement(43.6, 2.85, "c")]
    assert rank_marks(tie, "lower", z=3) == [TIED, TIED, None]
    clear = [Measurement(12.35, 1.05, "a"), Measurement(7.5, 0.98, "b")]
    assert rank_marks(clear, "lower", z=3) == [None, BEST]
    assert rank_marks(clear, "lower", z=4) == [TIED, TIED]  # 4.85 < 4 · 1.44


def test_best_only_beyond_noise_higher_is_better() -> None:
    values = [Measurement(0.90, 0.01, "a"), Measurement(0.60, 0.01, "b"), Measurement(0.89, 0.01, "c")]
    assert rank_marks(values, "higher", z=3) == [TIED, None, TIED]
    assert rank_marks(values, "lower", z=3) == [None, BEST, None]


def test_a_noisy_row_far_away_still_ties() -> None:
    """Beyond noise against every row, not just the runner-up by value."""
    values = [Measurement(5.0, 0.1, "a"), Measurement(5.5, 0.1, "b"), Measurement(9.0, 3.0, "c")]
    assert rank_marks(values, "lower", z=2) == [TIED, None, TIED]


def test_nothing_is_ranked_without_standard_errors_or_rivals() -> None:
    assert rank_marks([Measurement(1.0, None, "a"), Measurement(9.0, 0.1, "b")], "lower", z=3) == [None, None]
    assert rank_marks([Measurement(1.0, 0.1, "a"), None, Measurement(math.nan, 0.1, "c")], "lower", z=3) == [None] * 3
    # One model's bits/dim repeated in each of its rows is one measurement.
    assert rank_marks([Measurement(21.3, 0.3, "edm")] * 3, "lower", z=3) == [None] * 3
    two_models = [Measurement(21.3, 0.3, "edm"), Measurement(21.3, 0.3, "edm"), Measurement(17.6, 0.25, "ctm")]
    assert rank_marks(two_models, "lower", z=3) == [None, None, BEST]
    with pytest.raises(ValueError, match="direction"):
        rank_marks([], "smaller", z=3)


def test_saturated_rows_tie_and_a_models_bits_per_dim_counts_once() -> None:
    """Four sampler rows all at recall 1.000 ± 0 are four measurements that tie (suites/gmm.yaml);
    one model's bits/dim copied into its rows is one."""
    recall, bpd = column_formats([], [c for c in METRIC_COLUMNS if c.key in ("recall", "bpd")])
    rows = [{"row_id": f"mix.heun.nfe{n}", "model": "mix", "recall": 1.0, "recall_se": 0.0, "bpd": 3.0,
             "bpd_stderr": 0.1} for n in (3, 5, 9)] + [
        {"row_id": "mix.heun.nfe35", "model": "mix", "recall": 0.94, "recall_se": 0.006, "bpd": 3.0, "bpd_stderr": 0.1}]
    assert rank_marks([recall.measurement(r) for r in rows], "higher", z=3) == [TIED, TIED, TIED, None]
    assert rank_marks([bpd.measurement(r) for r in rows], "lower", z=3) == [None] * 4
    assert recall.measurement({**rows[0], "status": "failed"}) is None


# --- provenance -------------------------------------------------------------------------------

def test_machine_paths_become_relative_or_file_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    data = {
        "suite_file": "/home/alice/cmbench/suites/toy.yaml",
        "reference": {"path": "/home/alice/cmbench/suites/../reference_stats/toy.npz", "sha256": "ab" * 32},
        "grid": f"{run}/grids/a.png",
        "error": f"could not read {tmp_path}/elsewhere/x.npz: truncated",
        "urls": ["https://example.org/a/b", "file:///tmp/x/report.html"],
        "text": "8.8 bits/dim; s / sample; G(x, t, s); 1/2",
        "image": "data:image/png;base64,AAAA/tmp/BBBB",
        f"{tmp_path}/as/key": 1,
    }
    stripped = strip_machine_paths(data, run)
    assert stripped == {
        "suite_file": "toy.yaml",
        "reference": {"path": "toy.npz", "sha256": "ab" * 32},
        "grid": "grids/a.png",
        "error": "could not read x.npz: truncated",
        "urls": ["https://example.org/a/b", "report.html"],
        "text": "8.8 bits/dim; s / sample; G(x, t, s); 1/2",
        "image": "data:image/png;base64,AAAA/tmp/BBBB",
        "key": 1,
    }
    assert portable_path("C:\\Users\\bob\\x.npz", run) == "x.npz"


def test_every_metric_option_has_its_metrics() -> None:
    assert set(METRIC_OPTION_USERS) == {f.name for f in dataclasses.fields(MetricOptions)}
    assert {m for users in METRIC_OPTION_USERS.values() for m in users} <= set(METRICS)


def test_only_computed_metrics_options() -> None:
    options = dataclasses.asdict(MetricOptions())
    assert computed_metric_options(options, ["fid", "inception_score"]) == {
        "fid_sqrt": "eigh", "is_splits": 10, "is_split_size": None, "is_shuffle_seed": None}
    assert set(computed_metric_options(options, ["density_coverage"])) == {"dc_k", "pr_batch_size"}
    assert computed_metric_options({**options, "new_option": 1}, []) == {"new_option": 1}
    assert computed_metric_options(None, ["fid"]) is None
    assert metrics_of_row({"fid": None, "precision": 0.5, "recall": 0.4}) == ["fid", "precision_recall"]
