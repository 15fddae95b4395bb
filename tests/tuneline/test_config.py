from pathlib import Path

import pytest
import yaml

from tuneline.config import ConfigError, PipelineConfig, demo_config, load_config


def test_demo_yaml_differs_from_defaults_only_where_it_says_why(repo_root: Path):
    demo = load_config(repo_root / "deployments" / "demo.yaml").model_dump()
    default = PipelineConfig().model_dump()
    demo["pii"].pop("allow_list")
    default["pii"].pop("allow_list")
    assert demo == default


def test_bad_enum_names_field_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["pii.operator=scramble"])
    msg = str(e.value)
    assert "pii.operator" in msg and "'replace'" in msg and "'mask'" in msg and "scramble" in msg


def test_unknown_field_is_rejected_not_ignored():
    with pytest.raises(ConfigError, match=r"train\.lr: unknown field"):
        load_config(None, ["train.lr=0.1"])


def test_cross_field_rule_fails_before_any_work():
    with pytest.raises(ConfigError, match="exceeds model.tiny.max_position_embeddings"):
        load_config(None, ["train.max_length=4096"])
    with pytest.raises(ConfigError, match="needs teacher.base_url"):
        load_config(None, ["augment.teacher={kind: openai, model: m}"])


def test_overrides_parse_yaml_values(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"run": {"name": "x"}, "train": {"epochs": 2}}))
    cfg = load_config(p, ["train.epochs=1", "ingest.languages=[en, de]", "pii.enabled=false"])
    assert cfg.run.name == "x" and cfg.train.epochs == 1
    assert cfg.ingest.languages == ["en", "de"] and cfg.pii.enabled is False


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_trust_remote_code_is_off_by_default():
    assert PipelineConfig().model.trust_remote_code is False


def test_flow_and_cli_default_is_the_demo(repo_root: Path):
    assert demo_config() == load_config(repo_root / "deployments" / "demo.yaml")
    assert "Northwind" in demo_config().pii.allow_list
