"""Scale-out of ``cmbench run`` over torchrun ranks: samples/s, parallel efficiency and communication per row.

Every measurement is one fresh command into an empty output folder. World size 1 runs as a plain
``python -m cmbench run`` (the baseline of every efficiency) and, unless ``--no-torchrun-1``, also as
``torchrun --nproc_per_node 1`` (row ``1t``: what the launcher and gloo cost alone); world size W > 1
as ``torchrun --standalone --nproc_per_node W -m cmbench run`` (gloo). Device ``auto`` gives each
rank the GPU of its LOCAL_RANK where CUDA is present, else CPU processes; every process runs with
``--threads`` CPU threads (default 1). Repetitions go round the world sizes in turn, so a change in
the machine's load falls on all of them alike; the load average is printed at start and end.

Two times per run:

- whole: the command's wall time, including Python start, torch import, loading models and the
  reference, and writing the report: what a person waits for;
- rows: the sum of the rows' ``wall_seconds`` (sampling, features, gathering, scoring on rank 0):
  the work that scale-out divides. Rows sharing their samples (several profiles) count once.

Beside them, "sampler s": the rows' sampler seconds summed over ranks (``seconds_per_sample`` x
num_samples, median): constant over W when the sampling divides cleanly; the rows time less this
over W is what does not divide (scoring, gathering, start of each row).

samples/s = sample sets x num_samples / time (median over repetitions); efficiency at W = samples/s
at W / (W x samples/s at world size 1, plain). Communication: ``gathered_bytes`` of a row (mean over
rows), in MB and per image that rank 0 received from the other ranks.

Honest notes. Rank 0 scores every row alone (bootstrap included) and the ranks gather after every
round of work units, so the rows time cannot divide by W; a row's seeds are dealt out in work units
of whole batches (``cmbench.shards.work_units``), so ranks beyond the number of units stand idle
(printed as a warning: raise num_samples or lower batch_size). On CPU the ranks share the machine's
cores with each other and with anything else running. There are no peers to compare with:
torch-fidelity, clean-fid and pytorch-fid have no multi-GPU mode. The metric check at the end is a
correctness guard (every world size must score exactly what world size 1 scores), not a timing.

    python benchmarks/scaling.py --world-sizes 1,2 --num-samples 2000 --repeats 2
    python benchmarks/scaling.py --set "runs=[{model: cd, sampler: cm_multistep, nfe: [1, 2]}]"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cmbench.metrics import METRICS, se_column
from cmbench.shards import work_units

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                      "TORCHELASTIC_RUN_ID", "GROUP_RANK")
DEFAULT_SETS = ["likelihood=null"]  # NLL is not row work; give --set likelihood=... to time it in "whole"
_GPUS = "import torch; print(*[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], sep='\\n')"


def gpu_names() -> list[str]:
    """The GPUs torch sees, asked in a child process so that this one holds no CUDA context."""
    done = subprocess.run([sys.executable, "-c", _GPUS], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line]


def default_world_sizes(devices: int, gpu: bool) -> list[int]:
    """1, 2, then powers of two up to ``devices`` (GPUs, else cores); only 1 on a single GPU."""
    if gpu and devices < 2:
        return [1]
    sizes = [1, 2]
    while sizes[-1] * 2 <= devices:
        sizes.append(sizes[-1] * 2)
    return sizes


def command(launch: str, out: Path, args) -> list[str]:
    cmbench = ["run", args.suite, "--out", str(out), "--quiet", "--device", args.device, "--threads", str(args.threads)]
    for setting in DEFAULT_SETS + (args.set or []) + ([f"num_samples={args.num_samples}"] if args.num_samples else []):
        cmbench += ["--set", setting]
    if launch == "1":
        return [sys.executable, "-m", "cmbench", *cmbench]
    world = launch.rstrip("t")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", world, "-m", "cmbench",
            *cmbench]


def timed_run(argv: list[str], out: Path, threads: int, timeout: float) -> tuple[float, dict, list[dict]]:
    """(whole-command seconds, run.json, result rows) of one run; a failing command stops the benchmark."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES} | {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{' '.join(argv)} ran past --timeout {timeout:.0f} s") from None
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return seconds, json.loads((out / "run.json").read_text()), rows


def sample_sets(rows: list[dict]) -> dict[str, dict]:
    """One row per set of samples (rows of several profiles share theirs, and their wall_seconds)."""
    return {row["row_id"].split("@")[0]: row for row in rows}


def received_images(num_samples: int, batch_size: int, world: int) -> int:
    """Images rank 0 receives from the others for one row: the work units it does not make itself."""
    return sum(stop - first for i, (first, stop) in enumerate(work_units(num_samples, batch_size)) if i % world)


def metric_differences(rows: list[dict], baseline: list[dict]) -> list[str]:
    """Every metric value of ``rows`` that differs from the same row at world size 1 (empty: identical)."""
    base = {row["row_id"]: row for row in baseline}
    found = []
    for row in rows:
        columns = [c for m in row["config"]["metrics"] for c in METRICS[m].columns]
        for column in [*columns, *map(se_column, columns), "bpd", "bpd_stderr"]:
            a, b = row.get(column), base.get(row["row_id"], {}).get(column)
            if a != b:
                found.append(f"{row['row_id']} {column}: {b} -> {a}")
    return found + [f"{r} missing" for r in base.keys() - {row["row_id"] for row in rows}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?", default="toy", help="suite file or bundled name (default: toy)")
    parser.add_argument("--world-sizes", help="e.g. 1,2,4 (default: 1, 2, then powers of two up to the GPUs, else cores)")
    parser.add_argument("--no-torchrun-1", action="store_true", help="skip world size 1 under torchrun")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process (default: 1)")
    parser.add_argument("--num-samples", type=int, help="samples per row (default: the suite's)")
    parser.add_argument("--set", action="append", help="more suite overrides, after likelihood=null (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run counts as failed")
    args = parser.parse_args()
    gpus = gpu_names()
    if args.device == "auto":
        args.device = "cuda" if gpus else "cpu"
    devices = len(gpus) if args.device == "cuda" else (os.cpu_count() or 1)
    sizes = ([int(w) for w in args.world_sizes.split(",")] if args.world_sizes
             else default_world_sizes(devices, args.device == "cuda"))
    launches = ["1", *([] if args.no_torchrun_1 else ["1t"]), *(str(w) for w in sizes if w > 1)]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) "
          f"at start; GPUs: {', '.join(gpus) or 'none'}")
    print(f"device {args.device}, {args.threads} thread(s) per process; {args.repeats} repetition(s), round-robin")

    runs: dict[str, list[tuple[float, dict, list[dict]]]] = {launch: [] for launch in launches}
    for repeat in range(args.repeats):
        for launch in launches:
            folder = Path(tempfile.mkdtemp(prefix="cmbench-scaling-"))
            try:
                argv = command(launch, folder / "out", args)
                if repeat == 0:
                    shown = shlex.join(["python", *argv[1:]]).replace(str(folder / "out"), "OUT")
                    print(f"  {launch:>3}: {shown}", flush=True)
                runs[launch].append(timed_run(argv, folder / "out", args.threads, args.timeout))
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    info = runs["1"][0][1]
    num_samples, batch_size = info["num_samples"], info["batch_size"]
    sets = len(sample_sets(runs["1"][0][2]))
    units = len(work_units(num_samples, batch_size))
    print(f"\nworkload: suite {info['suite']}, {sets} sample set(s) x {num_samples} samples (batch {batch_size}, "
          f"{units} work unit(s) per row); whole = the command incl. process start and torch import; "
          f"rows = sum of rows' wall_seconds; samples/s and efficiency from medians; efficiency vs world size 1 "
          f"(plain python); 1t = world size 1 under torchrun")
    header = (f"{'W':>3} {'whole min':>9} {'median':>7} {'samples/s':>9} {'eff':>5}   {'rows min':>8} {'median':>7} "
              f"{'samples/s':>9} {'eff':>5} {'sampler s':>9}   {'MB/row':>7} {'B/image':>7}")
    print(header)
    base_whole = base_rows = None
    for launch in launches:
        world = int(launch.rstrip("t"))
        whole = [seconds for seconds, _, _ in runs[launch]]
        rows = [sum(r["wall_seconds"] for r in sample_sets(result).values()) for _, _, result in runs[launch]]
        sampler = statistics.median(sum(r["seconds_per_sample"] * num_samples for r in sample_sets(result).values())
                                    for _, _, result in runs[launch])
        rate_whole = sets * num_samples / statistics.median(whole)
        rate_rows = sets * num_samples / statistics.median(rows)
        base_whole, base_rows = base_whole or rate_whole, base_rows or rate_rows
        gathered = statistics.mean(r["gathered_bytes"] for r in sample_sets(runs[launch][0][2]).values())
        received = received_images(num_samples, batch_size, world)
        per_image = f"{gathered / received:7.0f}" if received else f"{'-':>7}"
        print(f"{launch:>3} {min(whole):9.2f} {statistics.median(whole):7.2f} {rate_whole:9.0f} "
              f"{rate_whole / (world * base_whole):5.2f}   {min(rows):8.2f} {statistics.median(rows):7.2f} "
              f"{rate_rows:9.0f} {rate_rows / (world * base_rows):5.2f} {sampler:9.2f}   {gathered / 1e6:7.3f} {per_image}")
        if units < world:
            print(f"     warning: {units} work unit(s) per row for {world} ranks: {world - units} rank(s) stand idle")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    print("\nmetric values vs world size 1 (correctness guard, every repetition):")
    baseline = runs["1"][0][2]
    for launch in launches:
        differences = [d for _, _, result in runs[launch] for d in metric_differences(result, baseline)]
        print(f"{launch:>3}: " + ("identical" if not differences else f"{len(differences)} difference(s):"))
        for difference in differences[:20]:
            print(f"       {difference}")


if __name__ == "__main__":
    main()
