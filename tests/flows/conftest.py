"""A real Prefect server for the deployment and browser tests, started once for tests/flows/.

`server` starts `prefect server` on a free loopback port (its own PREFECT_HOME in tmp), creates
the `tuneline` process pool, runs `prefect deploy --all` (prefect.yaml) and starts a worker, all
with the functions `tuneline ui` uses; at the end it kills their process groups and checks that
none is left running. It yields the API URL; tests talk to it through `on(api)`.
"""

from __future__ import annotations

import pytest

from tests.support.server_runs import SERVER_LOGS
from tuneline import ui


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    """A real server + deployments + worker; yields the API URL, stops every process after."""
    home = tmp_path_factory.mktemp("prefect-server")
    procs = []
    try:
        proc, api = ui.start_server(home, ui.free_port(), log=home / "server.log")
        procs.append(proc)
        SERVER_LOGS[api] = home / "server.log"
        ui.wait_healthy(api, proc)
        # poll often: the default (15 s) would dominate these short runs
        env = ui.prefect_env(home, api, PREFECT_WORKER_QUERY_SECONDS="1", TUNELINE_PROGRESS="0")
        ui.ensure_pool(env)
        ui.deploy_all(env)
        procs.append(ui.start_worker(env, log=home / "worker.log"))
        # No process-wide PREFECT_API_URL: tests/flows/test_finetune.py's harness may be entered
        # later and stay innermost; the helpers in tests/support/server_runs.py take `api`.
        yield api
    finally:
        ui.stop(procs)
        for p in procs:
            assert p.poll() is not None, f"{p.args} still running"
