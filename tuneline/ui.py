"""Local Prefect servers: `tuneline ui`'s, and the temporary API of a `tuneline run`.

`tuneline ui`, in one command:

    server (SQLite under .prefect/, 127.0.0.1) -> work pool `tuneline` -> `prefect deploy --all`
    -> `prefect worker start --pool tuneline` -> print the URL -> wait for Ctrl-C -> stop all

Every process starts in its own process group, so stopping it also stops what it spawned (the
server's UI, the worker's flow-run subprocesses): nothing is left behind. The tests use the same
functions to run the deployments against a real server.

`TemporaryAPI`: what `tuneline run` starts when no Prefect API is configured, in place of the
temporary server Prefect would start itself. Prefect's dies only when its parent exits normally;
a `kill -9` of the run left it running (about 200 MB each). Ours is one process (uvicorn with
Prefect's API app in-process, no UI, as Prefect's own) that the kernel kills when its parent
dies (``PR_SET_PDEATHSIG`` on Linux), with its SQLite db in a scratch folder of the run
(``tuneline.scratch``) that is removed when the run ends and swept by the next run if it was
killed. A fresh db costs about 10 s of migrations; a migrated empty db kept in
``~/.cache/tuneline/prefect-<version>/`` is copied in instead, so it starts as fast as Prefect's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx

from tuneline import scratch
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
    for key in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        env.pop(key, None)  # the default: SQLite under PREFECT_HOME
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


def wait_healthy(api: str, proc: subprocess.Popen, timeout: float = 120, interval: float = 0.5) -> None:
    """Polls ``/api/health`` every ``interval`` s until the server answers; fails early if it exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
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


# ------------------------------------------------------------------ the temporary API of a run

_STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot bind or start the app
DB_FILES = ("prefect.db", "memo_store.toml")


def template_dir() -> Path:
    """Where a migrated, empty db for this Prefect version is kept between runs."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tuneline" / f"prefect-{metadata.version('prefect')}"


def _seed(home: Path) -> bool:
    """Copies the template db into ``home``; False if there is none (yet)."""
    try:
        src = template_dir()
        for name in DB_FILES:
            shutil.copyfile(src / name, home / name)
        return True
    except Exception:  # no template, no home directory, unreadable: migrate a fresh db
        for name in DB_FILES:
            (home / name).unlink(missing_ok=True)
        return False


def _save_template(home: Path) -> None:
    """Keeps a copy of a just-migrated db (no runs in it yet) for the next runs."""
    try:
        dest = template_dir()
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".tmp-{os.getpid()}"
        shutil.copyfile(home / DB_FILES[1], tmp)
        os.replace(tmp, dest / DB_FILES[1])
        with contextlib.closing(sqlite3.connect(home / DB_FILES[0])) as src, contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)  # consistent while the server has it open
        os.replace(tmp, dest / DB_FILES[0])  # the db last: with it, the template is whole
    except Exception:  # a read-only cache, no home directory: the next run migrates again
        pass


def _drop_template() -> None:
    shutil.rmtree(template_dir(), ignore_errors=True)


def _prefect_api_url() -> str | None:
    """The Prefect API this process is configured to use (environment, profile, test harness)."""
    from tuneline.orchestration import configured_api_url

    return configured_api_url()


class TemporaryAPI:
    """A Prefect API server for one `tuneline run`, gone when the run is (however it ends).

    ``start()`` spawns it (call it early: it boots while the caller imports the flow);
    ``serving()`` waits until it answers and points this process's Prefect settings at it (a
    no-op if a Prefect API turns out to be configured after all, e.g. in a profile);
    ``stop()`` drains this process's Prefect log and event queues into it, stops it and removes
    its home. With ``PREFECT_API_URL`` in the environment, ``maybe_start()`` returns None.
    """

    def __init__(self, startup_timeout: float = 120):
        self.startup_timeout = startup_timeout
        self.home: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.api: str | None = None
        self.seeded = False

    @classmethod
    def maybe_start(cls) -> TemporaryAPI | None:
        if os.environ.get("PREFECT_API_URL"):
            return None
        if "prefect.settings" in sys.modules and _prefect_api_url():  # e.g. in a test harness
            return None
        return cls().start()

    def start(self) -> TemporaryAPI:
        self.home = scratch.new_scratch_dir("prefect")
        self.seeded = _seed(self.home)
        self._spawn()
        return self

    def _spawn(self) -> None:
        assert self.home is not None
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        env = prefect_env(
            self.home,
            self.api,
            # relative to the server's cwd (its home): the same URL in every home, so the
            # template's memo of registered blocks stays valid and the registration is skipped
            PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///prefect.db",
            PREFECT_UI_ENABLED="0",  # what Prefect's own temporary server sets
            PREFECT__SERVER_EPHEMERAL="1",
            PREFECT__SERVER_FINAL="1",
        )
        # the kernel kills it when this process dies, even by kill -9 (tuneline/die_with_parent.py)
        args = [sys.executable, "-m", "tuneline.die_with_parent", str(os.getpid()), "uvicorn"]
        args += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--log-level", "error", "--lifespan", "on"]
        with open(self.home / "server.log", "wb") as log:  # this attempt's only
            # its own session: a Ctrl-C in the terminal reaches the run, which then stops it
            # after the flow has reported how it ended
            self.proc = subprocess.Popen(
                args, env=env, cwd=self.home, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            import psutil

            started = psutil.Process(self.proc.pid).create_time()
            (self.home / scratch.SERVER_PID).write_text(f"{self.proc.pid} {started}\n")
        except Exception:  # gone already: wait_healthy says why
            pass

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.home / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _wait(self) -> None:
        for attempt in range(3):
            assert self.proc is not None and self.api is not None
            try:
                wait_healthy(self.api, self.proc, timeout=self.startup_timeout, interval=0.1)
                return
            except RuntimeError:
                code, said = self.proc.returncode, self._log_tail()
                if code == _STARTUP_FAILURE and attempt < 2 and "already in use" in said:
                    self._spawn()  # the port was taken meanwhile: another one
                    continue
                if code == _STARTUP_FAILURE and attempt < 2 and self.seeded:
                    _drop_template()  # perhaps a bad template: start from an empty db
                    for name in DB_FILES:
                        (self.home / name).unlink(missing_ok=True)
                    self.seeded = False
                    self._spawn()
                    continue
                raise RuntimeError(f"the temporary Prefect API exited with code {code} before it answered:\n{said}") from None
            except TimeoutError:
                raise RuntimeError(
                    f"the temporary Prefect API did not answer within {self.startup_timeout:.0f} s "
                    f"(set PREFECT_API_URL to use a running server):\n{self._log_tail()}"
                ) from None

    @contextlib.contextmanager
    def serving(self) -> Iterator[str | None]:
        """Points Prefect at this server for the block; yields its API URL (None if Prefect
        already had an API configured: then this server is stopped unused)."""
        from tuneline.orchestration import drain_queues, use_api

        if _prefect_api_url():
            self.stop()
            yield None
            return
        self._wait()
        if not self.seeded:
            _save_template(self.home)
        before = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = self.api  # for subprocesses
        try:
            with use_api(self.api):
                try:
                    yield self.api
                finally:
                    drain_queues()
        finally:
            if before is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = before

    def stop(self, timeout: float = 10) -> None:
        """Stops the server (SIGTERM, then SIGKILL to its group) and removes its home."""
        if self.proc is not None:
            stop([self.proc], timeout=timeout)
            self.proc = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None
