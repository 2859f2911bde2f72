"""The wheel must carry every subpackage and data file the code loads (the README installs it)."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent


def test_every_cmbench_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cmbench").rglob("__init__.py")}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"


def test_shipped_suites_schedules_and_reference_files_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in (("cmbench.suites", "suites"), ("cmbench.reference_stats", "reference_stats")):
        patterns = config["package-data"][package]
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".json", ".npz", ".md"):
                relative = path.relative_to(ROOT / folder)
                assert any(relative.match(p) for p in patterns), f"{folder}/{relative} is not package data"


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_runtime_dependencies_pull_no_reference_evaluator_or_torchvision():
    """clean-fid and torch-fidelity depend on torchvision; cmbench never imports them at run time
    (tests/test_no_torchvision.py), so they live in the `reference` extra, which `test` includes."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _requirement_names(project["dependencies"])
    assert not runtime & {"clean-fid", "torch-fidelity", "lpips", "torchvision"}, runtime
    extras = project["optional-dependencies"]
    assert {"clean-fid", "torch-fidelity"} <= _requirement_names(extras["reference"])
    assert "cmbench[reference]" in extras["test"]
