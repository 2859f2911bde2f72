"""Suite files: validation errors name the file, the key path and what is accepted; ``--set``
overrides; expansion of runs into result rows; the bundled suite validates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cmbench.suite import Row, Suite, apply_override, load_suite, parse_suite
from cmbench.validate import ConfigError

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    """A small valid suite; each test breaks one thing in a copy of it."""
    return {
        "name": "t",
        "num_samples": 64,
        "batch_size": 32,
        "features": {"extractor": "gmm-posterior", "model": "mix"},
        "metrics": ["fid"],
        "reference": {"model": "mix", "num_images": 200},
        "models": {
            "mix": {
                "family": "gmm",
                "image_shape": [1, 4, 4],
                "random": {"count": 3, "seed": 0, "mean_scale": 0.7, "std": 0.15},
                "ode_steps": 16,
            }
        },
        "runs": [{"model": "mix", "sampler": "heun", "nfe": [5]}],
    }


def write(tmp_path: Path, raw, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load(tmp_path: Path, raw, overrides=()) -> Suite:
    return load_suite(write(tmp_path, raw), list(overrides))


def error(tmp_path: Path, raw, overrides=()) -> tuple[ConfigError, str, Path]:
    """Load ``raw`` from a file and return (the ConfigError, its message, the file)."""
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_suite(path, list(overrides))
    return info.value, str(info.value), path


def assert_names(err: ConfigError, msg: str, path: Path, key_path: str, *accepted: str) -> None:
    assert str(path) in msg, msg
    assert f"{path}: {key_path}: " in msg, msg
    assert err.path == key_path
    assert err.source == str(path)
    for item in accepted:
        assert item in msg, f"{item!r} not in {msg!r}"


def network_model(family: str, **extra) -> dict:
    """A network-family model whose checkpoint does not exist: validation must not touch it."""
    return {"family": family, "checkpoint": "no/such/dir/weights.pt", **extra}


# --- the base suite and the bundled one are valid -------------------------------------------


def test_base_suite_is_valid(tmp_path):
    suite = load(tmp_path, base())
    assert suite.name == "t"
    assert suite.num_samples == 64
    assert suite.source == str(tmp_path / "suite.yaml")
    assert suite.base_dir == tmp_path
    assert [r.row_id for r in suite.rows] == ["mix.heun.nfe5"]
    assert suite.metrics == ("fid",)
    assert suite.reference == {"model": "mix", "num_images": 200, "seed": 1_000_000_000}


def test_bundled_gmm_suite_validates():
    path = REPO / "suites" / "gmm.yaml"
    suite = load_suite(path)
    assert suite.name == "gmm"
    assert suite.models["mix"].family == "gmm"
    assert set(suite.metrics) == {"fid", "inception_score", "precision_recall"}
    ids = [r.row_id for r in suite.rows]
    assert len(ids) == len(set(ids)) == 6 + 4 + 4 + 3 + 3 + 4
    assert ids[0] == "mix.heun.nfe1"
    assert "mix.ctm_gamma0.nfe4" in ids and "mix.ctm_gamma1.nfe4" in ids
    assert {r.sampler for r in suite.rows} == {"heun", "euler", "cm_multistep", "ctm_gamma", "ddim"}


# --- top level -------------------------------------------------------------------------------


def test_unknown_top_level_key_lists_accepted_keys(tmp_path):
    raw = base()
    raw["num_sample"] = 10
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "num_sample", "unknown key", "num_samples", "runs", "metrics", "reference")


def test_missing_required_key(tmp_path):
    raw = base()
    del raw["runs"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs", "missing", "name, num_samples, models, runs")


def test_wrong_type_expects_an_integer(tmp_path):
    raw = base()
    raw["num_samples"] = "many"
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "num_samples", "expected an integer", "'many'")


def test_too_small_integer(tmp_path):
    raw = base()
    raw["num_samples"] = 1
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "num_samples", "≥ 2", "got 1")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_suite(tmp_path / "absent.yaml")


# --- models ----------------------------------------------------------------------------------


def test_unknown_family_lists_families(tmp_path):
    raw = base()
    raw["models"]["x"] = network_model("edm2")
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.x.family", "'edm2'", "edm, cd, ct, ctm, pd, gmm")


def test_gmm_with_both_components_and_random(tmp_path):
    raw = base()
    raw["models"]["mix"]["components"] = [{"mean": 0.5, "std": 0.1}]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.mix", "exactly one", "'components'", "'random'")


def test_gmm_with_neither_components_nor_random(tmp_path):
    raw = base()
    del raw["models"]["mix"]["random"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.mix", "exactly one", "'components'", "'random'")


def test_gmm_list_mean_of_wrong_length(tmp_path):
    raw = base()
    del raw["models"]["mix"]["random"]
    raw["models"]["mix"]["components"] = [{"mean": [0.1] * 15, "std": 0.1}, {"mean": -0.5, "std": 0.1}]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.mix.components[0].mean", "16 numbers", "got 15")


def test_gmm_list_mean_of_right_length_is_valid(tmp_path):
    raw = base()
    del raw["models"]["mix"]["random"]
    raw["models"]["mix"]["components"] = [{"mean": [0.1] * 16, "std": 0.1}, {"mean": -0.5, "std": 0.1}]
    assert load(tmp_path, raw).models["mix"].options["components"][0]["mean"] == [0.1] * 16


def test_gmm_bad_image_shape(tmp_path):
    raw = base()
    raw["models"]["mix"]["image_shape"] = [4, 4]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.mix.image_shape", "[channels, height, width]")


def test_pd_needs_a_role(tmp_path):
    raw = base()
    raw["models"]["stu"] = network_model("pd")
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "models.stu.role", "missing", "checkpoint, role")


# --- runs ------------------------------------------------------------------------------------


def test_unknown_sampler_lists_samplers(tmp_path):
    raw = base()
    raw["runs"][0]["sampler"] = "dpm"
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].sampler", "'dpm'", "heun, euler, cm_multistep, ctm_gamma, ddim")


def test_unknown_model_in_run(tmp_path):
    raw = base()
    raw["runs"][0]["model"] = "mux"
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].model", "'mux'", "accepted: mix")


def test_sampler_the_pd_student_cannot_use_fails_before_loading(tmp_path, monkeypatch):
    import cmbench.checkpoints.native as native

    def refuse(*args, **kwargs):  # validation must never load a checkpoint
        raise AssertionError("a checkpoint was loaded during validation")

    monkeypatch.setattr(native, "load_native", refuse)
    raw = base()
    raw["models"]["stu"] = network_model("pd", role="student")
    raw["runs"] = [{"model": "stu", "sampler": "cm_multistep", "nfe": [1]}]
    assert not (tmp_path / "no/such/dir/weights.pt").exists()
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].sampler", "'cm_multistep'", "'consistency'", "samplers for pd: ddim")
    # The same model with a sampler it has validates, checkpoint still absent.
    raw["runs"] = [{"model": "stu", "sampler": "ddim", "nfe": [1, 2]}]
    assert [r.row_id for r in load(tmp_path, raw).rows] == ["stu.ddim.nfe1", "stu.ddim.nfe2"]


def test_pd_student_cannot_heun_but_teacher_can(tmp_path):
    raw = base()
    raw["models"]["stu"] = network_model("pd", role="student")
    raw["runs"] = [{"model": "stu", "sampler": "heun", "nfe": [1]}]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].sampler", "'denoise'", "samplers for pd: ddim")
    raw["models"]["stu"]["role"] = "teacher"
    assert load(tmp_path, raw).rows[0].row_id == "stu.heun.nfe1"


def test_edm_cannot_use_cm_multistep(tmp_path):
    raw = base()
    raw["models"]["net"] = network_model("edm")
    raw["runs"] = [{"model": "net", "sampler": "cm_multistep", "nfe": [1]}]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].sampler", "'consistency'", "samplers for edm: heun, euler, ddim")


def test_heun_on_cd_names_the_denoise_map(tmp_path):
    raw = base()
    raw["models"]["cdm"] = network_model("cd")
    raw["runs"].append({"model": "cdm", "sampler": "heun", "nfe": [3]})
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[1].sampler", "'heun'", "'denoise'", "cd models lack")
    usable = msg.split("samplers for cd:")[1].strip()
    assert usable == "cm_multistep"


def test_impossible_heun_nfe(tmp_path):
    raw = base()
    raw["runs"][0]["nfe"] = [2]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].nfe[0]", "NFE 2", "odd")


def test_impossible_nfe_later_in_the_list(tmp_path):
    raw = base()
    raw["runs"][0]["nfe"] = [1, 3, 4]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].nfe[2]", "NFE 4", "odd")


def test_nfe_must_be_positive_integers(tmp_path):
    raw = base()
    raw["runs"][0]["nfe"] = [0]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].nfe[0]", "≥ 1")
    raw["runs"][0]["nfe"] = ["three"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].nfe[0]", "expected an integer")


def test_unknown_sampler_option_lists_accepted(tmp_path):
    raw = base()
    raw["runs"][0]["options"] = {"churn": 10}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].options", "churn", "accepted: clip_denoised, rho, s_churn, s_max, s_min, s_noise")


def test_known_sampler_option_is_kept(tmp_path):
    raw = base()
    raw["runs"][0]["options"] = {"s_churn": 10}
    assert load(tmp_path, raw).rows[0].options == {"s_churn": 10}


def test_unknown_run_key(tmp_path):
    raw = base()
    raw["runs"][0]["nfes"] = [1]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].nfes", "unknown key", "model, sampler, nfe, name, options")


def test_duplicate_row_ids(tmp_path):
    raw = base()
    raw["runs"] = [
        {"model": "mix", "sampler": "ctm_gamma", "nfe": [1, 2], "options": {"gamma": 0.0}},
        {"model": "mix", "sampler": "ctm_gamma", "nfe": [2], "options": {"gamma": 1.0}},
    ]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[1].nfe[0]", "mix.ctm_gamma.nfe2", "runs[0]", "'name'")
    raw["runs"][1]["name"] = "ctm_gamma1"
    ids = [r.row_id for r in load(tmp_path, raw).rows]
    assert ids == ["mix.ctm_gamma.nfe1", "mix.ctm_gamma.nfe2", "mix.ctm_gamma1.nfe2"]


def test_sampler_given_as_a_list_is_a_config_error(tmp_path):
    raw = base()
    raw["runs"][0]["sampler"] = ["heun"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "runs[0].sampler", "heun, euler")


@pytest.mark.parametrize("options, key", [
    ({"gamma": 3.0}, "gamma"),
    ({"time_points": {2: [80.0, 0.002]}}, "time_points"),
])
def test_bad_sampler_option_values_fail_validation(tmp_path, options, key):
    raw = base()
    raw["runs"].append({"model": "mix", "sampler": "ctm_gamma", "nfe": [2], "options": options})
    err, msg, path = error(tmp_path, raw)
    assert str(path) in msg and "runs[1].options" in msg and key in msg


# --- metrics, features, reference ------------------------------------------------------------


def test_unknown_metric(tmp_path):
    raw = base()
    raw["metrics"] = ["fid", "no_such_metric"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "metrics[1]", "'no_such_metric'", "fid, sfid, fd_dinov2, cmmd, inception_score, precision_recall, kid, density_coverage")


def test_missing_reference_for_fid(tmp_path):
    raw = base()
    del raw["reference"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "reference", "fid", "reference.path", "reference.model")


def test_missing_reference_for_precision_recall(tmp_path):
    raw = base()
    del raw["reference"]
    raw["metrics"] = ["inception_score", "precision_recall"]
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "reference", "precision_recall")
    assert "inception_score" not in msg


def test_inception_score_needs_no_reference(tmp_path):
    raw = base()
    del raw["reference"]
    raw["metrics"] = ["inception_score"]
    assert load(tmp_path, raw).reference == {}


def test_reference_model_must_be_an_analytic_model(tmp_path):
    raw = base()
    raw["models"]["net"] = network_model("edm")
    raw["reference"] = {"model": "net"}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "reference.model", "'net'", "accepted: mix")


def test_reference_path_excludes_other_keys(tmp_path):
    raw = base()
    raw["reference"] = {"path": "ref.npz", "num_images": 5}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "reference.num_images", "unknown key", "path")


def test_unknown_extractor(tmp_path):
    raw = base()
    raw["features"] = {"extractor": "inception"}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "features.extractor", "'inception'", "pixels, gmm-posterior")


def test_gmm_posterior_extractor_needs_a_model(tmp_path):
    raw = base()
    raw["features"] = {"extractor": "gmm-posterior"}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "features.model", "mix")


def test_unknown_metric_option(tmp_path):
    raw = base()
    raw["metric_options"] = {"splits": 3}
    err, msg, path = error(tmp_path, raw)
    assert_names(err, msg, path, "metric_options.splits", "is_splits, is_split_size, is_shuffle_seed, pr_k, pr_batch_size, fid_sqrt")


# --- --set overrides -------------------------------------------------------------------------


def test_overrides_take_effect(tmp_path):
    path = write(tmp_path, base())
    before = path.read_text()
    suite = load_suite(path, ["num_samples=10", "runs.0.nfe=[1,3]", "models.mix.ode_steps=8"])
    assert suite.num_samples == 10
    assert [r.row_id for r in suite.rows] == ["mix.heun.nfe1", "mix.heun.nfe3"]
    assert [r.nfe for r in suite.rows] == [1, 3]
    assert suite.models["mix"].options["ode_steps"] == 8
    assert path.read_text() == before  # overrides never write the file
    plain = load_suite(path)
    assert (plain.num_samples, plain.models["mix"].options["ode_steps"]) == (64, 16)


def test_override_values_are_parsed_as_yaml_and_validated(tmp_path):
    suite = load(tmp_path, base(), ["runs.0.options={s_churn: 5}", "metrics=[fid, inception_score]"])
    assert suite.rows[0].options == {"s_churn": 5}
    assert suite.metrics == ("fid", "inception_score")
    err, msg, path = error(tmp_path, base(), ["num_samples=many"])
    assert_names(err, msg, path, "num_samples", "expected an integer")
    err, msg, path = error(tmp_path, base(), ["runs.0.nfe=[2]"])
    assert_names(err, msg, path, "runs[0].nfe[0]", "odd")


def test_override_without_equals_is_an_error(tmp_path):
    err, msg, path = error(tmp_path, base(), ["nokey"])
    assert str(path) in msg
    assert "nokey" in msg
    assert "key.path=value" in msg


def test_override_list_index_out_of_range(tmp_path):
    err, msg, path = error(tmp_path, base(), ["runs.3.nfe=[1]"])
    assert str(path) in msg
    assert "runs.3" in msg
    err, msg, path = error(tmp_path, base(), ["runs.7=[1]"])
    assert "index '7'" in msg and "1 items" in msg


def test_apply_override_in_place():
    raw = base()
    apply_override(raw, "features.extractor=pixels", "s.yaml")
    apply_override(raw, "runs.0.sampler=euler", "s.yaml")
    assert raw["features"]["extractor"] == "pixels"
    assert raw["runs"][0]["sampler"] == "euler"
    with pytest.raises(ConfigError, match="s.yaml"):
        apply_override(raw, "num_samples.x=3", "s.yaml")


# --- row expansion ---------------------------------------------------------------------------


def test_rows_expand_one_per_nfe_in_order(tmp_path):
    raw = base()
    raw["models"]["mix2"] = copy.deepcopy(raw["models"]["mix"])
    raw["runs"] = [
        {"model": "mix", "sampler": "heun", "nfe": [5, 1, 3]},
        {"model": "mix", "sampler": "ctm_gamma", "name": "jump", "nfe": [2, 1], "options": {"gamma": 0.0}},
        {"model": "mix2", "sampler": "ddim", "nfe": [4]},
    ]
    rows = load(tmp_path, raw).rows
    assert [r.row_id for r in rows] == [
        "mix.heun.nfe5", "mix.heun.nfe1", "mix.heun.nfe3", "mix.jump.nfe2", "mix.jump.nfe1", "mix2.ddim.nfe4",
    ]
    assert all(isinstance(r, Row) for r in rows)
    assert [r.nfe for r in rows] == [5, 1, 3, 2, 1, 4]
    assert [r.model for r in rows] == ["mix"] * 5 + ["mix2"]
    assert [r.sampler for r in rows] == ["heun"] * 3 + ["ctm_gamma"] * 2 + ["ddim"]
    assert [r.label for r in rows] == ["heun"] * 3 + ["jump"] * 2 + ["ddim"]
    assert rows[3].options == rows[4].options == {"gamma": 0.0}
    assert rows[0].options == {}


def test_fingerprint_changes_with_numbers_not_with_batch_size(tmp_path):
    a = parse_suite(base(), "a.yaml", tmp_path)
    raw = base()
    raw["batch_size"] = 7
    b = parse_suite(raw, "a.yaml", tmp_path)
    raw["num_samples"] = 65
    c = parse_suite(raw, "a.yaml", tmp_path)
    assert a.row_fingerprint(a.rows[0]) == b.row_fingerprint(b.rows[0])
    assert a.row_fingerprint(a.rows[0]) != c.row_fingerprint(c.rows[0])


def test_parse_suite_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_suite(["not", "a", "mapping"], "x.yaml", Path("."))
