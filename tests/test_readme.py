"""The README and docs/ as a reader meets them: every command the README shows runs, and every link resolves.

Every line of a fenced block in README.md that starts with ``cmbench`` or ``torchrun`` must be
listed in :data:`COVERED`, which says how the test runs it at a small size (a few extra arguments
appended: fewer samples, no likelihood, fewer rows) and what it checks afterwards. Each fenced
block runs as one scenario, its commands in order, in an empty working folder holding only the
inputs the commands name: a README command without an entry fails the test, so none slips in
untested. Files from outside (the Inception weights, official reference statistics, released
checkpoints, your samples) are made by the test: random weights in the official file layout,
served to the download commands through a stand-in for ``urllib.request.urlopen``.

``cmbench`` lines run in this process (:func:`cmbench.cli.main`). ``torchrun`` lines run as real
gloo jobs on this machine's CPU and the Slurm array line once per array task (:class:`Cover`'s
``launch``), each compared with one process: the same numbers, bit for bit.

The README's ``pip install`` lines are not run here: its test command (between the
``test-command`` markers) is what ``.ci/run`` runs, so CI exercises the editable install with the
pinned torch; PyTorch's own wheel indexes (``download.pytorch.org``) cannot be reached from this
project's machines, so the CPU-index and CUDA lines are checked by nobody but their readers.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cmbench.checkpoints import sha256_file
from cmbench.cli import main
from cmbench.features.inception import InceptionExtractor
from cmbench.metrics import METRICS
from cmbench.metrics import fid as fid_module
from cmbench.metrics.fid import feature_statistics
from cmbench.suite import load_suite
from cmbench import weights as weights_module
from launch import clean_env, free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
PENDING_FILES = {ROOT / "docs" / "images" / "report-desktop.png"}
"""Files the README links to that another change is producing; a link to one is let through only
while it is missing (test_the_report_picture_exists says so)."""


# --- reading markdown ---------------------------------------------------------------------------

def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(info string, lines) of every fenced code block."""
    blocks, current, info = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                blocks.append((info, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code spans (where links and headings live)."""
    lines, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if not fence:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def command_key(line: str) -> str:
    """A shell line without its comment, as the words the shell passes on."""
    return " ".join(shlex.split(line, comments=True))


def readme_scenarios() -> list[list[str]]:
    """The README's ``cmbench`` and ``torchrun`` lines, grouped by the fenced block they are in."""
    scenarios = []
    for _, lines in fenced_blocks(README.read_text()):
        commands = [command_key(line.strip().removeprefix("$ ")) for line in lines
                    if re.match(r"(\$ )?(cmbench|torchrun)(\s|$)", line.strip())]
        if commands:
            scenarios.append(commands)
    return scenarios


# --- how each README command runs at a small size, and what it must have done -------------------

Ran = tuple[int, str, str]
"""What a launched line did: its exit status, standard output and standard error."""


@dataclass(frozen=True)
class Cover:
    """How one README line runs at a small size, and what it must have done.

    ``launch`` is for lines that start processes; it gets the line's words (``small`` appended) and
    runs them as the README means them, with what only a cluster has substituted: the one-node
    ``torchrun`` line as written (``auto``: at most 2 processes, :func:`one_node`); the multi-node
    line as two torchrun agents on 127.0.0.1 at a free port, one process each, meeting through the
    c10d rendezvous as two nodes do (:func:`several_nodes`); the Slurm array line once per task with
    its ``SLURM_ARRAY_TASK_*`` variables (:func:`array_jobs`)."""

    small: tuple[str, ...]            # appended to the command's arguments
    check: Callable[[Path, str], None]  # (working folder, what the command printed)
    inputs: Callable[["World"], None] | None = None  # makes the files the command reads
    launch: Callable[[list[str], "World"], Ran] | None = None  # runs the line's words as processes (else main here)


TOY_SMALL = ("--set", "num_samples=64", "--set", "likelihood=null", "--set", "grid_images=8")
"""The toy suite at 64 samples per row, without the bits/dim pass: a few seconds for its 23 rows."""

CI_SMALL = (*TOY_SMALL, "--set",
            "runs=[{model: edm, sampler: heun, nfe: [9, 35]}, {model: cd, sampler: cm_multistep, nfe: [1]}]")
"""The CI recipe says "your own suite in place of toy": here three of the toy suite's rows."""

EDIT_SMALL = ("--set", "editing.num_images=24", "--set", "grid_images=8", "--set",
              "editing.runs=[{model: cd, sampler: cm_multistep, nfe: [1, 2], tasks: [box, sr2, denoise]}]")
"""The toy editing suite's CD rows on three tasks, 24 digits each."""


def edited(folder: Path, printed: str) -> None:
    rows = rows_of(folder / "reports" / "toy_edit" / "results.jsonl")
    assert [row["task"] for row in rows] == ["box", "sr2", "denoise"] * 2 and {row["kind"] for row in rows} == {"edit"}
    assert all(np.isfinite(row["psnr"]) and np.isfinite(row["psnr_se"]) and row["num_samples"] == 24 for row in rows)
    assert "Zero-shot editing" in (folder / "reports" / "toy_edit" / "report.html").read_text()


EDM_CIFAR10_COND = yaml.safe_load((ROOT / "suites" / "edm_cifar10.yaml").read_text())["models"]["cond"]
PAPER_SMALL = ("--set", "num_samples=4", "--set", "batch_size=4", "--set", "grid_images=2",
               "--set", "uncertainty.bootstrap=0",
               "--set", "models={cond: %s}" % yaml.safe_dump(EDM_CIFAR10_COND, default_flow_style=True).strip(),
               "--set", "runs=[{model: cond, sampler: heun, nfe: [1], paper: {1: {fid: 1.79}}}]")
"""The EDM CIFAR-10 suite's conditional model alone, 4 samples at NFE 1, on random weights at the
official size (one 55M-parameter network instead of two)."""

SCORE_SMALL = ("--quiet", "--set", "uncertainty.bootstrap=0")


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def toy_run(out: str, seed_start: int, count: int = 23) -> Callable[[Path, str], None]:
    def check(folder: Path, printed: str) -> None:
        rows = rows_of(folder / out / "results.jsonl")
        assert len(rows) == count and {row["status"] for row in rows} == {"ok"}
        assert all(np.isfinite(row["fid"]) and row["seed_start"] == seed_start for row in rows)
        assert (folder / out / "report.html").is_file() and "report.html" in printed
    return check


def compared(markdown: str | None = None) -> Callable[[Path, str], None]:
    def check(folder: Path, printed: str) -> None:
        assert re.search(r"\b0 worse\b", printed) and "same" in printed, printed[-2000:]
        if markdown:
            assert "same" in (folder / markdown).read_text()
    return check


def baseline_saved(folder: Path, printed: str) -> None:
    baseline = json.loads((folder / "baseline.json").read_text())
    assert baseline["format"] == "cmbench-baseline/1" and len(baseline["rows"]) == 3
    toy_run("reports/main", 0, count=3)(folder, printed)


def baseline_reported(folder: Path, printed: str) -> None:
    toy_run("reports/pr", 0, count=3)(folder, printed)
    assert (folder / "reports/pr/baseline.json").is_file()
    assert "Regression vs baseline" in (folder / "reports/pr/report.html").read_text()


def weights_fetched(folder: Path, printed: str) -> None:
    fetched = folder / "torch_home" / "hub" / "checkpoints" / weights_module.INCEPTION_WEIGHTS.file_name
    assert fetched.is_file() and str(fetched) in printed


def reference_fetched(folder: Path, printed: str) -> None:
    assert (folder / "reference_stats" / "official" / "cifar10-32x32.npz").is_file()


def paper_row_run(folder: Path, printed: str) -> None:
    (row,) = rows_of(folder / "reports/edm_cifar10/results.jsonl")
    assert row["row_id"] == "cond.heun.nfe1" and row["profile"] == "edm" and np.isfinite(row["fid"])
    assert row["checkpoint_sha256"] == sha256_file(folder.parent / "checkpoints" / "edm-cifar10-32x32-cond-vp.pkl")
    html = (folder / "reports/edm_cifar10/report.html").read_text()
    assert "Measured vs published" in html


def schedule_tuned(folder: Path, printed: str) -> None:
    schedule = json.loads((folder / "reports/toy/schedules/cd_cm_multistep.json").read_text())
    assert schedule["format"] == "cmbench-schedule/1"
    assert [entry["nfe"] for entry in schedule["schedules"]] == [1, 2, 3]
    assert all(len(entry["sigmas"]) == entry["nfe"] + 1 for entry in schedule["schedules"])
    assert "cd_cm_multistep.json" in printed


def scored(name: str, profile: str, quantisation: str, columns: tuple[str, ...]) -> Callable[[Path, str], None]:
    def check(folder: Path, printed: str) -> None:
        row = next(row for row in rows_of(folder / "reports/score/results.jsonl") if row["model"] == name)
        assert row["profile"] == profile and row["quantisation"] == quantisation and row["status"] == "ok"
        for column in columns:
            assert np.isfinite(row[column]), column
    return check


# --- many processes: torchrun launches and array jobs -----------------------------------------------

SCALE_SMALL = (*TOY_SMALL, "--threads", "1", "--set", "batch_size=32", "--set",
               "runs=[{model: edm, sampler: heun, nfe: [9]},"
               " {model: cd, sampler: cm_multistep, nfe: [1, 2], schedule: schedules/toy-cd.json}]")
"""Three of the toy suite's rows at 64 samples in batches of 32: two work units per row, so each of
two processes makes one. One thread per process, as torchrun gives each of several (the same
thread count everywhere, so every number can be compared bit for bit)."""

METRIC_COLUMNS = {column for metric in METRICS.values() for column in metric.columns}


def metric_values(row: dict) -> dict:
    """What a row measured: its id, fingerprint, NFE and every metric value with its standard error."""
    return {key: value for key, value in row.items()
            if key in ("row_id", "fingerprint", "nfe") or key.removesuffix("_se") in METRIC_COLUMNS}


def one_process_rows(folder: Path) -> list[dict]:
    """The rows one process makes at SCALE_SMALL (run once per scenario, beside the working folder)."""
    out = folder.parent / "one-process"
    if not (out / "results.jsonl").is_file():
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(["run", "toy", "--out", str(out), *SCALE_SMALL, "--quiet"]) == 0
    return rows_of(out / "results.jsonl")


def auto_processes() -> int:
    """How many processes torchrun's ``--nproc_per_node auto`` starts on this machine: one per
    accelerator, else one per CPU core this process may use (torch.distributed.run's rule)."""
    if torch.accelerator.is_available():
        return torch.accelerator.device_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def node_processes() -> int:
    """The processes the one-node line starts here: ``auto``'s, at most 2 (see :func:`one_node`)."""
    return min(auto_processes(), 2)


def same_as_one_process(out: str, world_size: Callable[[], int]) -> Callable[[Path, str], None]:
    """Every row measured as one process measures it (bit for bit), made by ``world_size()`` processes."""
    def check(folder: Path, printed: str) -> None:
        rows, size = rows_of(folder / out / "results.jsonl"), world_size()
        assert [metric_values(row) for row in rows] == [metric_values(row) for row in one_process_rows(folder)]
        assert all(np.isfinite(row["fid"]) and row["status"] == "ok" for row in rows)
        assert {row["world_size"] for row in rows} == {size}
        assert json.loads((folder / out / "run.json").read_text())["world_size"] == size
        assert (folder / out / "report.html").is_file() and "report.html" in printed
    return check


def identical(folder: Path, printed: str) -> None:
    """`cmbench compare` of a launch with one process: no verdict but "same", no difference but 0."""
    assert re.search(r"\b0 worse, \d+ same, 0 better\b", printed), printed[-2000:]
    table = [line.split() for line in printed.splitlines() if line.endswith(" same")]
    assert table and all("+0" in words for words in table), printed[-2000:]


def shards_stored(folder: Path, printed: str) -> None:
    """Both array tasks stored their halves of every row (two pieces each) and scored nothing."""
    assert "shard 0/2" in printed and "shard 1/2" in printed
    pieces = sorted(path.name for path in (folder / "reports/toy/shards").glob("*/*/*.npz"))
    assert pieces == sorted(["000000000-000000032.npz", "000000032-000000064.npz"] * 3)
    assert not (folder / "reports/toy/results.jsonl").exists()


def merged(folder: Path, printed: str) -> None:
    same_as_one_process("reports/toy", lambda: 1)(folder, printed)
    assert [row["shards_made"] for row in rows_of(folder / "reports/toy/results.jsonl")] == [0, 0, 0]
    assert not (folder / "reports/toy/shards").exists()  # deleted once the rows are stored


def fresh(out: str) -> Callable[["World"], None]:
    """The README block's launches are alternatives that write the same folder; each of them
    starts here from an empty one, as on a cluster of its own."""
    def empty(world: "World") -> None:
        shutil.rmtree(world.folder / out, ignore_errors=True)
    return empty


def torchrun_executable() -> list[str]:
    """The ``torchrun`` beside this interpreter, else the module it runs."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def with_option(words: Sequence[str], option: str, value: str) -> list[str]:
    """``words`` with ``option``'s value replaced (the option is followed by its value)."""
    words = list(words)
    words[words.index(option) + 1] = value
    return words


def together(commands: Sequence[Sequence[str]], folder: Path, envs: Sequence[dict[str, str]]) -> Ran:
    """Start the commands side by side (in ``folder``, each with its environment) and wait for all:
    the first non-zero exit status (else 0), their standard outputs and errors joined."""
    procs = [subprocess.Popen(list(command), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for command, env in zip(commands, envs)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [proc.returncode for proc in procs]
    return (next((code for code in codes if code), 0), "".join(out for out, _ in outputs),
            "".join(err for _, err in outputs))


def one_node(words: list[str], world: "World") -> Ran:
    """A one-node launch as written (``--standalone`` picks a free port), where ``auto`` means at
    most 2 processes, as on this project's 2-core machines; on a bigger machine 2 in its place,
    to keep the test short. Launcher variables are cleared, one thread per process."""
    if auto_processes() > 2:
        words = with_option(words, "--nproc_per_node", "2")
    return together([[*torchrun_executable(), *words[1:]]], world.folder, [clean_env()])


def several_nodes(words: list[str], world: "World") -> Ran:
    """A multi-node line as ``--nnodes`` torchrun agents side by side on this machine, one process
    each (2 nodes × ``auto`` would be 4 processes on 2 cores): HOST is 127.0.0.1 and the port a free
    one. The agents meet through the c10d rendezvous as nodes do: the first to bind the endpoint
    hosts it, the other joins as a client."""
    words = with_option(words, "--nproc_per_node", "1")
    words = [word.replace("HOST:29500", f"127.0.0.1:{free_port()}") for word in words]
    nodes = int(words[words.index("--nnodes") + 1])
    command = [*torchrun_executable(), *words[1:]]
    return together([command] * nodes, world.folder, [clean_env()] * nodes)


def array_jobs(count: int) -> Callable[[list[str], "World"], Ran]:
    """The line as the ``count`` tasks of a Slurm array (``--array=0-{count - 1}``), one after the
    other in this process, each with its ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` set
    and the ``$VARIABLES`` expanded as the shell expands them. (Shard jobs side by side, sharing the
    folder's lock, are tests/test_scale_out.py's; here a process each would cost a torch import.)"""
    def launch(words: list[str], world: "World") -> Ran:
        printed, errors, codes = io.StringIO(), io.StringIO(), []
        for index in range(count):
            world.monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(index))
            world.monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", str(count))
            with redirect_stdout(printed), redirect_stderr(errors):
                codes.append(main([string.Template(word).substitute(os.environ) for word in words[1:]]))
        return next((code for code in codes if code), 0), printed.getvalue(), errors.getvalue()
    return launch


# --- the outside world the commands expect -------------------------------------------------------

class World:
    """The working folder, the Inception weights and what the download commands can reach."""

    def __init__(self, folder: Path, weights: Path, monkeypatch: pytest.MonkeyPatch):
        self.folder, self.weights, self.monkeypatch = folder, weights, monkeypatch
        self.served: dict[str, Path] = {}

    def serve(self, url: str, path: Path) -> None:
        self.served[url] = path

    def urlopen(self, url, *args, **kwargs):
        url = getattr(url, "full_url", url)
        if url not in self.served:
            raise OSError(f"test_readme: no network; {url} is not served")
        response = io.BytesIO(self.served[url].read_bytes())
        response.headers = {"Content-Length": str(self.served[url].stat().st_size)}
        return response

    def use_weights(self) -> None:
        """The Inception weights are in place (for commands not preceded by `cmbench weights fetch`)."""
        self.monkeypatch.setenv("CMBENCH_INCEPTION_WEIGHTS", str(self.weights))


def random_images(seed: int, count: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def inception_statistics(images: np.ndarray, weights: Path, layers=("pool",)) -> dict[str, np.ndarray]:
    features = InceptionExtractor(weights).extract(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                                   list(layers))
    out = {}
    for layer, suffix in (("pool", ""), ("spatial", "_s")):
        if layer in layers:
            out[f"mu{suffix}"], out[f"sigma{suffix}"] = feature_statistics(features[layer].numpy())
    return out


def serve_weights(world: World) -> None:
    world.serve(weights_module.INCEPTION_WEIGHTS.url, world.weights)


def serve_edm_cifar10_reference(world: World) -> None:
    from cmbench.metrics.reference_registry import load_registry

    published = world.folder.parent / "published" / "cifar10-32x32.npz"
    published.parent.mkdir(exist_ok=True)
    np.savez(published, **inception_statistics(random_images(1, 5, 32), world.weights))
    world.serve(load_registry()["edm-cifar10-32"].url, published)


def edm_cifar10_checkpoint(world: World) -> None:
    """NVlabs' conditional CIFAR-10 snapshot, at its official size with random weights."""
    from test_paper_suites import write_checkpoint

    folder = world.folder.parent / "checkpoints"
    folder.mkdir(exist_ok=True)
    suite = load_suite(ROOT / "suites" / "edm_cifar10.yaml")
    write_checkpoint(suite.models["cond"].options, folder)


def adm_files(world: World) -> None:
    world.use_weights()
    np.savez("samples_50000x64x64x3.npz", arr_0=random_images(0, 6, 64))  # the README's file names
    reference = random_images(1, 6, 64)
    np.savez("VIRTUAL_imagenet64_labeled.npz", arr_0=reference,
             **inception_statistics(reference, world.weights, ("pool", "spatial")))


def edm_png_folder(world: World) -> None:
    world.use_weights()
    for seed, image in enumerate(random_images(2, 6, 32)):  # EDM's generate.py layout
        path = Path("my-samples") / "000000" / f"{seed:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    np.savez("cifar10-32x32.npz", **inception_statistics(random_images(3, 6, 32), world.weights))


PLACEHOLDERS = {"/path/to/checkpoints": lambda world: str(world.folder.parent / "checkpoints")}

COVERED: dict[str, Cover] = {
    # Two commands
    "cmbench run": Cover(TOY_SMALL, toy_run("reports/toy", 0)),
    "cmbench run --out reports/toy-seeds2 --set seed_start=100000": Cover(TOY_SMALL, toy_run("reports/toy-seeds2", 100000)),
    "cmbench compare reports/toy-seeds2 reports/toy": Cover((), compared()),
    # Reproduce a paper table
    "cmbench weights fetch": Cover(("--quiet",), weights_fetched, serve_weights),
    "cmbench stats fetch edm-cifar10-32": Cover(("--quiet",), reference_fetched, serve_edm_cifar10_reference),
    "cmbench run edm_cifar10 --set checkpoints_dir=/path/to/checkpoints": Cover(PAPER_SMALL, paper_row_run,
                                                                                 edm_cifar10_checkpoint),
    # Regression-test a checkpoint in CI
    "cmbench run toy --out reports/main --save-baseline baseline.json": Cover(CI_SMALL, baseline_saved),
    "cmbench run toy --out reports/pr --baseline baseline.json": Cover(CI_SMALL, baseline_reported),
    "cmbench compare reports/pr baseline.json --markdown reports/pr/compare.md": Cover((), compared("reports/pr/compare.md")),
    # Tune time points
    "cmbench tune toy --model cd --sampler cm_multistep --max-nfe 3 --samples 1000": Cover(("--samples", "64", "--validation-samples", "64"), schedule_tuned),
    # Evaluate your own model or a folder of samples
    "cmbench score samples_50000x64x64x3.npz --reference VIRTUAL_imagenet64_labeled.npz --profile adm": Cover(
        SCORE_SMALL, scored("samples_50000x64x64x3", "adm", "truncate", ("fid", "sfid", "is_mean", "precision", "recall")), adm_files),
    "cmbench score my-samples/ --reference cifar10-32x32.npz --profile edm": Cover(
        SCORE_SMALL, scored("my-samples", "edm", "round", ("fid",)), edm_png_folder),
    # Zero-shot editing
    "cmbench run toy_edit": Cover(EDIT_SMALL, edited),
    # Many GPUs and nodes
    "torchrun --standalone --nproc_per_node auto -m cmbench run toy": Cover(
        SCALE_SMALL, same_as_one_process("reports/toy", node_processes), launch=one_node),
    "torchrun --nnodes 2 --nproc_per_node auto --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m cmbench run toy": Cover(
        SCALE_SMALL, same_as_one_process("reports/toy", lambda: 2), fresh("reports/toy"), launch=several_nodes),
    "cmbench run toy --out reports/toy-one": Cover(SCALE_SMALL, same_as_one_process("reports/toy-one", lambda: 1)),
    "cmbench compare reports/toy reports/toy-one": Cover((), identical),
    "cmbench run toy --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT": Cover(
        SCALE_SMALL, shards_stored, fresh("reports/toy"), launch=array_jobs(2)),
    "cmbench run toy --merge": Cover(SCALE_SMALL, merged),
}


def low_rank_trace_sqrt(sigma1: np.ndarray, sigma2: np.ndarray, rank: int = 32) -> float:
    """tr √(Σ₁Σ₂) for a Σ₁ of rank below ``rank``, exactly: with Σ₁ = Q S Qᵀ on an orthonormal basis Q
    of its range, the nonzero eigenvalues of Σ₁Σ₂ are those of S^½ QᵀΣ₂Q S^½ (rank × rank). A Σ₁
    the basis does not capture goes to the full eigen-decomposition instead."""
    q, _ = np.linalg.qr(sigma1 @ np.random.default_rng(0).standard_normal((sigma1.shape[0], rank)))
    s = q.T @ sigma1 @ q
    if np.abs(q @ s @ q.T - sigma1).max() > 1e-9 * max(np.abs(sigma1).max(), 1e-300):
        return fid_module._trace_sqrt_eigh(sigma1, sigma2)
    w, v = np.linalg.eigh((s + s.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root @ (q.T @ sigma2 @ q) @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def test_the_low_rank_square_root_is_the_full_one():
    """The stand-in the scenarios use for sqrtm, on covariances of 6 points in 300-d and of full rank."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 300)), rng.standard_normal((6, 300))
    sigma1, sigma2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # the full decomposition adds √ of ~300 round-off eigenvalues (each ~1e-8): agreement to 1e-6
    assert low_rank_trace_sqrt(sigma1, sigma2) == pytest.approx(fid_module._trace_sqrt_eigh(sigma1, sigma2), rel=1e-6)
    full = np.cov(rng.standard_normal((400, 50)), rowvar=False)  # full rank 50 > 32: the fallback
    assert low_rank_trace_sqrt(full, sigma2[:50, :50]) == pytest.approx(
        fid_module._trace_sqrt_eigh(full, sigma2[:50, :50]), rel=1e-10)


# --- the tests ------------------------------------------------------------------------------------

def test_every_readme_command_is_covered():
    shown = [command for scenario in readme_scenarios() for command in scenario]
    missing = [command for command in shown if command not in COVERED]
    assert not missing, f"README commands no test runs (add them to COVERED in {Path(__file__).name}): {missing}"
    stale = sorted(set(COVERED) - set(shown))
    assert not stale, f"COVERED lists commands the README no longer shows: {stale}"


@pytest.fixture
def world(tmp_path, monkeypatch, inception_weights) -> World:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    # Nothing found in the user's caches, nothing fetched from the network.
    monkeypatch.setenv("TORCH_HOME", str(folder / "torch_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
    monkeypatch.delenv("CMBENCH_INCEPTION_WEIGHTS", raising=False)
    world = World(folder, inception_weights, monkeypatch)
    monkeypatch.setattr("urllib.request.urlopen", world.urlopen)
    # The random weights stand in for the official file: they must pass its sha256 check.
    digest = sha256_file(inception_weights)
    stand_in = replace(weights_module.INCEPTION_WEIGHTS, sha256=digest, size=inception_weights.stat().st_size)
    monkeypatch.setitem(weights_module.WEIGHTS, "inception", stand_in)  # what `cmbench weights fetch` finds and fetches
    monkeypatch.setitem(InceptionExtractor.__init__.__kwdefaults__, "expected_sha256", digest)
    # The EDM and ADM profiles take FID's square root with scipy's sqrtm: 17 s for each 2048² matrix
    # on one core, where these covariances of a few images have rank 5.
    monkeypatch.setattr(fid_module, "_trace_sqrt_sqrtm", low_rank_trace_sqrt)
    return world


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # a few samples in 2048-d
@pytest.mark.parametrize("scenario", readme_scenarios(), ids=lambda scenario: scenario[0])
def test_readme_commands_run_at_small_size(scenario, world, capsys):
    for command in scenario:
        cover = COVERED.get(command)
        if cover is None:
            pytest.fail(f"README command not covered: {command}")
        if cover.inputs is not None:
            cover.inputs(world)
        words = shlex.split(command)
        for placeholder, value in PLACEHOLDERS.items():
            words = [word.replace(placeholder, value(world)) for word in words]
        if cover.launch is None:
            code = main([*words[1:], *cover.small])
            printed, errors = capsys.readouterr()
        else:
            code, printed, errors = cover.launch([*words, *cover.small], world)
        assert code == 0, f"{command}: exit status {code}\n{printed[-3000:]}\n{errors[-3000:]}"
        cover.check(world.folder, printed)


def test_readme_api_example_runs(monkeypatch, capsys):
    """The README's Python example, as written, from the repository root."""
    block = README.read_text().split("<!-- api-example -->")[1].split("<!-- /api-example -->")[0]
    code = block.split("```python")[1].split("```")[0]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    shown = capsys.readouterr().out
    assert "model.cm_multistep.nfe1" in shown and "model.cm_multistep.nfe2" in shown


def test_readme_keeps_the_test_command_ci_runs():
    """`.ci/run` extracts the block between the test-command markers; it must stay a single command."""
    block = README.read_text().split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    (info, lines), = fenced_blocks(block)
    assert info == "bash" and lines == [
        'python3 -m venv .venv && .venv/bin/pip install -q "torch==2.13.0" -e ".[test]" && .venv/bin/python -m pytest -q']


def test_readme_is_a_front_door():
    assert README.stat().st_size < 12_000, "the README is the front door; the reference lives in docs/"
    for marker in ("sample-output", "threads-figures"):
        assert f"<!-- {marker} -->" in README.read_text() and f"<!-- /{marker} -->" in README.read_text()


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, backticks and other punctuation dropped,
    spaces to hyphens, a repeated anchor numbered (-1, -2, ...)."""
    anchors, seen, fence = set(), {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = page.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            if resolved not in PENDING_FILES:
                broken.append(f"{target}: no file {resolved.relative_to(ROOT)}")
            continue
        if anchor and anchor not in heading_anchors(resolved.read_text()):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_report_picture_exists():
    for path in PENDING_FILES:
        if not path.exists():
            pytest.skip(f"{path.relative_to(ROOT)} is not there yet (the README links to it)")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
