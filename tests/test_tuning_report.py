"""What the report and ``cmbench tune`` show of a tuned schedule: proxy values ± se and costs, the
held-out check against the default Karras schedule, a flag on a tuned schedule that is worse,
older files without validation, and the tune command's budget, refinement and validation options."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shutil

import pytest

from cmbench.cli import main, resolve_suite
from cmbench.cli_commands import ad_hoc_job_keys, tuned_schedule_lines
from cmbench.cli_parser import build_parser
from cmbench.report import render_report
from cmbench.report.plots import proxy_trace, search_trace_png
from cmbench.suite import load_suite
from cmbench.tuning.schedule_file import read_schedule

SUITES = resolve_suite("toy").parent
OLD_SCHEDULE = SUITES.parent / "suites" / "schedules" / "toy-cd.json"  # written before validation and costs
SUITE = {
    "name": "tune_report_test", "num_samples": 100, "seed_start": 0, "batch_size": 100, "quantisation": "round",
    "features": {"extractor": "toy-classifier"}, "metrics": ["fid"], "grid_images": 0,
    "reference": {"path": str(SUITES.parent / "reference_stats" / "toy-digits-all.npz")},
    "models": {"cd": {"family": "cd", "checkpoint": "zoo:toy/cd"}},
    "runs": [{"model": "cd", "sampler": "cm_multistep", "nfe": [1]}],
}
JOB = ["--model", "cd", "--sampler", "cm_multistep", "--max-nfe", "2", "--karras-steps", "8", "--samples", "100"]
NAME = "cd_cm_multistep"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "suite.json"
    path.write_text(json.dumps(SUITE))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def tuned(suite_file, tmp_path_factory):
    """A small robust search without refinement, under a budget, validated on 100 held-out samples:
    its output folder and what ``cmbench tune`` printed."""
    out = tmp_path_factory.mktemp("tuned")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["tune", str(suite_file), *JOB, "--no-refine", "--budget-evaluations", "40",
                     "--budget-seconds", "600", "--validation-samples", "100", "--out", str(out), "--quiet",
                     "--device", "cpu"])
    assert code == 0
    return out, printed.getvalue()


def held_out_document(tuned) -> dict:
    return json.loads((tuned[0] / "schedules" / f"{NAME}.json").read_text())


def with_a_worse_nfe2(document: dict) -> dict:
    """``document`` with its NFE-2 validation turned into a loss to the default, every standard
    error 1.1 (so values show one decimal) and its budget spent."""
    document = copy.deepcopy(document)
    for entry in document["schedules"]:
        entry["se"] = 1.1
    for check in document["validation"]["schedules"]:
        check.update(se=1.1, default_se=1.1, difference_se=1.1, verdict="better")
    check = next(c for c in document["validation"]["schedules"] if c["nfe"] == 2)
    check.update(value=23.54, default_value=20.3, difference=3.24, verdict="worse")
    document["cost"]["budget_exhausted"] = True
    return document


def render_schedules(tmp_path, *documents: dict) -> str:
    for document in documents:
        (tmp_path / "schedules").mkdir(parents=True, exist_ok=True)
        (tmp_path / "schedules" / f"{document['name']}.json").write_text(json.dumps(document))
    return render_report(tmp_path).read_text(encoding="utf-8")


def test_the_tune_options_reach_the_schedule_file(tuned):
    document = held_out_document(tuned)
    assert document["search"]["refine"] is False and document["search"]["method"] == "robust"
    assert document["cost"]["budget"] == {"evaluations": 40, "seconds": 600}
    assert document["validation"]["num_samples"] == 100
    assert [check["nfe"] for check in document["validation"]["schedules"]] == [2]


def test_cli_tune_prints_proxy_values_costs_and_the_held_out_check(tuned):
    document, printed = held_out_document(tuned), tuned[1]
    header = printed.splitlines()[0]
    assert header.startswith(f"{NAME}: cd · cm_multistep · robust search over karras_index · fid on 100 proxy samples")
    assert f"{document['evaluations']} evaluations costing" in header and "(budget 40 evaluations, 600 s)" in header
    for entry in document["schedules"]:
        line = re.search(rf"NFE {entry['nfe']}: .* → fid (\S+) ± (\S+) \({entry['evaluations']} evaluations, "
                         rf"cost (\S+)\)", printed)
        assert line, f"no line for NFE {entry['nfe']} in:\n{printed}"
        value, se, cost = line.groups()
        assert float(value) == pytest.approx(entry["value"], abs=10 ** -_decimals(value))
        assert float(se) == pytest.approx(entry["se"], abs=10 ** -_decimals(se))
        assert float(cost) == pytest.approx(entry["cost"], rel=1e-3)
    checks = re.findall(r"held-out: tuned (\S+) ± \S+, default (\S+) ± \S+, tuned − default (\S+) ± (\S+) → (\w+)",
                        printed)
    assert len(checks) == len(document["validation"]["schedules"]) == 1
    for printed_check, check in zip(checks, document["validation"]["schedules"]):
        tuned_value, default, difference, difference_se, verdict = printed_check
        assert float(tuned_value) == pytest.approx(check["value"], abs=10 ** -_decimals(tuned_value))
        assert float(default) == pytest.approx(check["default_value"], abs=10 ** -_decimals(default))
        assert float(difference) == pytest.approx(check["difference"], abs=10 ** -_decimals(difference))
        assert float(difference_se) == pytest.approx(check["difference_se"], abs=10 ** -_decimals(difference_se))
        assert verdict == check["verdict"]
    assert "validated on 100 held-out samples" in printed and "not validated" not in printed


def test_a_tuned_schedule_worse_than_the_default_is_flagged_in_the_report_and_by_the_cli(tuned, tmp_path):
    worse = with_a_worse_nfe2(held_out_document(tuned))
    flag = ("NFE 2: the tuned schedule is worse than the default Karras schedule on 100 held-out samples by "
            "3.2 ± 1.1 fid (more than 2 paired standard errors)")
    html = render_schedules(tmp_path, worse)
    section = html[html.index('<section id="schedules">'):]
    assert flag in section and '<p class="warning">' in section
    assert section.count('<tr class="worse">') == 1 and "+3.2 ± 1.1" in section
    assert 'class="failed">budget exhausted</strong>' in section
    assert "robust search over karras_index" in section and "samples 50 → 100, ties on 200" in section
    assert "Validated on 100 held-out samples" in section and "Not validated" not in section
    assert f"  warning: {flag}." in tuned_schedule_lines(NAME, worse)
    assert "budget exhausted" in tuned_schedule_lines(NAME, worse)[0]


def test_a_tuned_schedule_no_worse_than_the_default_raises_no_flag(tuned, tmp_path):
    document = with_a_worse_nfe2(held_out_document(tuned))
    document["validation"]["schedules"][-1]["verdict"] = "tied"
    html = render_schedules(tmp_path, document)
    assert "worse than the default" not in html and 'class="worse"' not in html
    assert not any(line.startswith("  warning:") for line in tuned_schedule_lines(NAME, document))


def test_the_trace_plot_shows_only_the_candidates_on_the_proxy_samples(tuned):
    document = held_out_document(tuned)
    assert {e["samples"] for e in document["trace"]} > {100}  # screens on 50
    shown = proxy_trace(document)
    assert shown and {e["samples"] for e in shown} == {100}
    assert len(shown) == sum(e["samples"] == 100 and e["sigma"] is not None for e in document["trace"])
    old = read_schedule(OLD_SCHEDULE)  # no samples recorded: every entry on the proxy
    assert len(proxy_trace(old)) == sum(e["sigma"] is not None for e in old["trace"])
    assert search_trace_png(document).startswith(b"\x89PNG")


def test_an_old_schedule_file_without_validation_or_costs_still_renders(tmp_path):
    (tmp_path / "schedules").mkdir()
    shutil.copy(OLD_SCHEDULE, tmp_path / "schedules" / "toy-cd.json")
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert html.count('<section id="schedules">') == html.count("<h1>") == 1
    section = html[html.index('<section id="schedules">'):]
    assert "Not validated on held-out seeds" in section and "Held-out, tuned" not in section
    assert "grid search over karras_index (40 points)" in section and "112 evaluations in 8.74 s" in section
    assert "<td class=\"num\">13.494</td>" in section  # no se recorded: the value alone, 3 decimals
    assert "search trace: toy-cd" in section and "data:image/png;base64," in section
    lines = tuned_schedule_lines("toy-cd", read_schedule(OLD_SCHEDULE))
    assert lines[-1] == "  not validated on held-out seeds" and "fid 13.494 (38 evaluations)" in lines[2]


@pytest.mark.parametrize("options, keys, fields", [
    (["--budget-evaluations", "12.5", "--budget-seconds", "60"],
     {"budget.evaluations": "12.5", "budget.seconds": "60.0"},
     {"budget_evaluations": 12.5, "budget_seconds": 60.0, "refine": True, "validation_samples": 100}),
    (["--no-refine", "--validation-samples", "300"], {"refine": "false", "validation.num_samples": "300"},
     {"budget_evaluations": None, "refine": False, "validation_samples": 300}),
    (["--validation-samples", "0"], {"validation": "false"}, {"refine": True, "validation_samples": 0}),
])
def test_the_ad_hoc_options_become_tune_job_keys_the_suite_accepts(suite_file, options, keys, fields):
    args = build_parser().parse_args(["tune", str(suite_file), *JOB, *options])
    given = ad_hoc_job_keys(args)
    assert {key: given[key] for key in keys} == keys
    job = load_suite(suite_file, [f"tune.{NAME}.{key}={value}" for key, value in given.items()]).tune[NAME]
    assert {field: getattr(job, field) for field in fields} == fields


def test_cli_tune_refuses_ad_hoc_options_without_a_model_and_one_validation_sample(suite_file, capsys):
    assert main(["tune", str(suite_file), "--budget-evaluations", "5", "--no-refine"]) == 2
    assert "--budget-evaluations, --no-refine shape an ad-hoc job" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", str(suite_file), *JOB, "--validation-samples", "1"])
    assert "1 sample has no spread" in capsys.readouterr().err


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0
