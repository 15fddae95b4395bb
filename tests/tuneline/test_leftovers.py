"""Nothing left behind: a run killed with SIGKILL leaves no Prefect server running, and the next
run removes the scratch folders whose owner is gone (tuneline/scratch.py, TemporaryAPI in
tuneline/ui.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tuneline import scratch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch) -> Path:
    """A private $TMPDIR for this process and the processes it starts."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _python(code: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True, **kw)


def _dead_owners_folder(kind: str) -> Path:
    """A scratch folder made by a process that has exited since (its real pid)."""
    child = _python(
        f"from tuneline.scratch import new_scratch_dir; print(new_scratch_dir({kind!r}))",
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    path = Path(out.strip())
    assert path.is_dir() and scratch.owner(path.name).pid == child.pid
    return path


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.1)


# --------------------------------------------------------------------------------- scratch


def test_a_scratch_dir_is_named_for_its_owner_and_removed_when_the_block_ends(tmpdir_):
    with scratch.scratch_dir("dedup") as d:
        (d / "work").write_text("x")
        assert d.parent == tmpdir_ / "tuneline-scratch"
        assert scratch.owner(d.name) == scratch.Owner("dedup", scratch.hostname(), os.getpid())
        assert d.stat().st_mode & 0o777 == 0o700
    assert not d.exists()
    with pytest.raises(ZeroDivisionError), scratch.scratch_dir("train") as d:
        1 / 0  # noqa: B018
    assert not d.exists()
    with pytest.raises(ValueError):
        scratch.new_scratch_dir("../x")


def test_sweep_removes_only_the_folders_of_dead_processes_of_this_host(tmpdir_):
    dead = _dead_owners_folder("dedup")
    (dead / "signatures").mkdir()
    (dead / "signatures" / "0.bin").write_bytes(b"\0" * 1000)
    dead_home = _dead_owners_folder("prefect")
    # a live owner: a process that made its folder and is still running
    live = _python(
        "import sys; from tuneline.scratch import new_scratch_dir; print(new_scratch_dir('train'), flush=True); sys.stdin.read()",
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
    )
    try:
        live_dir = Path(live.stdout.readline().strip())
        with scratch.scratch_dir("train") as mine:
            root = tmpdir_ / "tuneline-scratch"
            dead_pid = scratch.owner(dead.name).pid
            other_host = root / f"dedup-otherhost-{dead_pid}-abcd1234"
            other_host.mkdir()
            unrelated = root / "notes"
            unrelated.mkdir()

            removed = scratch.sweep()

            assert sorted(removed) == sorted([dead, dead_home])
            assert not dead.exists() and not dead_home.exists()
            assert (
                live_dir.is_dir() and mine.is_dir() and other_host.is_dir() and unrelated.is_dir()
            )
            assert scratch.sweep() == []  # nothing more to do
    finally:
        live.stdin.close()
        live.wait(30)
    assert scratch.sweep() == [live_dir] and not live_dir.exists()


def test_sweep_tells_a_reused_pid_from_the_folders_owner(tmpdir_):
    """A pid given to a newer process: the folder is older than that process, so its owner is gone."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        root = scratch.root()
        folder = root / f"dedup-{scratch.hostname()}-{sleeper.pid}-abcd1234"
        folder.mkdir()
        started = psutil.Process(sleeper.pid).create_time()
        assert scratch.sweep() == []  # made after the process started: it may be its own
        os.utime(folder, (started - 60, started - 60))  # made before the process started
        assert scratch.sweep() == [folder]
        assert sleeper.poll() is None  # only the folder goes
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sweep_stops_a_server_that_outlived_its_dead_owner(tmpdir_):
    """Where PR_SET_PDEATHSIG is missing: the Prefect home's server.pid names the server to stop."""
    home = _dead_owners_folder("prefect")
    server = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (home / scratch.SERVER_PID).write_text(
            f"{server.pid} {psutil.Process(server.pid).create_time()}\n"
        )
        assert scratch.sweep() == [home]
        assert server.wait(10) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_stage_runner_sweeps_before_it_runs_anything(tmpdir_, tmp_path):
    from tuneline.config import PipelineConfig
    from tuneline.runner import StageRunner

    dead = _dead_owners_folder("train")
    StageRunner(PipelineConfig.model_validate({"run": {"artifact_root": str(tmp_path / "art")}}))
    assert not dead.exists()


# --------------------------------------------------------------------------------- server


_SERVE = """
import os, sys, time
from tuneline.ui import TemporaryAPI
api = TemporaryAPI.maybe_start()
try:
    with api.serving() as url:
        import httpx
        assert httpx.get(url + "/health").status_code == 200
        assert os.environ["PREFECT_API_URL"] == url
        print(api.proc.pid, api.home, flush=True)
        time.sleep(120)
finally:
    api.stop()
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_the_temporary_api_dies_with_its_run(tmpdir_, sig):
    """kill -9 of the run: the kernel kills the server, the next sweep removes its home.
    Ctrl-C: the run stops the server and removes its home itself."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    run = _python(_SERVE, stdout=subprocess.PIPE, env=env)
    pid = None
    try:
        line = run.stdout.readline()
        assert line, f"the run exited with {run.wait(30)} before its server answered"
        pid, home = int(line.split()[0]), Path(line.split()[1])
        assert home.parent == tmpdir_ / "tuneline-scratch" and (home / "prefect.db").exists()
        assert psutil.Process(pid).ppid() == run.pid
        run.send_signal(sig)
        run.wait(30)
        assert _gone(pid), "the temporary Prefect server outlived its run"
        if sig == signal.SIGKILL:
            assert home.exists()  # nobody cleaned up ...
            assert scratch.sweep() == [home]  # ... until the next run
        else:
            assert not home.exists()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if pid and not _gone(pid, timeout=0):  # the test failed: still clean up
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow  # migrates a fresh db (10-15 s)
def test_a_broken_db_template_is_replaced(tmpdir_, tmp_path, monkeypatch):
    from tuneline import ui

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # as in a fresh `tuneline run`, even when an earlier test entered Prefect's test harness
    monkeypatch.setattr(ui, "_prefect_api_url", lambda: None)
    template = ui.template_dir()
    template.mkdir(parents=True)
    (template / "prefect.db").write_text("not a database")
    (template / "memo_store.toml").write_text("x = 1\n")
    api = ui.TemporaryAPI().start()
    try:
        with api.serving() as url:
            assert url and not api.seeded
    finally:
        api.stop()
    assert (template / "prefect.db").read_bytes().startswith(b"SQLite format 3")
    assert list((tmpdir_ / "tuneline-scratch").iterdir()) == []


def test_with_an_api_configured_no_server_is_started(monkeypatch):
    from tuneline.ui import TemporaryAPI

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert TemporaryAPI.maybe_start() is None


# --------------------------------------------------------------------------------- a real run


def _ours(tmpdir: Path) -> list[psutil.Process]:
    """Every process that runs with this test's private $TMPDIR: all that `tuneline run` started."""
    found = []
    for p in psutil.process_iter():
        try:
            if (
                p.pid != os.getpid()
                and p.environ().get("TMPDIR") == str(tmpdir)
                and p.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_behind(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        TMPDIR=str(tmpdir),
        PREFECT_HOME=str(tmp_path / "prefect"),
        TUNELINE_PROGRESS="0",
        COLUMNS="200",
    )
    args = [
        str(REPO / ".venv/bin/tuneline"),
        "run",
        "deployments/demo.yaml",
        "-s",
        f"run.artifact_root={tmp_path / 'art'}",
    ]
    args += ["-s", "train.epochs=500"]  # minutes of training: killed long before it ends
    log = tmp_path / "run1.log"
    with open(log, "wb") as out:
        run = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    root = tmpdir / "tuneline-scratch"
    try:
        deadline = time.time() + 600
        # train has started once its checkpoint folder (outside the artifact) exists
        while not (train := list((tmp_path / "art" / ".checkpoints" / "train").glob("*"))):
            assert run.poll() is None, (
                f"the run ended ({run.returncode}) before train:\n{log.read_text()[-3000:]}"
            )
            assert time.time() < deadline, "train did not start"
            time.sleep(0.2)
        children = psutil.Process(run.pid).children(recursive=True)
        assert any("tuneline.die_with_parent" in " ".join(c.cmdline()) for c in children), children
        before = {p.pid for p in _ours(tmpdir)}
        assert {c.pid for c in children} <= before  # _ours sees them all
        left = sorted(p.name for p in root.iterdir())
        assert any(n.startswith("prefect-") for n in left), left
        run.kill()
        assert run.wait(30) == -signal.SIGKILL
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    deadline = time.time() + 10
    while (alive := _ours(tmpdir)) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive, [(p.pid, p.cmdline()[:6]) for p in alive]
    dead = [
        p for p in root.iterdir() if scratch.owner(p.name) and scratch.owner(p.name).pid == run.pid
    ]
    assert dead, "the killed run had scratch folders"

    # the next run on the same root: removes the dead run's folders, reuses its stages, finishes
    res = subprocess.run(
        [*args, "--to", "format"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # Prefect's own temporary server (which outlives a kill -9) is never started
    assert "Starting temporary server" not in res.stdout + res.stderr + log.read_text()
    assert "tuneline run 'demo'" in res.stdout and "reused" in res.stdout
    assert not [p for p in dead if p.exists()]
    assert train[0].exists()  # the killed train's checkpoints stay: its re-run resumes from them
    assert list(root.iterdir()) == []  # and its own are gone too
    assert not _ours(tmpdir)
