"""`tuneline ui`: a local Prefect server with tuneline's deployments and a worker, in one command.

    server (SQLite under .prefect/, 127.0.0.1) -> work pool `tuneline` -> `prefect deploy --all`
    -> `prefect worker start --pool tuneline` -> print the URL -> wait for Ctrl-C -> stop all

Every process starts in its own process group, so stopping it also stops what it spawned (the
server's UI, the worker's flow-run subprocesses): nothing is left behind. The tests use the same
functions to run the deployments against a real server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tuneline.deployments import POOL, sync

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """The environment for every Prefect process: its own home (SQLite db there), offline."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=api_url,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # the default: SQLite under PREFECT_HOME
    env.update(extra)
    return env


def _prefect() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [shutil.which("prefect") or "prefect"]


def spawn(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Starts ``prefect <args>`` in a new process group (so ``stop`` reaches its children)."""
    out = open(log, "ab") if log else None  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        _prefect() + args, env=env, cwd=REPO, start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None
    )


def start_server(home: Path, port: int, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Starts ``prefect server start`` on 127.0.0.1:``port``; returns it and its API URL."""
    api = f"http://127.0.0.1:{port}/api"
    proc = spawn(["server", "start", "--host", "127.0.0.1", "--port", str(port)], prefect_env(home, api), log)
    return proc, api


def wait_healthy(api: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Polls ``/api/health`` until the server answers; fails early if it exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api} not healthy after {timeout:.0f} s")


def prefect_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs one short ``prefect`` command to completion; raises with its output if it fails."""
    res = subprocess.run(_prefect() + ["--no-prompt", *args], env=env, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(args)}` failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def ensure_pool(env: dict[str, str]) -> None:
    """Creates the process work pool ``tuneline`` unless it exists."""
    if subprocess.run(_prefect() + ["work-pool", "inspect", POOL], env=env, cwd=REPO, capture_output=True).returncode:
        prefect_cli(["work-pool", "create", POOL, "--type", "process"], env)


def deploy_all(env: dict[str, str]) -> None:
    """Registers every deployment in prefect.yaml (run from the repo, so entrypoints resolve)."""
    # prefect.yaml's pull step uses {{ $PWD }}; a child's PWD is not updated by cwd=
    prefect_cli(["deploy", "--all"], {**env, "PWD": str(REPO)})


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    return spawn(["worker", "start", "--pool", POOL], env, log)


def _descendants(procs: list[subprocess.Popen]) -> list:
    """Every process below ``procs``, including flow runs a worker put in their own session."""
    try:
        import psutil  # installed with accelerate; without it, process groups still cover most
    except ImportError:
        return []
    found = []
    for p in procs:
        try:
            found += psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            pass
    return found


def stop(procs: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM to each process group (newest first), SIGKILL to what is left after ``timeout``."""
    children = _descendants(procs)
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + timeout
    for p in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group may outlive its leader (a flow run the worker started)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for c in children:  # a process that left the group (setsid) is still ours
        try:
            c.kill()
        except Exception:  # already gone
            pass


def _warn_if_stale() -> None:
    """Says so when a config in deployments/ changed after prefect.yaml was synced with it."""
    try:
        res = sync(REPO, check=True)
    except ValueError as e:  # a broken config file: deploying still registers the others
        print(f"warning: {e}", flush=True)
        return
    if res.changed:
        names = ", ".join(res.added + res.updated)
        print(
            f"warning: prefect.yaml is out of step with deployments/ ({names}); the deployments "
            "registered now run the old values. Run `tuneline deployments`, then restart.",
            flush=True,
        )


def serve_ui(port: int | None = None, home: Path | None = None, worker: bool = True) -> None:
    """Runs the server, deployments and worker until Ctrl-C (SIGINT) or SIGTERM, then stops them."""
    home = home or REPO / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    procs: list[subprocess.Popen] = []

    def _terminate(signum, frame):  # SIGTERM behaves like Ctrl-C: unwind and clean up
        raise KeyboardInterrupt

    # SIGINT too: a shell's background job starts with SIGINT ignored
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    try:
        server, api = start_server(home, port, log=home / "server.log")
        procs.append(server)
        print(f"starting Prefect server on 127.0.0.1:{port} (log: {home / 'server.log'}) ...", flush=True)
        wait_healthy(api, server)
        # the worker asks the local server for new runs every 2 s (Prefect's default, 15 s, is
        # for remote servers): a run started in the UI begins at once; set it to override
        env = prefect_env(
            home, api, PREFECT_WORKER_QUERY_SECONDS=os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "2")
        )
        ensure_pool(env)
        _warn_if_stale()
        deploy_all(env)
        if worker:
            procs.append(start_worker(env, log=home / "worker.log"))
        print(f"Prefect UI: http://127.0.0.1:{port}  (deployments registered; worker on pool '{POOL}')")
        print("Ctrl-C stops the server and the worker.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        dead = next(p for p in procs if p.poll() is not None)
        raise RuntimeError(f"`{' '.join(map(str, dead.args[1:3]))}` exited with code {dead.returncode}; see {home}/*.log")
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        # A second Ctrl-C (or a SIGTERM after the SIGINT) must not abort the clean-up half way
        # and leave the worker or its flow runs behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stop(procs)
