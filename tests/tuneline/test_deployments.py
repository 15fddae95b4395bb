"""prefect.yaml keeps one deployment per config file, with that config as its parameters."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tuneline.config import ConfigError, load_config
from tuneline.deployments import sync

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path):
    shutil.copy(REPO / "prefect.yaml", tmp_path / "prefect.yaml")
    shutil.copytree(REPO / "deployments", tmp_path / "deployments")
    return tmp_path


def deployments(root: Path) -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]}


def test_committed_prefect_yaml_matches_every_config_file():
    res = sync(REPO, check=True)
    assert not res.changed, f"prefect.yaml is stale ({res}): run `tuneline deployments`"
    assert res.orphaned == []
    deps = deployments(REPO)
    for cfg_file in (REPO / "deployments").glob("*.yaml"):
        assert deps[cfg_file.stem]["parameters"]["config"] == load_config(cfg_file).model_dump(mode="json")


def test_new_config_file_gets_a_deployment_and_user_edits_survive(project):
    before = (project / "prefect.yaml").read_text()
    (project / "deployments" / "nightly-big.yaml").write_text(
        "# A bigger tiny model, for the nightly comparison.\nmodel:\n  tiny:\n    hidden_size: 256\n"
    )
    assert sync(project, check=True).added == ["nightly-big"]
    assert (project / "prefect.yaml").read_text() == before, "check mode must not write"

    res = sync(project)
    assert res.added == ["nightly-big"] and res.updated == []
    deps = deployments(project)
    new = deps["nightly-big"]
    assert new["entrypoint"] == "flows/finetune.py:finetune"
    assert new["work_pool"] == {"name": "tuneline"}
    assert new["description"] == "A bigger tiny model, for the nightly comparison."
    assert new["parameters"]["config"]["model"]["tiny"]["hidden_size"] == 256
    # what the user wrote by hand is kept: the demo's schedule and the file's comments
    assert deps["demo"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    text = (project / "prefect.yaml").read_text()
    assert "# The worker runs flows from this checkout" in text
    assert not sync(project, check=True).changed


def test_edited_config_updates_only_its_parameters(project):
    cfg_file = project / "deployments" / "demo.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("score_threshold: 0.5", "score_threshold: 0.7"))
    res = sync(project)
    assert res.updated == ["demo"] and res.added == []
    deps = deployments(project)
    assert deps["demo"]["parameters"]["config"]["pii"]["score_threshold"] == 0.7
    assert deps["demo"]["schedules"][0]["cron"] == "0 2 * * *"
    assert deps["demo-packed"]["parameters"]["config"]["pii"]["score_threshold"] == 0.5


def test_removed_config_is_reported_not_deleted(project):
    (project / "deployments" / "demo-packed.yaml").unlink()
    res = sync(project)
    assert res.orphaned == ["demo-packed"]
    assert "demo-packed" in deployments(project)


def test_invalid_config_file_fails_before_writing(project):
    before = (project / "prefect.yaml").read_text()
    (project / "deployments" / "broken.yaml").write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"deployments/broken.yaml: (.|\n)*train.epochs"):
        sync(project)
    assert (project / "prefect.yaml").read_text() == before
