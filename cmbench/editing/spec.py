"""The suite's ``editing:`` block: real images, named tasks, and the runs that edit them.

    editing:
      data: toy:test                  # an ADM-style .npz (arr_0), an image folder or a toy split
      num_images: 297                 # the first so many (default: all)
      lpips: {net: alex, weights: DIR} # LPIPS (optional; the files are yours, never downloaded)
      tasks:
        box: {task: inpainting, mask: box, size: 0.5}
        sr4: {task: superres, factor: 4}
        colorization: {}              # a task named after its kind takes its defaults
      runs:
        - {model: cd, sampler: cm_multistep, nfe: [1, 2, 4], tasks: [box, sr4]}

Each run gives one row per task (default: every task) and NFE, with id
``<task>.<model>.<sampler or name>.nfe<N>``; image i of the data is edited with seed
``seed_start + i``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..samplers import SAMPLERS, editing_samplers
from ..validate import Checker
from .tasks import TASK_KINDS, EditTask, make_task

EDITING_KEYS = ("data", "num_images", "lpips", "tasks", "runs")
LPIPS_NETS = ("alex", "vgg")


@dataclass(frozen=True)
class Editing:
    """The validated ``editing:`` block (empty: the suite edits nothing)."""

    data: str = ""
    num_images: int | None = None
    tasks: dict[str, EditTask] = field(default_factory=dict)
    lpips: dict[str, str] = field(default_factory=dict)
    rows: list = field(default_factory=list)

    def config(self, task: str) -> dict[str, Any]:
        """What an editing row's numbers depend on beyond a generation row's (for its fingerprint)."""
        spec = self.tasks[task]
        return {"task": spec.kind, "params": spec.params, "data": self.data, "num_images": self.num_images,
                "lpips": self.lpips.get("net")}


def parse_editing(c: Checker, raw: Any, parse_runs: Callable[..., list], taken: set[str]) -> Editing:
    """The ``editing:`` block; ``parse_runs`` parses its runs as the suite's own (models, samplers,
    NFE, options, schedules); ``taken``: the generation rows' ids, which editing rows may not reuse."""
    if raw is None:
        return Editing()
    raw = c.mapping(raw, "editing")
    c.keys(raw, "editing", ("data", "tasks", "runs"), EDITING_KEYS)
    tasks = _parse_tasks(c, raw["tasks"])
    runs = c.sequence(raw["runs"], "editing.runs")
    rows = []
    for i, run in enumerate(runs):
        path = f"editing.runs[{i}]"
        run = dict(c.mapping(run, path))
        names = [c.choice(t, f"{path}.tasks[{j}]", tasks) for j, t in enumerate(c.sequence(run.pop("tasks", list(tasks)),
                                                                                           f"{path}.tasks"))]
        for key in ("profiles", "paper"):
            if key in run:
                raise c.fail(f"{path}.{key}", "editing runs are scored under the suite's first profile and have no "
                                              "published numbers; leave it out")
        sampler = SAMPLERS.get(run.get("sampler")) if isinstance(run.get("sampler"), str) else None
        if sampler is not None and not sampler.edits:
            raise c.fail(f"{path}.sampler", f"sampler {sampler.name!r} has no replacement step; editing samplers: "
                                            f"{', '.join(editing_samplers())}")
        for row in parse_runs(c, [run], "editing.runs", i):
            for name in names:
                if tasks[name].spec.start_sigma and (row.schedule or row.options.get("time_points")):
                    raise c.fail(f"{path}.tasks", f"task {name} ({tasks[name].kind}) starts its chain at its own σ on "
                                                  "a Karras grid from there; give time points only to runs of other tasks")
                rows.append(replace(row, row_id=f"{name}.{row.row_id}", task=name))
    for row in rows:
        if row.row_id in taken:
            raise c.fail("editing.tasks", f"editing row {row.row_id} has the id of a generation row; rename the task")
    seen: set[str] = set()
    for row in rows:
        if row.row_id in seen:
            raise c.fail("editing.runs", f"editing row {row.row_id} is defined twice; give one run a distinct 'name'")
        seen.add(row.row_id)
    num_images = c.integer(raw["num_images"], "editing.num_images", minimum=2) if "num_images" in raw else None
    return Editing(c.string(raw["data"], "editing.data"), num_images, tasks, _parse_lpips(c, raw.get("lpips")), rows)


def _parse_tasks(c: Checker, raw: Any) -> dict[str, EditTask]:
    raw = c.mapping(raw, "editing.tasks")
    if not raw:
        raise c.fail("editing.tasks", f"name at least one task; kinds: {', '.join(TASK_KINDS)}")
    tasks = {}
    for name, params in raw.items():
        path = f"editing.tasks.{name}"
        c.name(str(name), path)
        params = dict(c.mapping(params or {}, path))
        kind = params.pop("task", name)
        if kind not in TASK_KINDS:
            raise c.fail(f"{path}.task", f"unknown task {kind!r}; accepted: {', '.join(TASK_KINDS)} (a task named "
                                         "after its kind may leave task: out)")
        try:
            tasks[str(name)] = make_task(str(name), kind, params)
        except ValueError as err:
            raise c.fail(path, str(err)) from None
    return tasks


def _parse_lpips(c: Checker, raw: Any) -> dict[str, str]:
    """``lpips: {net: alex | vgg, weights: file or folder}``; absent: no LPIPS column."""
    if raw is None:
        return {}
    raw = c.mapping(raw, "editing.lpips")
    c.keys(raw, "editing.lpips", (), ("net", "weights"))
    spec = {"net": c.choice(raw.get("net", "alex"), "editing.lpips.net", LPIPS_NETS)}
    if "weights" in raw:
        spec["weights"] = c.string(raw["weights"], "editing.lpips.weights")
    return spec
