"""Helpers for tests that run tuneline's deployments on a real Prefect server (tests/flows/)."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tuneline.artifacts import ArtifactStore
from tuneline.config import PipelineConfig, load_config
from tuneline.pipeline import plan_keys

REPO = Path(__file__).resolve().parents[2]


def shrunk_demo_config(d: Path) -> PipelineConfig:
    """The demo config shrunk to seconds: tiny model, 3 steps, a private corpus copy and store in ``d``."""
    shutil.copytree(REPO / "data" / "sample", d / "sample")
    cfg = load_config(
        REPO / "deployments" / "demo.yaml",
        [
            f"run.artifact_root={d / 'artifacts'}",
            "run.retries=1",
            "run.retry_delay_seconds=0",
            "model.tiny.vocab_size=256",
            "model.tiny.hidden_size=32",
            "model.tiny.num_hidden_layers=1",
            "model.tiny.num_attention_heads=2",
            "model.tiny.intermediate_size=64",
            "train.max_steps=3",
            "evaluate.max_examples=8",
            "evaluate.num_samples=1",
            "evaluate.max_new_tokens=4",
        ],
    )
    for s in cfg.ingest.sources:  # absolute: the worker runs flows from the repo directory
        s.path = str(d / "sample" / Path(s.path).relative_to("data/sample"))
    return cfg


SERVER_LOGS: dict[str, Path] = {}  # API URL -> its server's log (tests/flows/conftest.py fills it)


def server_log_tail(api: str, n: int = 60) -> str:
    """The last ``n`` lines of the log of the server at ``api``, for failure messages."""
    log = SERVER_LOGS.get(api)
    if log is None or not log.exists():
        return f"<no server log recorded for {api}>"
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def on(api: str):
    """Prefect calls inside this block go to the server at ``api`` (not to another test's API)."""
    return temporary_settings(updates={PREFECT_API_URL: api})


def trigger(api: str, name: str, env: dict[str, str] | None = None, **parameters):
    """Starts a run of deployment ``name`` on ``api`` and waits for its final state."""
    params = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in parameters.items()}

    def call():
        with on(api):
            return run_deployment(
                name, parameters=params, job_variables={"env": env or {}}, timeout=240, poll_interval=1, as_subflow=False
            )

    # In its own thread: beside Playwright's sync API (an event loop in this thread) Prefect's
    # sync_compatible run_deployment would return a coroutine.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def server_artifact_keys(api: str, flow_run_id) -> set[str]:
    """Keys of the artifacts a flow run (and its subflow runs: rerun-stage calls finetune) made."""

    async def read():
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *(c.id for c in children)]
            arts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            return {a.key for a in arts if a.key}

    with on(api):
        return asyncio.run(read())


def last_lineage(cfg) -> dict:
    runs = sorted((Path(cfg.run.artifact_root) / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def manifests_created(cfg) -> dict[str, str]:
    store = ArtifactStore(cfg.run.artifact_root)
    return {s: store.open(r).manifest["created"] for s, r in plan_keys(cfg).items() if store.exists(s, r.key)}
