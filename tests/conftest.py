"""Shared test setup: offline, quiet, and isolated from the user's Prefect and HF state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_home = Path(tempfile.mkdtemp(prefix="tuneline-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_home / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DISTILABEL_CACHE_DIR", str(_home / "distilabel"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TUNELINE_PROGRESS", "0")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"public test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def store_root(tmp_path: Path) -> str:
    return str(tmp_path / "artifacts")


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (SQLite) for every test that runs a flow in-process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# Ray processes started for the module by `ray.init`; anything left of them after
# `ray.shutdown()` would outlive the test session.
_RAY_PROCESS_NAMES = (
    "raylet",
    "gcs_server",
    "ray::",
    "default_worker.py",
    "log_monitor.py",
    "monitor.py",
    "dashboard",
    "runtime_env",
)


def _ray_processes() -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" in cmd and any(n in cmd for n in _RAY_PROCESS_NAMES):
            found.append(p)
    return found


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance with 2 CPUs, started as ``executors._ray`` would start it.

    Session-scoped because starting one takes seconds; stopped at the end, and the test fails if
    any of its processes outlive ``ray.shutdown()``.
    """
    import time

    import psutil

    from tuneline import executors
    from tuneline.sections import RunConfig

    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process; these tests need their own")
    before = {p.pid for p in _ray_processes()}  # another session's Ray is not ours to judge
    t0 = time.perf_counter()
    # num_cpus caps what a local instance takes (default: every core); `_ray` leaves it to Ray.
    ray.init(num_cpus=2, **executors._ray_init_kwargs(RunConfig(executor="ray")))
    print(f"ray.init: {time.perf_counter() - t0:.1f}s")
    try:
        yield ray
    finally:
        ray.shutdown()
        ours = [p for p in _ray_processes() if p.pid not in before]
        _, alive = psutil.wait_procs(ours, timeout=15)
        for p in alive:  # kill them so a failure here does not leave them running
            p.kill()
        assert not alive, f"Ray processes outlived ray.shutdown(): {[p.pid for p in alive]}"
