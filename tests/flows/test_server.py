"""The deployments against a REAL Prefect server: deploy, trigger through the API, fail, re-run.

The `server` fixture (tests/flows/conftest.py) starts `prefect server`, deploys prefect.yaml
and starts a worker, with the functions `tuneline ui` uses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from tests.support.server_runs import (
    last_lineage,
    manifests_created,
    on,
    server_artifact_keys,
    shrunk_demo_config,
    trigger,
)
from tuneline.artifacts import ArtifactStore
from tuneline.config import STAGES, load_config
from tuneline.pipeline import plan_keys

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    return shrunk_demo_config(tmp_path_factory.mktemp("server-run"))


@pytest.fixture(scope="module")
def full_run(server, tiny_cfg):
    return trigger(server, "finetune/demo", config=tiny_cfg)


def test_deployments_registered_with_schedule_and_repo_working_dir(server):
    configs = sorted((REPO / "deployments").glob("*.yaml"))

    async def read():
        async with get_client() as client:
            return (
                {c.stem: await client.read_deployment_by_name(f"finetune/{c.stem}") for c in configs},
                await client.read_deployment_by_name("rerun-stage/rerun-stage"),
            )

    with on(server):
        per_config, rerun = asyncio.run(read())
    # one deployment per config file, whose run form opens with exactly that file's config
    for c in configs:
        assert per_config[c.stem].parameters["config"] == load_config(c).model_dump(mode="json"), c.name
    nightly = per_config["demo"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.work_pool_name == rerun.work_pool_name == "tuneline"
    step = nightly.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
    assert Path(step["directory"]).resolve() == REPO


def test_api_triggered_run_completes_with_artifacts_and_reports(server, full_run, tiny_cfg):
    assert full_run.state.is_completed(), full_run.state
    store = ArtifactStore(tiny_cfg.run.artifact_root)
    assert all(store.exists(s, r.key) for s, r in plan_keys(tiny_cfg).items())
    assert {f"{s}-report" for s in STAGES} <= server_artifact_keys(server, full_run.id)
    lineage = last_lineage(tiny_cfg)
    assert list(lineage["stages"]) == list(STAGES)
    assert not any(o["reused"] for o in lineage["stages"].values())


def test_failed_stage_fails_the_run_and_rerun_stage_reuses_the_rest(server, full_run, tiny_cfg):
    assert full_run.state.is_completed()
    # a new evaluate setting: only evaluate's key changes (and card's, which reads its report)
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.evaluate.num_samples = 0
    before = manifests_created(cfg)
    assert set(before) == set(STAGES) - {"evaluate", "card"}  # card reads evaluate's report
    fail = {"TUNELINE_FAIL": "evaluate:2"}  # the first attempt and its retry fail

    failed = trigger(server, "finetune/demo", env=fail, config=cfg)
    assert failed.state.is_failed(), failed.state
    faults = Path(cfg.run.artifact_root) / "faults" / "evaluate"
    assert faults.read_text() == "2", "evaluate should have been attempted twice (one retry)"
    assert "evaluate" not in manifests_created(cfg)

    rerun = trigger(server, "rerun-stage/rerun-stage", env=fail, stage="evaluate", config=cfg)
    assert rerun.state.is_completed(), rerun.state
    after = manifests_created(cfg)
    assert set(after) == set(STAGES)
    assert {s: after[s] for s in before} == before, "earlier stages must be reused, not rebuilt"
    lineage = last_lineage(cfg)
    assert {s: o["reused"] for s, o in lineage["stages"].items()} == {s: s not in ("evaluate", "card") for s in STAGES}
    assert "evaluate-report" in server_artifact_keys(server, rerun.id)


def test_transient_failure_succeeds_on_retry(server, full_run, tiny_cfg):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.evaluate.max_new_tokens = 2  # a new evaluate key: evaluate has work to do
    faults = Path(cfg.run.artifact_root) / "faults" / "evaluate"
    faults.unlink(missing_ok=True)  # re-arm the injection

    run = trigger(server, "finetune/demo", env={"TUNELINE_FAIL": "evaluate:1"}, config=cfg)
    assert run.state.is_completed(), run.state
    assert faults.read_text() == "1", "the first attempt should have failed and the retry succeeded"
    assert set(manifests_created(cfg)) == set(STAGES)
