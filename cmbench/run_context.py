"""What the rows and tune jobs of one run share (:class:`RunContext`): the output folder, the
device, models, the feature extractor, the hashes of the files the suite names, the reference
statistics, and under torchrun this process's place among the ranks."""

from __future__ import annotations

import json
import platform
from functools import partial
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from .atomic import atomic_write_text
from .batch_size import AUTO, resolve_batch_size
from .checkpoints import sha256_file
from .checkpoints.hashing import sha256_path
from .distributed import SINGLE, World
from .editing.data import REFERENCE_DATA
from .features import FeatureExtractor, build_extractor
from .generate import batch_probe
from .memory import check_fits
from .metrics import ReferenceStats, layers_for
from .models import ModelAdapter, build_model
from .models.external import code_sha256
from .nll import TOY_PREFIX
from .profiles import PROFILES
from .references import load_suite_reference, reference_path, reference_sha256
from .samplers import get_sampler
from .suite import Suite
from .threads import ThreadChoice
from .tuning.jobs import run_tune_job
from .zoo import resolve_checkpoint


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device ``name`` (auto, cpu, cuda) means; under torchrun "cuda" is the GPU of the
    process's ``local_rank`` (one GPU per process)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cuda":
        return torch.device(name)
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"local rank {local_rank} has no GPU of its own: this node shows "
                           f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node "
                           "(torchrun --nproc_per_node)")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def output_folder(suite: Suite, out_dir: str | Path | None = None) -> Path:
    """``out_dir`` if given, else the suite's ``output_dir``, else ``reports/<suite name>``."""
    if out_dir:
        return Path(out_dir)
    return Path(suite.output_dir) if suite.output_dir else Path("reports") / suite.name


class RunContext:
    """What the rows and tune jobs of one scoring share: the output folder, the device, models
    (built on first use), the feature extractor, file hashes and the reference statistics
    (loaded on first use; the primary context then writes ``run.json``).

    A suite scoring its rows under several profiles has one context per profile
    (:func:`run_contexts`), sharing models and extractors. Under torchrun (``world``) every rank
    has its context on its own device; only the main rank loads the reference and writes.
    """

    def __init__(self, suite: Suite, out_dir: str | Path | None, device: str | None, *,
                 models: dict | None = None, extractors: dict | None = None, profiles: tuple[str, ...] = (),
                 primary: bool = True, threads: ThreadChoice | None = None, world: World = SINGLE):
        """``models``: adapters already built (shared between profiles, or handed over in memory by
        :mod:`cmbench.api`); the others are built from the suite on first use."""
        self.suite, self.world = suite, world
        self.out = output_folder(suite, out_dir)
        if world.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device or suite.device, world.local_rank)
        self.models: dict[str, ModelAdapter] = {} if models is None else models
        for name in {suite.features.get("model"), suite.reference.get("model")} - {None}:
            self.model(name)
        self.extractors: dict[str, FeatureExtractor] = {} if extractors is None else extractors
        layers = layers_for(suite.metrics)
        key = json.dumps([suite.features, layers], sort_keys=True)
        if key not in self.extractors:
            self.extractors[key] = build_extractor(suite.features, self.models, base_dir=suite.base_dir,
                                                   layers=layers).to(self.device)
        self.extractor = self.extractors[key]
        self.extractor.check_layers(layers_for(suite.metrics))
        self.file_hashes = {**world.decide(suite_file_hashes, suite), "extractor": self.extractor.weights_sha256}
        self.reference_sha256 = self.file_hashes.get("reference") or reference_sha256(suite, self.extractor)
        self.profiles, self.primary, self.threads = profiles, primary, threads
        self._reference: list[ReferenceStats | None] = []
        self._feature_bytes: dict[tuple[int, ...], int] = {}  # one image's features, by image shape
        self._batch_sizes: dict[tuple[str, str], int] = {}  # by model and sampler

    def model(self, name: str) -> ModelAdapter:
        if name not in self.models:
            spec = self.suite.models[name]
            self.models[name] = build_model(spec.family, spec.options, self.suite.checkpoint_dir, str(self.device),
                                            name=name, base_dir=self.suite.base_dir)
        return self.models[name]

    def batch_size(self, model: str, sampler: str, nfe: int, options: dict, count: int, *,
                   main_only: bool = False) -> int:
        """The suite's ``batch_size`` for sampling ``count`` images of ``model`` with ``sampler`` (at
        ``nfe`` with ``options``): its number, or for ``auto`` the size chosen on the main rank, once
        per model and sampler (:mod:`cmbench.batch_size`). ``main_only``: called on the main rank
        alone (editing rows), so the choice is not shared."""
        if self.suite.batch_size != AUTO:
            return self.suite.batch_size
        if (model, sampler) not in self._batch_sizes:
            probe = None
            adapter = self.model(model)
            if self.device.type == "cuda" and not adapter.has("images"):
                chosen = get_sampler(sampler)
                views = [(self.suite.quantisation, self.extractor, layers_for(self.suite.metrics))]
                probe = batch_probe(adapter, chosen, chosen.schedule(adapter.noise_range, nfe, options), options, views,
                                    self.device)
            decide = resolve_batch_size if main_only else partial(self.world.decide, resolve_batch_size)
            self._batch_sizes[(model, sampler)] = decide(self.suite.batch_size, count, self.device, probe)
        return self._batch_sizes[(model, sampler)]

    def check_fits(self, what: str, count: int, model: ModelAdapter) -> None:
        """Refuse, before sampling, ``count`` images of ``model`` whose features cannot fit in memory
        (the size of one image's features is measured on one probe image)."""
        if model.image_shape not in self._feature_bytes:
            probe = torch.zeros((1, *model.image_shape), dtype=torch.uint8, device=self.device)
            try:
                with torch.no_grad():
                    features = self.extractor.extract(probe, sorted(layers_for(self.suite.metrics)))
            except (ValueError, RuntimeError) as err:
                source = getattr(model, "source", None)  # a stored sample set names its file
                images = source.description if source else f"{model.family} images of shape {list(model.image_shape)}"
                raise ValueError(f"{self.suite.source}: {images} do not suit the {self.extractor.name} extractor: "
                                 f"{err}") from None
            self._feature_bytes[model.image_shape] = sum(4 * value[0].numel() for value in features.values())
        check_fits(what, count, self._feature_bytes[model.image_shape], source=self.suite.source)

    def reference(self) -> ReferenceStats | None:
        if not self._reference:
            if "model" in self.suite.reference:
                self.check_fits("reference.num_images", self.suite.reference["num_images"],
                                self.model(self.suite.reference["model"]))
            stats, info = load_suite_reference(self.suite, self.models, self.extractor)
            if self.primary:
                _write_run_metadata(self.out, self.suite, self.device, self.extractor, info, self.profiles,
                                    self.threads, self.world)
            self._reference.append(stats)
        return self._reference[0]

    def load_reference(self) -> None:
        """Load the reference statistics now (on the main rank: ``world.decide(ctx.load_reference)``)."""
        self.reference()

    def tune(self, names, *, recompute_changed: bool, progress: bool | None, search: bool = True) -> dict[str, dict]:
        """The schedule documents of the named tune jobs, searched unless already in the folder
        (without ``search`` a missing one is an error). Under torchrun every rank gets them."""
        if not names:
            return {}
        if search:
            for name in names:
                job = self.suite.tune[name]
                self.check_fits(f"tune.{name}.num_samples", job.num_samples, self.model(job.model))
            self.world.decide(self.load_reference)  # a broken reference stops every rank at once
        reference = self.reference if self.world.main else lambda: None
        return {
            name: run_tune_job(self.suite, self.suite.tune[name], self.model(self.suite.tune[name].model),
                               self.extractor, reference, self.device, self.out, file_hashes=self.file_hashes,
                               batch_size=self._tune_batch_size(self.suite.tune[name]),
                               recompute_changed=recompute_changed, progress=progress, search=search,
                               world=self.world)
            for name in names
        }

    def _tune_batch_size(self, job) -> int:
        """A tune job's batch size (:meth:`batch_size`; ``auto`` probes the smallest NFE its sampler makes)."""
        sampler = get_sampler(job.sampler)
        nfe = next(n for n in range(1, 1 + job.max_nfe) if sampler.nfe_ok(n))
        count = max(job.num_samples, job.max_samples, job.validation_samples)
        return self.batch_size(job.model, job.sampler, nfe, job.options, count)


def run_contexts(suite: Suite, out_dir: str | Path | None, device: str | None,
                 models: dict[str, ModelAdapter] | None = None, threads: ThreadChoice | None = None,
                 world: World = SINGLE) -> dict[str, RunContext]:
    """One context per profile the rows are scored under ("" for a suite with one scoring); the
    first is primary (tune jobs, run.json). ``models`` are adapters built already (in memory);
    ``threads``, the run's thread choice, goes into run.json."""
    models = dict(models or {})
    if not suite.profiles:
        return {"": RunContext(suite, out_dir, device, models=models, threads=threads, world=world)}
    first = RunContext(suite.under(suite.profiles[0]), out_dir, device, models=models, profiles=suite.profiles,
                       threads=threads, world=world)
    contexts = {suite.profiles[0]: first}
    for name in suite.profiles[1:]:
        contexts[name] = RunContext(suite.under(name), first.out, device, models=first.models,
                                    extractors=first.extractors, primary=False, world=world)
    return contexts


def sample_set_path(suite: Suite, model: str) -> Path:
    """The file or folder of a stored sample set, which must exist."""
    path = suite.resolve(suite.models[model].options["path"])
    if not path.exists():
        raise FileNotFoundError(f"{suite.source}: models.{model}.path: {path} does not exist (relative paths start "
                                "at the suite's folder)")
    return path


def checkpoint_path(suite: Suite, model: str) -> Path:
    """The checkpoint file (a folder for ``format: diffusers``) of ``model``, which must exist."""
    options = suite.models[model].options
    path = resolve_checkpoint(options["checkpoint"], suite.checkpoint_dir)[0]
    if not (path.is_dir() if options.get("format") == "diffusers" else path.is_file()):
        where = (f"checkpoints_dir is {suite.checkpoints_dir!r}; change it with --set checkpoints_dir=DIR"
                 if suite.checkpoints_dir else "relative paths start at the suite's folder; or set checkpoints_dir")
        raise FileNotFoundError(f"{suite.source}: models.{model}.checkpoint: {path} does not exist ({where})")
    return path


def suite_file_hashes(suite: Suite) -> dict[str, str]:
    """sha256 of every checkpoint and sample set (by model name), of every entry point's module file
    ("<model>.code"), of the state dict of every model in memory, and of the reference and
    likelihood and editing data files."""
    hashes = {name: sha256_path(checkpoint_path(suite, name))
              for name, spec in suite.models.items() if "checkpoint" in spec.options}
    for name, spec in suite.models.items():
        if spec.family == "samples":
            hashes[name] = sha256_path(sample_set_path(suite, name))
        elif "entry_point" in spec.options:
            hashes[f"{name}.code"] = code_sha256(spec.options["entry_point"], suite.base_dir)
        elif spec.options.get("state_sha256"):
            hashes[name] = spec.options["state_sha256"]
    if "path" in suite.reference:
        hashes["reference"] = sha256_file(reference_path(suite))
    data = suite.likelihood.get("data", TOY_PREFIX)
    if not data.startswith(TOY_PREFIX):
        hashes["likelihood"] = sha256_file(suite.resolve(data))
    edited = suite.editing.data or TOY_PREFIX
    if edited == REFERENCE_DATA:
        hashes["editing"] = hashes.get("reference")
    elif not edited.startswith(TOY_PREFIX) and suite.resolve(edited).exists():  # a missing one: named before sampling
        hashes["editing"] = sha256_path(suite.resolve(edited))
    return hashes


def _profile_summary(name: str) -> str | None:
    return f"{name}: {PROFILES[name].protocol}" if name else None


def _write_run_metadata(out: Path, suite: Suite, device: torch.device, extractor, reference_info: dict,
                        profiles: tuple[str, ...] = (), threads: ThreadChoice | None = None,
                        world: World = SINGLE) -> None:
    """run.json; with several profiles, the scoring fields are the first profile's and each row
    records its own. ``threads``: how many CPU threads the run used and why (per rank)."""
    meta = {
        "suite": suite.name, "suite_file": suite.source, "suite_sha256": _file_sha256(suite.source),
        "description": suite.description,
        "cmbench_version": __version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": threads.as_dict() if threads else {"count": torch.get_num_threads()}, "world_size": world.size,
        "seed_start": suite.seed_start, "num_samples": suite.num_samples, "batch_size": suite.batch_size,
        "profile": "; ".join(_profile_summary(p) for p in profiles) if profiles else _profile_summary(suite.profile),
        "quantisation": suite.quantisation, "extractor": extractor.identity, "reference": reference_info,
        "metrics": list(suite.metrics), "metric_options": asdict(suite.metric_options),
        "uncertainty": suite.uncertainty, "regression": suite.regression or None, "started_at": utc_now(),
        "paper": {"source": suite.paper_source, "rows": {row.row_id: row.paper for row in suite.rows if row.paper},
                  **({"unreproducible": suite.unreproducible} if suite.unreproducible else {})},
    }
    atomic_write_text(out / "run.json", json.dumps(meta, indent=2, default=str) + "\n")


def _file_sha256(path: str) -> str | None:
    """The suite file's sha256 (None for a suite built in memory)."""
    return sha256_file(path) if Path(path).is_file() else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
