"""tuneline runs: the headline numbers of every run of a pipeline, from its lineage records."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from typer.testing import CliRunner

from tuneline import monitoring
from tuneline.artifacts import ArtifactStore
from tuneline.cli import app
from tuneline.orchestration import headline_key
from tuneline.runner import write_lineage


def train_artifact(store: ArtifactStore, key: str, loss: float):
    with store.writer("train", key, [], {}) as out:
        out.report.update({"train_loss": loss, "last_loss": loss / 2, "tokens_per_s": 1000.0})
        return out.commit()


def lineage(store: ArtifactStore, run: str, finished: str, train_ref) -> None:
    stages = {}
    if train_ref is not None:
        stages["train"] = {"stage": "train", "ref": train_ref.model_dump(mode="json"), "reused": False, "seconds": 1.0}
    write_lineage(store, {"run": run, "finished": finished, "seconds": 12.0, "stages": stages, "config": {}})
    time.sleep(1.01)  # record names carry the second they were written


@pytest.fixture
def store(tmp_path):
    store = ArtifactStore(tmp_path / "art")
    losses = [3.0, 2.5, 2.0]
    for day, loss in enumerate(losses, 1):
        ref = train_artifact(store, f"{day}" * 64, loss)
        lineage(store, "nightly", f"2026-11-0{day}T02:00:00Z", ref)
    lineage(store, "other", "2026-11-02T03:00:00Z", None)
    return store


def test_runs_of_a_pipeline_come_with_their_headline_numbers_oldest_first(store):
    rows = monitoring.runs(store, "nightly")
    assert [r["train.train_loss"] for r in rows] == [3.0, 2.5, 2.0]  # quality moves, and it shows
    assert [r["train_key"] for r in rows] == ["1" * 12, "2" * 12, "3" * 12]
    assert {r["run"] for r in monitoring.runs(store)} == {"nightly", "other"}
    assert monitoring.metric_columns(rows) == ["train.train_loss", "train.last_loss", "train.tokens_per_s"]


def test_an_unreadable_record_is_skipped_not_fatal(store, caplog):
    runs_dir = store.cache_dir / "runs"
    (runs_dir / "20261130T000000-1-deadbeef.json").write_text('{"run": "nightly", "fini')
    assert len(monitoring.runs(store, "nightly")) == 3
    assert "unreadable lineage record" in caplog.text


def test_a_run_whose_artifact_is_gone_keeps_its_row_without_numbers(store):
    import shutil

    shutil.rmtree(store.cache_dir / "train" / ("1" * 64))
    rows = monitoring.runs(store, "nightly")
    assert "train.train_loss" not in rows[0] and rows[1]["train.train_loss"] == 2.5


def test_the_cli_lists_and_plots_the_runs_of_a_config(store, tmp_path):
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({"run": {"name": "nightly", "artifact_root": str(store.cache_dir)}}))
    res = CliRunner().invoke(app, ["runs", str(config), "--json", "--plot", str(tmp_path / "runs.png")])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["train.train_loss"] for r in rows] == [3.0, 2.5, 2.0]
    png = (tmp_path / "runs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    table = CliRunner().invoke(app, ["runs", str(config)], env={"COLUMNS": "200"})
    assert "runs of nightly (3)" in table.output and "2026-11-03 02:00" in table.output

    config.write_text(yaml.safe_dump({"run": {"name": "never", "artifact_root": str(store.cache_dir)}}))
    none = CliRunner().invoke(app, ["runs", str(config)])
    assert none.exit_code == 1 and "no runs of never" in none.output


def test_headline_keys_are_stable_and_valid_prefect_keys():
    assert headline_key("demo", "evaluate") == "demo-evaluate-headline"
    assert headline_key("My Nightly_Run 2", "train") == "my-nightly-run-2-train-headline"
