"""The data stages' executors: a DataTrove pipeline of ranks runs the same under the local and the
Ray executor and any number of workers, and a rank that fails is named, whichever executor ran it.

The Ray tests use the session's local Ray instance (2 CPUs, ``local_ray`` in tests/conftest.py); they are
skipped where ``ray`` is not installed (it comes with the ``dev`` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest
from datatrove.pipeline.base import PipelineStep

from tuneline import executors
from tuneline.sections import RunConfig

TASKS = 4
ITEMS = 22  # not a multiple of TASKS, so the slices differ in size
def _line(i: int) -> str:
    return f"{i}\t{hashlib.sha256(str(i).encode()).hexdigest()[:16]}\n"


EXPECTED = "".join(_line(i) for i in range(ITEMS))


class WritePart(PipelineStep):
    """Writes this rank's contiguous slice of ``ITEMS`` lines to its own part file.

    Module-level because both executors pickle the pipeline (dill for local worker processes,
    cloudpickle for Ray) by reference, so the workers import it from this module.

    Args:
        folder: where the parts, the ``where`` records and the done markers go.
        fail_rank: a rank that raises instead of writing (to test how failures are reported).
    """

    name = "write part"
    type = "test"

    def __init__(self, folder: str, fail_rank: int | None = None):
        super().__init__()
        self.folder = folder
        self.fail_rank = fail_rank

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank == self.fail_rank:
            raise ValueError(f"rank {rank} fails on purpose")
        out = Path(self.folder)
        lo, hi = rank * ITEMS // world_size, (rank + 1) * ITEMS // world_size
        (out / "parts").mkdir(parents=True, exist_ok=True)
        (out / "parts" / f"{rank:05d}.tsv").write_text("".join(_line(i) for i in range(lo, hi)))
        # Where the rank ran: the Ray test checks it was a Ray worker, not the test process.
        # Ray's RankWorker runs each rank in a forked child of the actor, so the actor is the parent.
        parent = psutil.Process(os.getppid())
        where = {
            "pid": os.getpid(),
            "parent_title": " ".join(parent.cmdline()),
            "raylet_pid": os.environ.get("RAY_RAYLET_PID"),
            "ray_nodelist": os.environ.get("RAY_NODELIST"),
        }
        (out / "where").mkdir(parents=True, exist_ok=True)
        (out / "where" / f"{rank:05d}.json").write_text(json.dumps(where))
        executors.mark_done(out / "done", rank)
        return data


def _run(folder: Path, cfg: RunConfig, fail_rank: int | None = None):
    """Runs ``WritePart`` over ``TASKS`` ranks as ``cfg`` says.

    Args:
        folder: the scratch folder of this run.
        cfg: the run settings (executor, workers).
        fail_rank: passed on to ``WritePart``.

    Returns:
        The executor that ran, the parts merged in rank order, and each rank's ``where`` record.
    """
    with executors.using(cfg):
        ex = executors.make_executor(
            [WritePart(str(folder), fail_rank=fail_rank)], tasks=TASKS, logging_dir=folder / "logs"
        )
        executors.run_ranks(ex, folder / "done", "write parts")
    merged = "".join((folder / "parts" / f"{r:05d}.tsv").read_text() for r in range(TASKS))
    where = [json.loads((folder / "where" / f"{r:05d}.json").read_text()) for r in range(TASKS)]
    return ex, merged, where


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_runs_every_rank_and_the_workers_do_not_change_the_output(tmp_path, workers):
    from datatrove.executor import LocalPipelineExecutor

    ex, merged, where = _run(tmp_path, RunConfig(executor="local", workers=workers))
    assert isinstance(ex, LocalPipelineExecutor) and ex.workers == workers
    assert merged == EXPECTED
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == [
        f"{r:05d}" for r in range(TASKS)
    ]
    pids = {w["pid"] for w in where}
    if workers == 1:
        assert pids == {os.getpid()}  # one worker runs the ranks in this process
    else:
        assert os.getpid() not in pids


def test_ray_executor_runs_the_ranks_in_ray_workers_with_the_same_output(tmp_path, local_ray):
    from datatrove.executor.ray import RayPipelineExecutor

    t0 = time.perf_counter()
    ex, merged, where = _run(
        tmp_path, RunConfig(executor="ray", workers=2, ray_memory_per_task_gb=0.25)
    )
    print(f"ray run of {TASKS} ranks: {time.perf_counter() - t0:.1f}s")
    assert isinstance(ex, RayPipelineExecutor) and ex.workers == 2
    assert merged == EXPECTED  # the same as the local executor's, whatever the workers
    for w in where:
        assert w["pid"] != os.getpid()
        assert w["parent_title"].startswith("ray::RankWorker"), w
        assert w["raylet_pid"] and psutil.pid_exists(int(w["raylet_pid"])), w
        assert w["ray_nodelist"], w  # set by DataTrove's RankWorker around each rank


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failed_rank_is_named(tmp_path, request, executor):
    if executor == "ray":
        request.getfixturevalue("local_ray")
    cfg = RunConfig(executor=executor, workers=2, ray_memory_per_task_gb=0.25)
    with pytest.raises(RuntimeError, match=r"write parts: ranks \[") as info:
        _run(tmp_path, cfg, fail_rank=3)
    missing = [
        int(r) for r in re.search(r"ranks \[([\d, ]+)\]", str(info.value)).group(1).split(",")
    ]
    assert f"run.executor={executor}" in str(info.value)
    # The error points to the logs; the failed rank's traceback is there (Ray's workers do not
    # log to this process).
    assert "fails on purpose" in (tmp_path / "logs" / "logs" / "task_00003.log").read_text()
    if executor == "ray":
        # Ray logs the failure and runs the other ranks to the end.
        assert missing == [3] and info.value.__cause__ is None
    else:
        # The local pool stops at the first error, cutting short whichever ranks were still
        # running (which ones depends on timing), and the error chains the rank's exception.
        assert 3 in missing
        assert isinstance(info.value.__cause__, ValueError)
