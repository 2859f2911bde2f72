"""cmbench runs without torchvision and without the reference evaluators that pull it in.

torchvision must match the installed torch build exactly (the PyPI wheel does not load against a
CPU torch: ``operator torchvision::nms does not exist``), and clean-fid, torch-fidelity and lpips
all import it. So none of them is a runtime dependency (pyproject.toml: the ``reference`` extra),
and nothing on the run path may import them. A fresh interpreter with an import blocker in front
of every finder runs the toy suite, re-renders its report and compares it with itself; any
attempt to import one of these packages, even one caught by a ``try``, fails the test by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BLOCKED = ("torchvision", "torch_fidelity", "cleanfid", "lpips")

SCRIPT = r"""
import importlib.abc
import json
import sys

BLOCKED = {blocked!r}
attempts = []


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            attempts.append(fullname)
            raise ImportError(f"test_no_torchvision: cmbench tried to import {{fullname}}")
        return None


sys.meta_path.insert(0, Blocker())
try:  # the blocker works: an installed torchvision is refused too
    import torchvision
except ImportError:
    assert attempts == ["torchvision"], attempts
    attempts.clear()
else:
    raise AssertionError("the import blocker let torchvision through")

import cmbench
from cmbench.cli import main

codes = [
    main(["run", "toy", "--out", "run", "--quiet", "--set", "num_samples=64", "--set", "likelihood=null",
          "--set", "grid_images=8", "--set", "uncertainty.bootstrap=2"]),
    main(["report", "run"]),
    main(["compare", "run", "run"]),
]
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print("RESULT " + json.dumps({{"codes": codes, "attempts": attempts, "loaded": loaded}}))
"""


def test_toy_run_report_and_compare_import_no_torchvision(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["attempts"] == [], f"imported at run time: {result['attempts']}"
    assert result["loaded"] == []
    assert result["codes"] == [0, 0, 0], done.stdout[-3000:]
    rows = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 23 and all(json.loads(row)["status"] == "ok" for row in rows)
    assert (tmp_path / "run" / "report.html").is_file()
