"""The Python API: what a notebook or a training loop imports (re-exported by ``cmbench``).

Everything here goes through the command line's own path: the arguments become a suite
(validated as a suite file is), :func:`cmbench.runner.run_suite` samples and scores it, and the
rows come back as a pandas DataFrame, the same rows ``results.jsonl`` holds. A model in memory
needs no checkpoint file; its row records ``model_source: memory`` and the sha256 of its state
dict as ``checkpoint_sha256``, so ``cmbench compare`` matches it with rows of the same weights.

    import cmbench
    net = MyConsistencyNet()                       # called as net(x_in, noise_labels, class_labels)
    rows = cmbench.evaluate(
        cmbench.Model(net, family="cd", image_shape=(1, 8, 8)),
        runs={"cm_multistep": [1, 2]}, profile="toy", reference="reference_stats/toy-digits-all.npz",
        num_samples=500,
    )
    rows[["row_id", "fid", "fid_se"]]
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from torch import nn

from .models.adapters import network_adapter
from .models.networks import run_options
from .models.external import EXTERNAL_FAMILIES, state_sha256
from .results import FAILED, RESULTS_JSONL, read_rows
from .suite import DEVICES, Suite, load_suite, parse_suite

__all__ = ["Model", "Run", "evaluate", "score", "run", "read_results"]


@dataclass(frozen=True)
class Model:
    """A model in memory and how to read its output.

    ``net`` is an ``nn.Module`` or any callable. With a ``preconditioning`` it is the raw network,
    called as ``net(x_in, noise_labels, class_labels)`` (CTM: ``+ s_noise_labels``) with x_in =
    c_in·x and noise_labels = ``time_input``(σ)·``noise_label_scale``; with ``preconditioning="none"``
    it is the family's map itself, called with σ: D(x, σ, labels) (edm), f(x, σ, labels) (cd, ct),
    g(x, t, labels, s) (ctm). A ``generator`` is called as ``net(z, labels)`` with z standard normal.

    ``preconditioning`` by family (default first): edm: edm, vp, ve, none, trigflow; cd / ct: cm
    (the CM boundary-condition scalings), none, trigflow; ctm: edm, none; generator: none.
    ``trigflow`` is sCM's TrigFlow form: net(x_t/σ_data, t, labels) with x_t = cos(t)·x and
    t = arctan(σ/σ_data) (:mod:`cmbench.models.trigflow`; sampler ``scm``). PD models set
    ``prediction`` (v, x, eps, edm) and ``role`` (student, teacher) instead; a VP diffusion model
    in eps / v / x prediction is ``family="pd", role="teacher"``.
    """

    net: nn.Module | Callable[..., torch.Tensor]
    family: str
    image_shape: tuple[int, int, int]
    preconditioning: str | None = None
    label_dim: int = 0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    time_input: str | None = None
    noise_label_scale: float = 1.0
    prediction: str | None = None
    role: str | None = None

    def suite_entry(self, key: str = "model") -> dict[str, Any]:
        """The suite model entry that describes this model (validated like a suite file's)."""
        if not callable(self.net):
            raise TypeError(f"models.{key}: net must be an nn.Module or a callable, got {type(self.net).__name__}")
        if self.family not in EXTERNAL_FAMILIES:
            hint = {"samples": "; images on disk are scored with cmbench.score",
                    "gmm": "; the analytic mixture is a suite model (cmbench.run)"}.get(self.family, "")
            raise ValueError(f"models.{key}.family: {self.family!r} is not a family of models in memory; accepted: "
                             f"{', '.join(EXTERNAL_FAMILIES)}{hint}")
        entry = {"family": self.family, "in_memory": True, "state_sha256": state_sha256(self.net),
                 "image_shape": list(self.image_shape), "label_dim": self.label_dim, "sigma_min": self.sigma_min,
                 "sigma_max": self.sigma_max, "sigma_data": self.sigma_data, "noise_label_scale": self.noise_label_scale}
        for key in ("preconditioning", "time_input", "prediction", "role"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        return entry


@dataclass(frozen=True)
class Run:
    """One run of a suite: a sampler at some NFEs, with its options (``model`` defaults to every model)."""

    sampler: str
    nfe: Sequence[int]
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    model: str | None = None


def evaluate(
    models: Model | Mapping[str, Model],
    runs: Sequence[Run] | Mapping[str, Sequence[int]],
    *,
    num_samples: int,
    profile: str | Sequence[str] | None = None,
    reference: str | Path | None = None,
    metrics: Sequence[str] = (),
    seed_start: int = 0,
    batch_size: int | str = 256,
    out: str | Path | None = None,
    device: str | None = None,
    progress: bool | None = False,
    suite: Mapping[str, Any] | None = None,
    name: str = "api",
) -> pd.DataFrame:
    """Sample and score models in memory; returns their result rows.

    ``models``: one :class:`Model` (named ``model``) or several by name. ``runs``: :class:`Run`
    entries, or ``{sampler: [nfe, ...]}`` for every model. ``profile``: an evaluator profile
    (``cmbench profiles``) or several (each scores the same samples); without one, ``metrics``
    and ``suite={"features": ...}`` say how to score. ``reference``: the reference statistics
    file. ``batch_size``: a number or ``"auto"`` (:mod:`cmbench.batch_size`). ``suite``: any other suite keys (``uncertainty``, ``metric_options``, ``likelihood``,
    ``tune``, ``save_samples``, ``threads``, ...). ``out``: a run folder to keep (results, report, samples);
    without it the run happens in a temporary folder that is removed afterwards. ``device``:
    default the device of the model's parameters (else cuda when present). A module's training
    mode, ``requires_grad`` flags and device are restored afterwards. Nothing is printed:
    ``progress=True`` draws progress bars on standard error (None: only on a terminal), and
    messages (rows resumed or failed) go to the ``cmbench`` logger of :mod:`logging`.
    """
    if isinstance(models, Model):
        models = {"model": models}
    if not isinstance(models, Mapping) or not all(isinstance(m, Model) for m in models.values()):
        what = "a mapping with other values" if isinstance(models, Mapping) else f"a {type(models).__name__}"
        raise TypeError(f"models: expected a cmbench.Model or a mapping of names to cmbench.Model, got {what}")
    models = dict(models)
    taken = sorted(set(suite or {}) & {"name", "num_samples", "seed_start", "batch_size", "models", "runs"})
    if taken:
        raise ValueError(f"suite: {', '.join(taken)} are evaluate()'s own arguments; give them as arguments, not suite keys")
    _check_device(device)
    raw = _scoring(profile, reference, metrics, suite)
    raw.update(name=name, num_samples=num_samples, seed_start=seed_start, batch_size=batch_size,
               models={key: model.suite_entry(key) for key, model in models.items()},
               runs=_runs(runs, list(models)))
    if out is None:
        raw.setdefault("grid_images", 0)
    spec = parse_suite(raw, "cmbench.evaluate", Path.cwd())
    device = device or _device_of(models.values())
    with _borrowed([m.net for m in models.values()]):
        adapters = {key: _adapter(key, model, spec, device) for key, model in models.items()}
        return _run(spec, out, device, progress, adapters)


def score(
    samples: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
    *,
    profile: str | Sequence[str] | None = None,
    suite: str | Path | None = None,
    reference: str | Path | Mapping[str, str | Path] | None = None,
    metrics: Sequence[str] = (),
    nfe: int = 0,
    limit: int | None = None,
    quantisation: str | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    progress: bool | None = False,
    name: str = "score",
) -> pd.DataFrame:
    """Score images made elsewhere (``.npz`` with ``arr_0``, or image folders), as ``cmbench score``
    does; ``samples`` by name with a mapping, ``reference`` one file or ``{profile: file}``.
    Returns their result rows."""
    from .sample_sets import score_suite

    _check_device(device)
    if isinstance(samples, Mapping):
        items = [f"{key}={value}" for key, value in samples.items()]
    else:
        items = [str(samples)] if isinstance(samples, (str, Path)) else [str(s) for s in samples]
    profiles = [profile] if isinstance(profile, str) else list(profile or ())
    if isinstance(reference, Mapping):
        reference = [f"{key}={value}" for key, value in reference.items()]
    spec = score_suite(items, profiles=profiles, suite=suite, reference=None if reference is None else
                       [str(reference)] if isinstance(reference, (str, Path)) else reference,
                       metrics=list(metrics), nfe=nfe, limit=limit, quantisation=quantisation, name=name)
    return _run(spec, out, device, progress, {})


def run(suite: str | Path, *, out: str | Path | None = None, overrides: Sequence[str] = (), device: str | None = None,
        progress: bool | None = False) -> pd.DataFrame:
    """Run a suite file (or bundled suite name) as ``cmbench run`` does; returns its result rows."""
    from .cli import resolve_suite

    _check_device(device)
    return _run(load_suite(resolve_suite(str(suite)), list(overrides)), out, device, progress, {})


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """The result rows of a run folder (its ``results.jsonl``) as a DataFrame."""
    path = Path(run_dir) / RESULTS_JSONL
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a cmbench run folder")
    return pd.DataFrame(read_rows(path))


def _run(spec: Suite, out, device: str | None, progress: bool | None, models: dict) -> pd.DataFrame:
    from .runner import run_suite

    ids = [row.row_id for row in spec.rows]
    if out is not None:
        report = run_suite(spec, out, device=device, progress=progress, models=models)
        return _rows(report.parent, ids)
    with tempfile.TemporaryDirectory(prefix="cmbench-") as folder:
        run_suite(spec, folder, device=device, progress=progress, models=models)
        return _rows(Path(folder), ids)


def _rows(run_dir: Path, ids: list[str]) -> pd.DataFrame:
    by_id = {row["row_id"]: row for row in read_rows(run_dir / RESULTS_JSONL)}
    rows = [by_id[i] for i in ids if i in by_id]
    for row in rows:  # as `cmbench run` reports them on stderr: a failed row holds no numbers
        if row.get("status") == FAILED:
            warnings.warn(f"cmbench: row {row['row_id']} failed: {row.get('error')}", RuntimeWarning, stacklevel=3)
    return pd.DataFrame(rows)


def _check_device(device: str | None) -> None:
    """auto, cpu, cuda or cuda:N (what the command line's --device and a module's parameters give)."""
    if device is None:
        return
    if not isinstance(device, str) or not (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        raise ValueError(f"device: expected one of {', '.join(DEVICES)} or cuda:N, got {device!r}")


def _scoring(profile, reference, metrics, suite) -> dict[str, Any]:
    raw = dict(suite or {})
    given = {"profile": profile, "reference": reference, "metrics": metrics}
    twice = sorted(key for key, value in given.items() if value and (key in raw or key == "profile" and "profiles" in raw))
    if twice:
        raise ValueError(f"{', '.join(twice)} given both as an argument and in suite; give each once")
    profiles = [profile] if isinstance(profile, str) else list(profile or ())
    if len(profiles) == 1:
        raw["profile"] = profiles[0]
    elif profiles:
        raw["profiles"] = {p: {} for p in profiles}
    if reference is not None:
        raw["reference"] = {"path": str(Path(reference).expanduser().resolve())}
    if metrics:
        raw["metrics"] = list(metrics)
    return raw


def _runs(runs, names: list[str]) -> list[dict[str, Any]]:
    accepted = "expected cmbench.Run entries or a {sampler: [nfe, ...]} mapping"
    if isinstance(runs, Mapping):
        runs = [Run(sampler, nfes) for sampler, nfes in runs.items()]
    elif isinstance(runs, (str, bytes, Run)) or not isinstance(runs, Sequence):
        raise TypeError(f"runs: {accepted}, got {runs!r:.200}")
    out = []
    for entry in runs:
        if not isinstance(entry, Run):
            raise TypeError(f"runs: {accepted}, got {entry!r}")
        if isinstance(entry.nfe, (str, bytes)) or not isinstance(entry.nfe, Sequence):
            raise TypeError(f"runs: {entry.sampler}: nfe must be a list of NFEs, e.g. [1, 2], got {entry.nfe!r}")
        for model in [entry.model] if entry.model else names:
            run = {"model": model, "sampler": entry.sampler, "nfe": list(entry.nfe)}
            if entry.options:
                run["options"] = dict(entry.options)
            if entry.name:
                run["name"] = entry.name
            out.append(run)
    return out


class _CallableNet(nn.Module):
    """A plain callable as a module without parameters (cmbench's adapters take modules)."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _adapter(key: str, model: Model, spec: Suite, device: str | None):
    from .run_context import resolve_device

    entry = spec.models[key].options
    net = model.net if isinstance(model.net, nn.Module) else _CallableNet(model.net)
    adapter = network_adapter(model.family, net, entry, sha256=entry["state_sha256"], **run_options(entry))
    return adapter.to(resolve_device(device or spec.device))


def _device_of(models) -> str | None:
    for model in models:
        if isinstance(model.net, nn.Module):
            for p in model.net.parameters():  # cuda:1 stays cuda:1 (not the current device)
                return str(p.device) if p.device.type in ("cpu", "cuda") else None
    return None


@contextmanager
def _borrowed(nets: list) -> Iterator[None]:
    """Give the modules back as they were: every submodule's training mode (a frozen BatchNorm in
    eval mode inside a training network stays so), requires_grad flags and device."""
    modules = [n for n in nets if isinstance(n, nn.Module)]
    saved = [(m, [(sub, sub.training) for sub in m.modules()], [(p, p.requires_grad) for p in m.parameters()],
              next((p.device for p in m.parameters()), None)) for m in modules]
    try:
        yield
    finally:
        for module, modes, flags, device in saved:
            if device is not None:
                module.to(device)
            for sub, training in modes:
                sub.training = training
            for p, flag in flags:
                p.requires_grad_(flag)
