"""A suite's editing rows in a run: checked before anything is sampled, then each edited, scored
and recorded as a result row beside the generation rows (``kind: edit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..atomic import atomic_write_bytes
from ..batch_size import unsampled_batch_size
from ..generate import Scoring, score_features
from ..metrics import layers_for
from ..metrics.lpips import check_lpips_size, load_lpips, lpips_convention, lpips_distances, lpips_weights_identity
from ..names import inside
from ..report import image_grid_png
from ..rows import result_row
from ..run_context import RunContext
from ..samplers import get_sampler
from ..stats import ImageSource, open_images
from ..suite import Row, Suite
from .data import editing_data_spec
from .rows import PerImage, conventions, edit_images, per_image_columns

EDIT_KIND = "edit"


@dataclass(frozen=True)
class EditingInputs:
    """What every editing row of a run reads: the real images (by channel count) and LPIPS."""

    data: dict[int, ImageSource]
    lpips: PerImage | None
    lpips_identity: dict[str, Any] | None


def prepare_editing(ctx: RunContext, rows: list[Row]) -> EditingInputs:
    """Open the data and LPIPS weights and check every row's task, model and images, raising a
    ValueError that names the suite and key before any sampling."""
    suite = ctx.suite
    where = f"{suite.source}: editing"
    data: dict[int, ImageSource] = {}
    for row in rows:
        model = ctx.model(row.model)
        channels, size = model.image_shape[0], tuple(model.image_shape[1:])
        if channels not in data:
            data[channels] = _open_data(suite, channels)
        images = data[channels]
        if tuple(images.shape[1:]) != size:
            raise ValueError(f"{where}.data: {images.description} holds {images.shape[1]}×{images.shape[2]} images but "
                             f"models.{row.model} makes {size[0]}×{size[1]}; give data of the model's resolution")
        task = suite.editing.tasks[row.task]
        try:
            task.check(model.image_shape, model.noise_range)
        except ValueError as err:
            raise ValueError(f"{where}.tasks.{row.task}: {err} (row {row.row_id}, models.{row.model})") from None
    lpips, identity = _lpips(ctx, {ctx.model(row.model).image_shape for row in rows}) if rows else (None, None)
    return EditingInputs(data, lpips, identity)


def _open_data(suite: Suite, channels: int) -> ImageSource:
    try:
        source = open_images(editing_data_spec(suite), channels=channels, limit=suite.editing.num_images)
    except (OSError, ValueError) as err:
        raise ValueError(f"{suite.source}: editing.data: {err}") from None
    if suite.editing.num_images and source.count < suite.editing.num_images:
        raise ValueError(f"{suite.source}: editing.num_images is {suite.editing.num_images} but {source.description} "
                         f"holds {source.count} images")
    return source


def _lpips(ctx: RunContext, shapes: set[tuple[int, ...]]) -> tuple[PerImage | None, dict[str, Any] | None]:
    """LPIPS per image (None when the suite asks for none), after checking the images are large
    enough for its network, and its identity (network, files and their sha256) for the rows."""
    spec = ctx.suite.editing.lpips
    if not spec:
        return None, None
    for shape in shapes:
        try:
            check_lpips_size(spec["net"], shape[1], shape[2])
        except ValueError as err:
            raise ValueError(f"{ctx.suite.source}: editing.lpips: {err}") from None
    folder = ctx.suite.resolve(spec["weights"]) if "weights" in spec else None
    try:
        net = load_lpips(spec["net"], backbone=folder, heads=folder).to(ctx.device)
    except (OSError, ValueError) as err:
        raise ValueError(f"{ctx.suite.source}: editing.lpips: {err}") from None
    identity = {**lpips_convention(spec["net"]), **lpips_weights_identity(net.weights)}
    batch = unsampled_batch_size(ctx.suite.batch_size)
    return (lambda out, truth: lpips_distances(out, truth, net, batch_size=batch, device=ctx.device)), identity


def evaluate_edit_row(ctx: RunContext, row: Row, inputs: EditingInputs, progress: bool | None) -> dict[str, Any]:
    """The result row of one editing row."""
    started = time.perf_counter()
    suite, model = ctx.suite, ctx.model(row.model)
    task = suite.editing.tasks[row.task]
    sampler = get_sampler(row.sampler)
    sigmas = sampler.schedule(task.noise_range(model.noise_range), row.nfe, row.options)
    data = inputs.data[model.image_shape[0]]
    edited = edit_images(
        model, sampler, sigmas, row.options, task, data, suite.seed_start,
        batch_size=ctx.batch_size(row.model, row.sampler, row.nfe, row.options, data.count, main_only=True),
        device=ctx.device, quantisation=suite.quantisation, extractor=ctx.extractor,
        layers=layers_for(suite.metrics), lpips=inputs.lpips, keep=suite.grid_images, progress=progress,
        desc=row.row_id,
    )
    bootstrap, seed = suite.uncertainty["bootstrap"], suite.uncertainty["seed"]
    metrics = score_features(Scoring(suite.quantisation, ctx.extractor, suite.metrics, suite.metric_options,
                                     ctx.reference()), edited.features, bootstrap=bootstrap, bootstrap_seed=seed,
                             device=ctx.device) if suite.metrics else {}
    grids = _write_grids(ctx, row, edited, scale=max(1, 32 // model.image_shape[-1]))
    result = result_row(ctx, row, model, metrics, sigmas, grids["grid"], edited.nfe, None)
    result.update(
        **edit_identity(suite, row), edit_algorithm=edit_algorithm(task, sampler.name),
        edit_data=data.description, num_samples=data.count, **per_image_columns(edited, resamples=bootstrap, seed=seed),
        seconds_per_sample=edited.seconds / data.count, wall_seconds=round(time.perf_counter() - started, 3),
        grid_truth=grids["grid_truth"], grid_degraded=grids["grid_degraded"],
        conventions=conventions(task, model.image_shape, inputs.lpips_identity),
    )
    return result


def edit_identity(suite: Suite, row: Row) -> dict[str, Any]:
    """What an editing row is, failed or not: its kind, task and the task's kind and parameters."""
    task = suite.editing.tasks[row.task]
    return {"kind": EDIT_KIND, "task": row.task, "task_kind": task.kind, "task_params": task.params}


def edit_algorithm(task, sampler: str) -> str:
    """How the row edits: the sampler's replacement chain, or (a task that holds nothing) the sampler
    run from the task's start."""
    spec = get_sampler(sampler)
    if task.spec.start_sigma:
        return f"{spec.summary}, from the task's σ = {task.params['sigma']:g} (nothing held fixed)"
    return spec.edits


def _write_grids(ctx: RunContext, row: Row, edited, scale: int) -> dict[str, str | None]:
    """The row's outputs and its task's ground truth and degraded inputs (the same for every row of
    the task: same images, same seeds) as PNG grids."""
    paths: dict[str, str | None] = {"grid": None, "grid_truth": None, "grid_degraded": None}
    if not len(edited.output):
        return paths
    for key, images, name in (("grid", edited.output, f"grids/{row.row_id}.png"),
                              ("grid_truth", edited.truth, f"grids/{row.task}.truth.png"),
                              ("grid_degraded", edited.shown, f"grids/{row.task}.degraded.png")):
        atomic_write_bytes(inside(ctx.out, name), image_grid_png(torch.as_tensor(images), scale=scale))
        paths[key] = name
    return paths
