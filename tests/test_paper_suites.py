"""The paper-reproduction suites: they validate, and each one's first row runs end to end on CPU.

The first row runs at its official architecture with random weights written by the test in the
official format (a state dict, or an EDM-style pickle), with random Inception weights in the
official file format and reference statistics in the protocol's format, at 4 samples and the
smallest NFE of its sampler. What this proves is the plumbing of the real recipe: preset,
loader, sampler settings, evaluator profile, reference lookup, result row and report.

The LSUN 256 suites run the same code as ImageNet 64's (the ADM UNet at another preset, the
same profile and loader); one forward pass of the 526M-parameter network on 4 images takes about
a minute on 2 CPU cores, so for them the test loads the official-size checkpoint strictly through
the suite and stops before sampling.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from markupsafe import escape  # as the report (jinja2) escapes

from cmbench.checkpoints.hashing import sha256_file
from cmbench.checkpoints.official import official_arch
from cmbench.editing.spec import Editing
from cmbench.features.inception import InceptionExtractor
from cmbench.metrics import fid as fid_module
from cmbench.metrics.fid import feature_statistics
from cmbench.metrics.reference_registry import load_registry
from cmbench.nets import build_network
from cmbench.nets.edm_presets import EDM_PRESETS
from cmbench.profiles import PROFILES
from cmbench.result_text import metric_formats
from cmbench.results import read_rows
from cmbench.runner import run_suite
from cmbench.suite import load_suite

import edm_snapshots
from test_metrics_lpips import random_heads_state_dict, random_torchvision_state_dict
from test_readme import low_rank_trace_sqrt

SUITES = Path(__file__).resolve().parent.parent / "suites"
PAPER_SUITES = ("cm_cifar10", "cm_imagenet64", "cm_lsun_bedroom256", "cm_lsun_cat256", "ctm_cifar10", "ctm_imagenet64",
                "edm_cifar10", "edm_imagenet64")


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_paper_suites_validate_with_official_settings_and_published_numbers(name):
    suite = load_suite(SUITES / f"{name}.yaml")
    assert suite.num_samples == 50_000 and suite.profile in PROFILES and suite.paper_source
    assert "registry" in suite.reference and suite.checkpoints_dir
    assert any(row.paper for row in suite.rows)
    for spec in suite.models.values():
        assert spec.options["format"] in ("state_dict", "edm_pickle", "flax")


def test_cm_imagenet64_uses_the_official_time_points():
    rows = {row.row_id: row for row in load_suite(SUITES / "cm_imagenet64.yaml").rows}
    assert rows["cd_lpips.cm_multistep.nfe2"].options["time_points"][2] == [0, 22, 39]
    assert rows["ct.cm_multistep.nfe2"].options["time_points"][2] == [0, 106, 200]
    assert rows["ct.cm_multistep.nfe2"].options["karras_steps"] == 201
    assert rows["edm.heun.nfe79"].paper == {"fid": 2.44, "precision": 0.71, "recall": 0.67}


def random_full_size(arch: str, kwargs: dict) -> torch.nn.Module:
    """The official-size network with random weights, built without the constructor's slow init."""
    with torch.device("meta"):
        net = build_network(arch, kwargs)
    net = net.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02, generator=gen)
    return net.eval()


def write_checkpoint(spec_options: dict, folder: Path) -> None:
    path = folder / spec_options["checkpoint"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec_options["format"] == "flax":
        write_flax_checkpoint(spec_options["arch"], path)
        return
    if spec_options["format"] == "state_dict":
        preset = official_arch(spec_options["arch"])
        state = random_full_size(preset.arch, preset.kwargs).state_dict()
        torch.save({preset.strip_prefix + key: value for key, value in state.items()}, path)  # CTM CIFAR-10: `model.`
        return
    preset = official_arch(path.stem)  # a released snapshot's preset has its file's name
    class_name, kwargs = EDM_PRESETS[path.stem]
    precond = torch.nn.Module()
    precond.__dict__.update(img_resolution=kwargs["img_resolution"], img_channels=3, label_dim=kwargs["label_dim"],
                            use_fp16=False, sigma_min=0, sigma_max=float("inf"), sigma_data=0.5)
    precond.model = random_full_size(preset.arch, kwargs)
    edm_snapshots.write_snapshot(path, precond, class_name, kwargs, src="raise RuntimeError('never run')\n",
                                 precond_name="EDMPrecond")


def write_flax_checkpoint(arch: str, path: Path) -> None:
    """A training state as openai/consistency_models_cifar10 saves it (flax's msgpack of a dict with
    ``params_ema``), the network official-size with random weights laid out as flax lays them."""
    import flax.serialization

    from cmbench.checkpoints.flax_ncsnpp import flax_arch, flax_leaves

    preset = flax_arch(arch)
    net = random_full_size(preset.arch, preset.kwargs)
    weights = net.state_dict()
    to_flax = {"conv": lambda a: a.transpose(2, 3, 1, 0), "matrix": lambda a: a.T, "vector": lambda a: a}
    state = {"step": np.int32(80), "params_ema": {}}
    for flax_path, leaf in flax_leaves(net).items():
        *parents, name = flax_path.split("/")
        node = state
        for key in parents:
            node = node.setdefault(key, {})
        node[name] = np.ascontiguousarray(to_flax[leaf.layout](weights[leaf.torch_key].numpy()))
    path.write_bytes(flax.serialization.to_bytes(state))


def write_reference(suite, folder: Path, weights: Path) -> None:
    """Reference statistics of random images in the format of the suite's registry entry."""
    entry = load_registry()[suite.reference["registry"]]
    height, width = entry.resolution
    images = np.random.default_rng(0).integers(0, 256, size=(5, height, width, 3), dtype=np.uint8)
    features = InceptionExtractor(weights).extract(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                                   ["pool", "spatial"])
    (mu, sigma), (mu_s, sigma_s) = (feature_statistics(features[k].numpy()) for k in ("pool", "spatial"))
    if entry.format == "adm":
        np.savez(folder / entry.file, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    else:
        np.savez(folder / entry.file, mu=mu, sigma=sigma)


def test_lsun_cat_is_the_bedroom_recipe_with_its_own_files_and_numbers():
    """So the Bedroom end-to-end run below covers Cat's first row (the same 526M-parameter net and
    sampler; a second CPU run of it would add a minute to the tests and nothing else)."""
    bedroom, cat = (load_suite(SUITES / f"cm_lsun_{name}256.yaml") for name in ("bedroom", "cat"))
    assert [(r.model, r.sampler, r.nfe) for r in cat.rows] == [(r.model, r.sampler, r.nfe) for r in bedroom.rows]
    for name, spec in cat.models.items():
        other = bedroom.models[name].options
        assert {**spec.options, "checkpoint": other["checkpoint"]} == other
        assert spec.options["checkpoint"] == other["checkpoint"].replace("bedroom", "cat")
    assert (cat.profile, cat.reference["registry"]) == (bedroom.profile, "adm-lsun-cat256")
    assert cat.rows[0].paper == {"fid": 6.69, "precision": 0.70, "recall": 0.43}


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 samples in 2048-d
@pytest.mark.parametrize("name", [name for name in PAPER_SUITES if "lsun" not in name])
def test_first_row_runs_end_to_end_on_cpu_with_random_weights(name, tmp_path, official_inception, monkeypatch):
    """With the suite's first editing task (its data: the reference batch) run by the first model, on
    4 images, LPIPS from random files in the official formats, where the suite has an editing block.
    FID's sqrtm (17 s per 2048² matrix on one core) is the exact low-rank square root: 4 images."""
    monkeypatch.setattr(fid_module, "_trace_sqrt_sqrtm", low_rank_trace_sqrt)
    first_nfe = 1
    options = load_suite(SUITES / f"{name}.yaml").metric_options  # IS in 10 parts (cm_cifar10) needs 10 images
    samples = 4 if options.is_split_size else max(4, options.is_splits)
    overrides = [f"checkpoints_dir={tmp_path}", f"reference.dir={tmp_path}", f"num_samples={samples}", "batch_size=4",
                 "grid_images=2", "precision=fp32", "uncertainty={bootstrap: 0}", f"runs.0.nfe=[{first_nfe}]",
                 f"runs.0.paper={{{first_nfe}: {{fid: 9.5}}}}"]
    suite = load_suite(SUITES / f"{name}.yaml", overrides)
    row = suite.rows[0]
    editing = Editing()
    if suite.editing.rows:
        overrides += ["editing.num_images=4", f"editing.lpips.weights={tmp_path}",
                      f"editing.runs=[{{model: {row.model}, sampler: {row.sampler}, nfe: [1], options: {{clip_denoised: true}}, "
                      f"tasks: [{suite.editing.rows[0].task}]}}]"]
        editing = load_suite(SUITES / f"{name}.yaml", overrides).editing
        write_lpips_files(tmp_path, monkeypatch)
    suite = replace(suite, rows=[row], models={row.model: suite.models[row.model]}, editing=editing)
    write_checkpoint(suite.models[row.model].options, tmp_path)
    write_reference(suite, tmp_path, official_inception)
    report = run_suite(suite, tmp_path / "out", device="cpu", progress=False)
    result, *edits = read_rows(tmp_path / "out" / "results.jsonl")
    assert len(edits) == len(editing.rows)
    assert result["row_id"] == row.row_id and result["nfe"] == first_nfe
    assert result["checkpoint_sha256"] == sha256_file(tmp_path / suite.models[row.model].options["checkpoint"])
    assert np.isfinite(result["fid"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    unreproducible = {"unreproducible": suite.unreproducible} if suite.unreproducible else {}
    assert run["paper"] == {"source": suite.paper_source, "rows": {row.row_id: {"fid": 9.5}}, **unreproducible}
    html = report.read_text()
    for label, entry in suite.unreproducible.items():  # cm_cifar10's PD rows: published, never sampled
        assert f"<td>{label}</td>" in html and escape(f"not reproducible: {entry['reason']}") in html
    fid_decimals = next(fmt.decimals for fmt in metric_formats([result]) if fmt.column.key == "fid")
    assert "Measured vs published" in html and f"{result['fid'] - 9.5:+.{fid_decimals}f}" in html
    assert result["options"] == row.options
    if "clip_denoised" in row.options:  # the EDM-teacher rows sampled as openai's karras_sample does
        assert result["sampler_label"] == "heun clip_denoised=True" and "clip_denoised=True" in html
    for edited in edits:
        assert edited["kind"] == "edit" and edited["num_samples"] == 4 and edited["model"] == row.model
        assert all(np.isfinite(edited[key]) for key in ("psnr", "ssim", "lpips", "fid"))
        assert edited["consistency_max"] < 1e-6  # the replacement ends the chain (in the network's float32)
        assert edited["conventions"]["lpips"]["lpips_net"] == "alex" and edited["grid_degraded"]


def write_lpips_files(folder: Path, monkeypatch) -> None:
    """LPIPS-alex's two files with random weights, accepted as if they were the official ones."""
    from cmbench.metrics import lpips

    torch.save(random_torchvision_state_dict("alex"), folder / lpips.BACKBONE_FILES["alex"].file_name)
    torch.save(random_heads_state_dict("alex"), folder / lpips.HEADS_FILES["alex"].file_name)
    monkeypatch.setattr(lpips, "verify_lpips_file", lambda path, spec: sha256_file(path))


def test_lsun_bedroom256_loads_its_official_size_checkpoint_strictly(tmp_path):
    """Every model of the suite shares the adm-lsun256 preset; its EDM teacher's state dict (random,
    official layout and size) loads strictly into the network the suite builds."""
    from cmbench.models import build_model

    suite = load_suite(SUITES / "cm_lsun_bedroom256.yaml", [f"checkpoints_dir={tmp_path}"])
    assert {spec.options["arch"] for spec in suite.models.values()} == {"adm-lsun256"}
    write_checkpoint(suite.models["edm"].options, tmp_path)
    spec = suite.models["edm"]
    model = build_model(spec.family, spec.options, suite.checkpoint_dir, "cpu", name="edm", base_dir=suite.base_dir)
    assert model.image_shape == (3, 256, 256) and model.family == "edm"
    assert model.checkpoint_sha256 == sha256_file(tmp_path / suite.models["edm"].options["checkpoint"])


def _small_suite(**changes) -> dict:
    return {"name": "t", "num_samples": 4, "reference": {"path": "unused.npz"},
            "models": {"m": {"family": "cd", "checkpoint": "m.pt"}},
            "runs": [{"model": "m", "sampler": "cm_multistep", "nfe": [1, 2]}], **changes}


@pytest.mark.parametrize("paper, where, message", [
    ({1: {"fdi": 3.0}}, r"runs\[0\]\.paper\.1\.fdi", "unknown key; accepted keys here: fid"),
    ({"one": {"fid": 3.0}}, r"runs\[0\]\.paper\.one", "keys are NFEs"),
    ({1: {"fid": "low"}}, r"runs\[0\]\.paper\.1\.fid", "expected a number"),
])
def test_published_numbers_are_checked(tmp_path, paper, where, message):
    from cmbench.suite import parse_suite
    from cmbench.validate import ConfigError

    raw = _small_suite()
    raw["runs"][0]["paper"] = paper
    with pytest.raises(ConfigError, match=rf"{where}: {message}"):
        parse_suite(raw, "t.yaml", tmp_path)


def test_published_numbers_go_to_their_nfes_rows(tmp_path):
    from cmbench.suite import parse_suite

    raw = _small_suite(paper="A paper, Table 1")
    raw["runs"][0]["paper"] = {1: {"fid": 3.5}, 2: {"fid": 2.5, "source": "elsewhere"}, 4: {"fid": 1.0}}
    suite = parse_suite(raw, "t.yaml", tmp_path)
    assert suite.paper_source == "A paper, Table 1"
    assert [row.paper for row in suite.rows] == [{"fid": 3.5}, {"fid": 2.5, "source": "elsewhere"}]


def test_a_missing_registry_reference_says_how_to_fetch_it(tmp_path):
    from cmbench.references import reference_path

    suite = load_suite(SUITES / "cm_imagenet64.yaml", [f"reference.dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"VIRTUAL_imagenet64_labeled\.npz do not exist: run `cmbench stats "
                                                r"fetch adm-imagenet64 --dest "):
        reference_path(suite)


def test_a_registry_reference_must_be_of_the_suites_profile(tmp_path):
    from cmbench.suite import parse_suite
    from cmbench.validate import ConfigError

    with pytest.raises(ConfigError, match=r"reference\.registry: edm-cifar10-32 holds edm-profile statistics; this "
                                          r"scoring uses profile adm"):
        parse_suite(_small_suite(profile="adm", reference={"registry": "edm-cifar10-32"}), "t.yaml", tmp_path)



_PD = {"row": "pd.nfe1", "reason": "no released checkpoint", "paper": {"fid": 8.34, "is_mean": 8.69}}


def test_unreproducible_rows_are_shown_with_their_reason_and_never_sampled(tmp_path):
    from cmbench.report.paper import paper_section
    from cmbench.report.tables import METRIC_COLUMNS, column_formats
    from cmbench.suite import parse_suite

    suite = parse_suite(_small_suite(unreproducible=[_PD]), "t.yaml", tmp_path)
    assert [row.row_id for row in suite.rows] == ["m.cm_multistep.nfe1", "m.cm_multistep.nfe2"]
    assert suite.unreproducible == {"pd.nfe1": {"reason": "no released checkpoint", "paper": {"fid": 8.34, "is_mean": 8.69}}}
    metadata = {"paper": {"source": "Table 1", "rows": {}, "unreproducible": suite.unreproducible}}
    cells = paper_section(metadata, [], column_formats([], METRIC_COLUMNS))["cells"]
    assert [(c["row_id"], c["paper"], c["measured"], c["diff"]) for c in cells] == [
        ("pd.nfe1", "8.34", "not reproducible: no released checkpoint", "—"),
        ("pd.nfe1", "8.69", "not reproducible: no released checkpoint", "—")]
    assert {c["source"] for c in cells} == {"Table 1"}


@pytest.mark.parametrize("entry, where, message", [
    ({**_PD, "row": "m.cm_multistep.nfe1"}, r"unreproducible\[0\]\.row", "'m.cm_multistep.nfe1' is already a row of this suite"),
    ({k: v for k, v in _PD.items() if k != "reason"}, r"unreproducible\[0\]\.reason", "missing required key"),
    ({**_PD, "paper": {"fdi": 1.0}}, r"unreproducible\[0\]\.paper\.fdi", "unknown key"),
    ({**_PD, "paper": {}}, r"unreproducible\[0\]\.paper", "give the published numbers"),
])
def test_unreproducible_rows_are_checked(tmp_path, entry, where, message):
    from cmbench.suite import parse_suite
    from cmbench.validate import ConfigError

    with pytest.raises(ConfigError, match=rf"{where}: {message}"):
        parse_suite(_small_suite(unreproducible=[entry]), "t.yaml", tmp_path)
