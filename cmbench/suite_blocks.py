"""Parsers of a suite's optional blocks: metrics and evaluator profiles, metric options, reference,
likelihood, uncertainty, regression, threads and saved samples. Each takes the raw value and a :class:`~cmbench.validate.Checker`, so every error
names the file and key path, and returns plain validated data for :class:`cmbench.suite.Suite`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import features as features_registry
from .compare import parse_regression_spec
from .metrics import DIRECTIONS, METRICS, MetricOptions
from .metrics.bootstrap import DEFAULT_RESAMPLES
from .metrics.fid import FID_SQRT_METHODS
from .metrics.kid import PRODUCTS
from .metrics.reference_registry import DEFAULT_DEST, load_registry
from .nll import PROTOCOLS, ExactProtocol, make_protocol
from .profiles import PROFILE_KEYS, PROFILES, Profile, with_extra_metrics
from .sample_files import save_formats
from .threads import parse_threads
from .validate import Checker

LIKELIHOOD_KEYS = ("data", "protocol", "passes", "divergence", "limit", "seed", "rtol", "atol", "batch_size")


def parse_metric_options(c: Checker, raw: Any) -> MetricOptions:
    raw = c.mapping(raw, "metric_options")
    c.keys(raw, "metric_options", (), ("is_splits", "is_split_size", "is_shuffle_seed", "pr_k", "pr_batch_size", "fid_sqrt",
                                       "kid_subsets", "kid_subset_size", "kid_capped", "kid_products", "dc_k"))
    default = MetricOptions()
    return MetricOptions(
        is_splits=c.integer(raw.get("is_splits", default.is_splits), "metric_options.is_splits", minimum=1),
        pr_k=c.integer(raw.get("pr_k", default.pr_k), "metric_options.pr_k", minimum=1),
        pr_batch_size=c.integer(raw.get("pr_batch_size", default.pr_batch_size), "metric_options.pr_batch_size", minimum=1),
        fid_sqrt=c.choice(raw.get("fid_sqrt", default.fid_sqrt), "metric_options.fid_sqrt", FID_SQRT_METHODS),
        kid_subsets=c.integer(raw.get("kid_subsets", default.kid_subsets), "metric_options.kid_subsets", minimum=1),
        kid_subset_size=c.integer(raw.get("kid_subset_size", default.kid_subset_size), "metric_options.kid_subset_size", minimum=2),
        dc_k=c.integer(raw.get("dc_k", default.dc_k), "metric_options.dc_k", minimum=1),
        kid_capped=c.boolean(raw.get("kid_capped", default.kid_capped), "metric_options.kid_capped"),
        kid_products=c.choice(raw.get("kid_products", default.kid_products), "metric_options.kid_products", tuple(PRODUCTS)),
        is_split_size=_optional_integer(c, raw, "is_split_size", minimum=1),
        is_shuffle_seed=_optional_integer(c, raw, "is_shuffle_seed", minimum=0),
    )


def _optional_integer(c: Checker, raw: Any, key: str, minimum: int) -> int | None:
    value = raw.get(key)
    return None if value is None else c.integer(value, f"metric_options.{key}", minimum=minimum)


def parse_likelihood(c: Checker, raw: Any) -> dict[str, Any]:
    """``likelihood: {data: toy:test | file.npz, protocol, passes, divergence, limit, seed, rtol, atol,
    batch_size}``: bits/dim of uint8 data under every score-access model (see ``cmbench nll``).

    ``protocol: exact`` (the default) is cmbench's PF-ODE bits/dim and is left out of the result,
    so suites written before protocols keep their row fingerprints; ``protocol: ctm_eval_bpd`` is
    CTM's estimator, whose solver settings are CTM's own (giving divergence, rtol or atol is an error).
    """
    if raw is None:
        return {}
    raw = c.mapping(raw, "likelihood")
    c.keys(raw, "likelihood", ("data",), LIKELIHOOD_KEYS[1:])
    protocol = c.choice(raw.get("protocol", ExactProtocol.name), "likelihood.protocol", PROTOCOLS)
    spec = {
        "data": c.string(raw["data"], "likelihood.data"),
        "passes": c.integer(raw.get("passes", 1), "likelihood.passes", minimum=1),
        "seed": c.integer(raw.get("seed", 0), "likelihood.seed", minimum=0),
        "batch_size": c.integer(raw.get("batch_size", 256), "likelihood.batch_size", minimum=1),
    }
    if protocol == ExactProtocol.name:
        default = ExactProtocol()
        spec["divergence"] = c.choice(raw.get("divergence", default.divergence), "likelihood.divergence", ("hutchinson", "exact"))
        spec["rtol"] = c.number(raw.get("rtol", default.rtol), "likelihood.rtol", minimum=0, exclusive=True)
        spec["atol"] = c.number(raw.get("atol", default.atol), "likelihood.atol", minimum=0, exclusive=True)
    else:
        given = {key: raw[key] for key in ("divergence", "rtol", "atol") if key in raw}
        try:
            make_protocol(protocol, **given)
        except ValueError as err:  # the protocol fixes its own solver settings
            raise c.fail(f"likelihood.{next(iter(given))}", str(err)) from None
        spec["protocol"] = protocol
    if "limit" in raw:
        spec["limit"] = c.integer(raw["limit"], "likelihood.limit", minimum=2)
    return spec


def parse_uncertainty(c: Checker, raw: Any) -> dict[str, int]:
    """``uncertainty: {bootstrap: B, seed: S}``: B bootstrap resamples of each row's generated
    features give its metrics' standard errors (``<column>_se``); 0 turns them off."""
    if raw is None:
        return {"bootstrap": DEFAULT_RESAMPLES, "seed": 0}
    raw = c.mapping(raw, "uncertainty")
    c.keys(raw, "uncertainty", (), ("bootstrap", "seed"))
    bootstrap = c.integer(raw.get("bootstrap", DEFAULT_RESAMPLES), "uncertainty.bootstrap", minimum=0)
    if bootstrap == 1:
        raise c.fail("uncertainty.bootstrap", f"one resample has no spread; give 0 (no standard errors) or at least 2 "
                                              f"(default {DEFAULT_RESAMPLES})")
    return {"bootstrap": bootstrap, "seed": c.integer(raw.get("seed", 0), "uncertainty.seed", minimum=0)}


def parse_regression(c: Checker, raw: Any, metrics: tuple[str, ...], likelihood: dict[str, Any]) -> dict[str, Any]:
    """``regression: {z: 3, thresholds: {fid: 0.5, precision: "1%", recall: [0.01, "5%"]}}``: how
    ``cmbench compare`` judges this suite's rows against a baseline (see :mod:`cmbench.compare`)."""
    if raw is None:
        return {}
    raw = c.mapping(raw, "regression")
    try:
        spec = parse_regression_spec(raw)
    except ValueError as err:
        key, _, message = str(err).partition(": ")
        raise c.fail(f"regression.{key}", message) from None
    columns = {col for m in metrics for col in METRICS[m].columns if col in DIRECTIONS}
    if likelihood:
        columns.add("bpd")
    for metric in spec["thresholds"]:
        if metric not in columns:
            raise c.fail(f"regression.thresholds.{metric}", f"this suite measures no {metric!r}; its scored "
                                                            f"columns: {', '.join(sorted(columns))}")
    return spec


def parse_reference(c: Checker, raw: Any, models: dict, metrics: tuple[str, ...], profile: str = "") -> dict[str, Any]:
    """``{path: file.npz}``, ``{registry: NAME, dir: FOLDER}`` (an official file from
    reference_stats/registry.yaml, in FOLDER, default where ``cmbench stats fetch`` puts it) or
    ``{model: <analytic model>, num_images, seed}``."""
    if raw is None:
        needing = [m for m in metrics if METRICS[m].needs_reference]
        if needing:
            raise c.fail("reference", f"metrics {', '.join(needing)} need reference statistics: give "
                         "reference.path (an .npz from reference_stats/), reference.registry (an official file, "
                         "see cmbench stats list) or reference.model (an analytic model)")
        return {}
    raw = dict(c.mapping(raw, "reference"))
    if "path" in raw:
        c.keys(raw, "reference", ("path",))
        c.string(raw["path"], "reference.path")
        return raw
    if "registry" in raw:
        return _registry_reference(c, raw, profile)
    c.keys(raw, "reference", ("model",), ("num_images", "seed"))
    model = c.choice(raw["model"], "reference.model", [n for n, m in models.items() if m.family == "gmm"])
    return {
        "model": model,
        "num_images": c.integer(raw.get("num_images", 10000), "reference.num_images", minimum=2),
        "seed": c.integer(raw.get("seed", 1_000_000_000), "reference.seed", minimum=0),
    }


_REGISTRY_PROFILES = {  # a registry entry's protocol → the cmbench profiles whose numbers are against it
    "clean-fid-legacy-tensorflow": ("clean-fid", "cm-cifar10"),
    "edm": ("edm", "ctm-cifar10", "dmd2"),
}


def _registry_reference(c: Checker, raw: dict, profile: str) -> dict[str, Any]:
    c.keys(raw, "reference", ("registry",), ("dir",))
    registry = load_registry()
    entry = registry[c.choice(raw["registry"], "reference.registry", registry)]
    if profile and profile not in _REGISTRY_PROFILES.get(entry.profile, (entry.profile,)):
        raise c.fail("reference.registry", f"{entry.name} holds {entry.profile}-profile statistics; this scoring "
                                           f"uses profile {profile}")
    folder = Path(c.string(raw.get("dir", str(DEFAULT_DEST)), "reference.dir"))
    return {"path": str(folder / entry.file), "registry": entry.name}


def parse_paper_numbers(c: Checker, raw: Any, path: str, nfes: list[int]) -> dict[int, dict]:
    """A run's published numbers, ``{NFE: {column: value, source: "..."}}``: the report shows
    them beside the measured row with the difference. Columns are scored result columns
    (fid, is_mean, precision, recall, bpd, ...); ``source`` marks a figure from elsewhere than
    the suite's ``paper``. Numbers for an NFE the run does not make (say after ``--set
    runs.0.nfe=[1]``) are kept out of the rows."""
    if raw is None:
        return {}
    out = {}
    for nfe, numbers in c.mapping(raw, path).items():
        where = f"{path}.{nfe}"
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
            raise c.fail(where, f"keys are NFEs (positive integers, e.g. this run's {', '.join(map(str, nfes))}), got {nfe!r}")
        numbers = dict(c.mapping(numbers, where))
        c.keys(numbers, where, (), (*DIRECTIONS, "source"))
        numbers = {k: c.string(v, f"{where}.{k}") if k == "source" else c.number(v, f"{where}.{k}")
                   for k, v in numbers.items()}
        if nfe in nfes:
            out[nfe] = numbers
    return out


def parse_unreproducible(c: Checker, raw: Any, row_ids: set[str]) -> dict[str, dict[str, Any]]:
    """``unreproducible: [{row: LABEL, reason: TEXT, paper: {column: value, source: ...}}, ...]``:
    a paper's rows that no released file reproduces (CM's PD baseline, say). The report lists their
    published numbers with the reason instead of a measurement; nothing is sampled for them."""
    if raw is None:
        return {}
    out = {}
    for i, entry in enumerate(c.sequence(raw, "unreproducible", nonempty=True)):
        where = f"unreproducible[{i}]"
        entry = c.mapping(entry, where)
        c.keys(entry, where, ("row", "reason", "paper"), ())
        label = c.string(entry["row"], f"{where}.row")
        if label in row_ids or label in out:
            raise c.fail(f"{where}.row", f"{label!r} is already a row of this suite; give the published row its own label")
        numbers = dict(c.mapping(entry["paper"], f"{where}.paper"))
        if not numbers:
            raise c.fail(f"{where}.paper", "give the published numbers, e.g. {fid: 8.34}")
        c.keys(numbers, f"{where}.paper", (), (*DIRECTIONS, "source"))
        numbers = {k: c.string(v, f"{where}.paper.{k}") if k == "source" else c.number(v, f"{where}.paper.{k}")
                   for k, v in numbers.items()}
        out[label] = {"reason": c.string(entry["reason"], f"{where}.reason"), "paper": numbers}
    return out


def parse_metric_names(c: Checker, raw: Any, nonempty: bool = True) -> tuple[str, ...]:
    return tuple(c.choice(m, f"metrics[{i}]", METRICS) for i, m in enumerate(c.sequence(raw, "metrics", nonempty)))


def parse_profile(c: Checker, raw) -> Profile | None:
    """``profile: NAME`` (an evaluator profile, :mod:`cmbench.profiles`), which then sets the
    metrics, their options and the quantisation: giving those too is an error."""
    if "profile" not in raw:
        return None
    profile = PROFILES[c.choice(raw["profile"], "profile", PROFILES)]
    for key in PROFILE_KEYS:
        if key in raw:
            raise c.fail(key, f"profile {profile.name} sets {key}; leave it out, or drop the profile to set it yourself")
    return profile


def parse_profiles(c: Checker, raw, models: dict) -> dict[str, dict[str, Any]]:
    """``profiles: {NAME: {reference: ...}, ...}``: score every row under each profile, from the
    same samples. Each profile brings its extractor, metrics, conventions and quantisation; its
    ``reference`` (else the top-level one) must suit it. Top-level ``features`` may add weights."""
    if "profiles" not in raw:
        return {}
    given = c.mapping(raw["profiles"], "profiles")
    if not given:
        raise c.fail("profiles", f"name at least one profile; accepted: {', '.join(PROFILES)}")
    for key in ("profile", *PROFILE_KEYS):
        if key in raw:
            raise c.fail(key, "profiles: sets it per profile; leave it out")
    shared = dict(c.mapping(raw.get("features", {}), "features"))
    if "extractor" in shared:
        raise c.fail("features.extractor", "with profiles: each profile names its extractor; features may only add "
                                           "its weights or checkpoint")
    extra = parse_metric_names(c, raw.get("metrics", []), nonempty=False)
    scorings = {}
    for name, spec in given.items():
        path = f"profiles.{name}"
        profile = PROFILES[c.choice(name, path, PROFILES)]
        spec = c.mapping(spec or {}, path)
        c.keys(spec, path, (), ("reference",))
        features = {"extractor": profile.extractor, **shared}
        features_registry.validate_spec(c, features, "features", models)
        scorings[profile.name] = {
            "features": features, "metrics": with_extra_metrics(profile, extra), "metric_options": profile.metric_options,
            "quantisation": profile.quantisation,
            "reference": parse_reference(c, spec.get("reference", raw.get("reference")), models, profile.metrics,
                                         profile.name),
        }
    return scorings


def parse_thread_count(c: Checker, raw: Any) -> int | str:
    """``threads: auto`` (the default) or a positive integer."""
    try:
        return parse_threads(raw)
    except ValueError as err:
        raise c.fail("threads", str(err)) from None


def parse_save_samples(c: Checker, raw: Any) -> tuple[str, ...]:
    """``save_samples: npz``, ``png``, ``[npz, png]`` or ``npz,png``; false (the default): none."""
    if raw is False or raw is None:
        return ()
    if not isinstance(raw, (str, list)):
        raise c.fail("save_samples", f"expected npz, png, [npz, png] or false, got {raw!r}")
    try:
        return save_formats(raw)
    except ValueError as err:
        raise c.fail("save_samples", str(err)) from None


def check_metric_sizes(c: Checker, suite: Any) -> None:
    """Catch metric settings a :class:`~cmbench.suite.Suite`'s sample counts cannot satisfy before anything is sampled."""
    options = suite.metric_options
    if "inception_score" in suite.metrics and options.is_split_size is None and options.is_splits > suite.num_samples:
        raise c.fail("metric_options.is_splits", f"{options.is_splits} splits need at least as many samples; num_samples is {suite.num_samples}")
    sizes = {"num_samples": suite.num_samples, "reference.num_images": suite.reference.get("num_images")}
    if "precision_recall" in suite.metrics:
        for key, size in sizes.items():
            if size is not None and size <= options.pr_k:
                raise c.fail("metric_options.pr_k", f"k = {options.pr_k} needs more than k points per set; {key} is {size}")
    if "kid" in suite.metrics and not options.kid_capped:
        for key, size in sizes.items():
            if size is not None and size < options.kid_subset_size:
                raise c.fail("metric_options.kid_subset_size", f"KID subsets of {options.kid_subset_size} rows need at least as many points per set; {key} is {size}")
    if "density_coverage" in suite.metrics:
        size = sizes["reference.num_images"]
        if size is not None and size <= options.dc_k:
            raise c.fail("metric_options.dc_k", f"k = {options.dc_k} needs more than k real points; reference.num_images is {size}")
