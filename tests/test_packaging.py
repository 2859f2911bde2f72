"""The wheel must carry every subpackage and data file the code loads (the README installs it)."""

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
