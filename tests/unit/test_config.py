import math
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from app.builder import Classifier, Explainer, Ingress, Postprocessor, Tokenizer, config_options
from app.config import AppArgs, ExplainerConfig, IngressConfig, ModelConfig
from train.config import ConfigError, load_config

ROOT = Path(__file__).parents[2]
USER_CONFIGS = {"Ingress": IngressConfig, "Classifier": ModelConfig, "Explainer": ExplainerConfig}


@pytest.mark.parametrize("preset", ["tiny", "default", "gpu"])
def test_presets_load(preset):
    assert load_config(preset).epochs >= 1


def test_overrides_apply_and_none_keeps_the_preset():
    cfg = load_config("tiny", {"epochs": 7, "max_length": None})
    assert cfg.epochs == 7 and cfg.max_length == 32


def test_unknown_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learnig_rate: Extra inputs are not permitted"):
        load_config(str(path))


def test_bad_value_names_field_and_value():
    with pytest.raises(ConfigError, match=r"epochs: Input should be greater than or equal to 1 \(got 0\)"):
        load_config("tiny", {"epochs": 0})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; presets: default, gpu, tiny"):
        load_config("huge")


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_serve_configs_pass_every_reader(name):
    config = yaml.safe_load((ROOT / name).read_text())
    ServeDeploySchema(**config)
    (app,) = config["applications"]
    AppArgs.read(app["args"], "args")
    for deployment in app["deployments"]:
        reader = USER_CONFIGS.get(deployment["name"])
        if reader:
            reader.read(deployment.get("user_config"), deployment["name"])
        assert deployment["ray_actor_options"]["num_cpus"] > 0


def test_default_graph_fits_two_cores():
    # At its minimum replicas, as it starts (the integration tests' clusters have 2 CPUs too).
    options = config_options()
    cpus = sum(o["ray_actor_options"]["num_cpus"] * o["autoscaling_config"]["min_replicas"] for o in options.values())
    assert cpus <= 2
    # The Explainer scales from zero; once it runs, the graph still fits the 2 CPUs.
    assert options["Explainer"]["autoscaling_config"]["min_replicas"] == 0
    assert cpus + options["Explainer"]["ray_actor_options"]["num_cpus"] <= 2


def test_explainer_runs_one_at_a_time_with_a_bounded_queue():
    explainer = config_options()["Explainer"]
    assert explainer["max_ongoing_requests"] == 1 and 0 < explainer["max_queued_requests"] <= 16


def test_explain_default_steps_within_the_maximum():
    with pytest.raises(ValueError, match=r"explain_default_steps \(65\) exceeds explain_max_steps \(64\)"):
        AppArgs.read({"explain_default_steps": 65}, "args")


def test_a_rollouts_extra_replicas_fit_beside_the_graph():
    # A rollout starts a surging deployment's new replicas before its old ones stop; a share that
    # does not fit the CPUs left free waits forever (a 0.3-CPU tokenizer did). The surges take
    # turns: each returns its share when its old replica stops, and a deployment without surge
    # stops before it starts, so each surge on its own must fit.
    options = config_options()
    free = 2 - sum(o["ray_actor_options"]["num_cpus"] * o["autoscaling_config"]["min_replicas"] for o in options.values())
    for name, o in options.items():
        surge = math.ceil(o.get("max_surge_percent", 0) * o["autoscaling_config"]["min_replicas"] / 100)
        assert surge * o["ray_actor_options"]["num_cpus"] <= free + 1e-9, name
    assert options["Ingress"]["graceful_shutdown_timeout_s"] > options["Ingress"]["user_config"]["version_wait_s"]


def test_serve_config_is_the_one_home_of_serving_tunables():
    options = config_options()
    # No deployment option is set in code (a decorator value would be a second home) ...
    for deployment in (Ingress, Tokenizer, Classifier, Postprocessor, Explainer):
        assert deployment._deployment_config.user_configured_option_names == set(), deployment.name
        assert options[deployment.name]["ray_actor_options"]["num_cpus"] > 0
    # ... and serve_config.yaml spells out every user_config field and request limit.
    for name, reader in USER_CONFIGS.items():
        assert set(options[name]["user_config"]) == set(reader.model_fields), name
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    limits = {"max_items", "max_text_chars", "max_body_bytes", "max_request_tokens", "max_in_flight",
              "rate_limit_per_s", "rate_limit_burst", "request_log_sample_rate", "explain_default_steps",
              "explain_max_steps", "explain_max_step_tokens", "explain_timeout_s", "explain_rate_limit_per_s",
              "explain_rate_limit_burst"}
    assert limits <= set(app["args"])


def test_user_config_readers_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match="Classifier: max_batch_sise: Extra inputs"):
        ModelConfig.read({"max_batch_sise": 8}, "Classifier")
    with pytest.raises(ValueError, match="Ingress: max_batch_texts: Input should be greater than or equal to 1"):
        IngressConfig.read({"max_batch_texts": 0}, "Ingress")
    with pytest.raises(ValueError, match="args: max_itms"):
        AppArgs.read({"max_itms": 3}, "args")


def test_token_cap_can_fire_with_the_default_recipe():
    # A full request of texts at the default recipe's max_length holds more than the cap: the
    # cap is a real limit, not one that max_items and max_length already enforce.
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    for args in (AppArgs(), AppArgs.read(app["args"], "args")):
        assert args.max_items * load_config("default").max_length > args.max_request_tokens


def test_label_columns_imply_multi_label_and_round_trip():
    cfg = load_config("tiny", {"label_columns": ["sports", "tech"]})
    assert cfg.multi_label and cfg.separator == "|"
    from train.config import parse_config

    assert parse_config(cfg.model_dump()) == cfg  # a resumed run reads its saved config back


@pytest.mark.parametrize("overrides,message", [
    ({"label_separator": ";"}, "label_separator describes multi-label data; it needs multi_label: true"),
    ({"label_columns": ["a", "b"], "multi_label": False}, "label_columns describes multi-label data"),
    ({"multi_label": True, "label_separator": ";", "label_columns": ["a", "b"]}, "give one multi-label format"),
    ({"label_columns": ["a", "a"]}, "label_columns names a column twice"),
    ({"label_columns": ["text", "a"]}, "label_columns holds the text column 'text'"),
    ({"label_columns": ["a"]}, "label_columns: List should have at least 2 items"),
])
def test_bad_multi_label_combinations_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)
