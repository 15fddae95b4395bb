"""How fast a re-run started from the Prefect UI gets back to the stage that failed.

The path a UI user takes, end to end: a local ``prefect server`` with the deployments and a
process worker (what ``tuneline ui`` starts; the worker polls every 2 s as there), the
``finetune/demo`` deployment run on the real demo config (fresh store) with ``TUNELINE_FAIL=evaluate:1`` and ``run.retries=0``, so its last stage fails.
Then two re-runs, each timed from the API call until the evaluate task run starts (its
``start_time`` on the server):

- *Retry* on the failed flow run: the UI's button sets the run's state to AwaitingRetry, which
  this script does through the same API; the worker starts the same flow run again;
- the ``rerun-stage`` deployment with ``stage=evaluate``.

Both include what the user waits through: the worker noticing the run, a new flow-run process
starting and importing, the six earlier stages found in the store. The failed run's wall time
(trigger to Failed, same fixed costs) is the denominator. Before the second re-run the evaluate
artifact the first one wrote is deleted, restoring the state the failure left.

Twice: on the demo config, and on the demo with five times the training, to show that the
re-run's cost is fixed (worker poll, process start, stage look-ups), not a share of the work.

    python bench/rerun_via_worker.py        # about 4 minutes on 2 cores
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect.states import AwaitingRetry  # noqa: E402

from tuneline import ui  # noqa: E402
from tuneline.artifacts import ArtifactStore  # noqa: E402
from tuneline.config import load_config  # noqa: E402
from tuneline.pipeline import plan_keys  # noqa: E402

GOAL = 0.05
FAIL_ENV = {"TUNELINE_FAIL": "evaluate:1", "TUNELINE_PROGRESS": "0"}


def evaluate_started_after(t0: float, timeout: float = 300) -> float:
    """Epoch seconds at which an evaluate task run started after ``t0`` (polls the API)."""
    since = datetime.fromtimestamp(t0, tz=UTC)
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    name=TaskRunFilterName(like_="evaluate"), start_time=TaskRunFilterStartTime(after_=since)
                )
            )
            started = [r.start_time.timestamp() for r in runs if r.start_time]
            if started:
                return min(started)
            time.sleep(0.2)
    raise TimeoutError("evaluate never started")


def wait_final(flow_run_id, timeout: float = 600):
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.5)
    raise TimeoutError(f"flow run {flow_run_id} did not finish")


VARIANTS = {  # the demo, and the demo with five times the training: the re-run's cost should not grow
    "demo": [],
    "demo, train.epochs=25": ["train.epochs=25"],
}


def demo_cfg(work: Path, overrides: list[str]):
    cfg = load_config(
        REPO / "deployments" / "demo.yaml", [f"run.artifact_root={work / 'artifacts'}", "run.retries=0", *overrides]
    )
    for s in cfg.ingest.sources:  # absolute: the worker runs flows from the repo directory
        s.path = str(REPO / s.path)
    return cfg


def measure(cfg) -> tuple[float, list[tuple[str, float]]]:
    """The failed full run's wall time, and each re-run's time to evaluate's start."""
    params = {"config": cfg.model_dump(mode="json")}
    t0 = time.time()
    failed = run_deployment(
        "finetune/demo", parameters=params, job_variables={"env": FAIL_ENV}, timeout=900, poll_interval=0.5
    )
    full = time.time() - t0
    assert failed.state.is_failed(), failed.state

    rows = []
    t0 = time.time()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(failed.id, AwaitingRetry(message="Retry from the bench"), force=True)
    rows.append(("Retry the failed run (the UI's button)", evaluate_started_after(t0) - t0))
    assert wait_final(failed.id).state.is_completed()

    ev = plan_keys(cfg)["evaluate"]
    shutil.rmtree(Path(ArtifactStore(cfg.run.artifact_root).uri(ev.stage, ev.key)))  # the state the failure left
    t0 = time.time()
    rerun = run_deployment(
        "rerun-stage/rerun-stage", parameters={"stage": "evaluate", **params}, job_variables={"env": FAIL_ENV}, timeout=0
    )
    rows.append(("rerun-stage deployment, stage=evaluate", evaluate_started_after(t0) - t0))
    assert wait_final(rerun.id).state.is_completed()
    return full, rows


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-worker-"))
    procs = []
    results = {}
    try:
        home = work / "prefect"
        home.mkdir()
        server, api = ui.start_server(home, ui.free_port(), log=home / "server.log")
        procs.append(server)
        ui.wait_healthy(api, server)
        env = ui.prefect_env(home, api, PREFECT_WORKER_QUERY_SECONDS="2")
        ui.ensure_pool(env)
        ui.deploy_all(env)
        procs.append(ui.start_worker(env, log=home / "worker.log"))
        with temporary_settings(updates={PREFECT_API_URL: api}):
            for i, (name, overrides) in enumerate(VARIANTS.items()):
                results[name] = measure(demo_cfg(work / f"v{i}", overrides))  # own store: cold, own fault counter
    finally:
        ui.stop(procs)
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'config':<24} {'full run s':>10}  {'re-run':<40} {'to evaluate s':>13} {'of full run':>11}  goal < 5 %")
    for name, (full, rows) in results.items():
        for how, sec in rows:
            frac = sec / full
            print(f"{name:<24} {full:>10.1f}  {how:<40} {sec:>13.2f} {frac:>10.1%}  {'met' if frac < GOAL else 'missed'}")


if __name__ == "__main__":
    main()
