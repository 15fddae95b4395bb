"""How the data stages spread their work: DataTrove executors chosen by ``run.executor``.

A data stage describes its parallel work as a DataTrove pipeline of ``tasks`` ranks, each rank
reading its own slice of the input and writing its own part file; this module turns that into
a ``LocalPipelineExecutor`` (processes on this machine, the default) or a
``RayPipelineExecutor`` (``run.executor: ray``: a Ray cluster at ``run.ray_address``, or a local
Ray instance started here), with ``run.workers`` ranks at a time. The stage then merges the
parts in rank order, so its output does not depend on the executor or the number of workers,
and neither setting is part of any artifact key.

The settings travel in a context variable that ``tuneline.stage.execute`` sets from the run
section for the stage's duration: they say *how* to compute, never *what*, so they stay out of
the stage's config slice (and its key).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tuneline.sections import RunConfig

_SETTINGS: ContextVar[RunConfig | None] = ContextVar("tuneline_run_settings", default=None)


@contextlib.contextmanager
def using(run_cfg: RunConfig) -> Iterator[RunConfig]:
    """Makes ``run_cfg``'s executor settings the current ones inside the block."""
    token = _SETTINGS.set(run_cfg)
    try:
        yield run_cfg
    finally:
        _SETTINGS.reset(token)


def settings() -> RunConfig:
    """The current run settings (defaults outside ``using``, e.g. in a stage called directly)."""
    return _SETTINGS.get() or RunConfig()


def workers() -> int:
    """How many ranks may run at once: ``run.workers``, or one per CPU core this process may use."""
    n = settings().workers
    if n:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def quiet_datatrove() -> Iterator[None]:
    """Mutes DataTrove's loguru output (every step logs at INFO to stderr) inside the block.

    Its per-step stats.json files are the useful record and are written regardless; errors
    still raise. Worker processes set up their own logging.
    """
    from datatrove.utils.logging import logger

    logger.disable("datatrove")
    try:
        yield
    finally:
        logger.enable("datatrove")


def _ray(cfg: RunConfig) -> None:
    """Connects to ``run.ray_address``, or starts a local Ray instance, once per process."""
    try:
        import ray
    except ImportError as e:
        from tuneline.errors import ConfigError

        raise ConfigError(
            "run.executor=ray needs the `ray` package: pip install 'tuneline[ray]' (or `pip install ray`)"
        ) from e
    if not ray.is_initialized():
        ray.init(**_ray_init_kwargs(cfg))


def _ray_init_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """The ``ray.init`` arguments for ``cfg``; separate so tests can add ``num_cpus`` to them.

    Args:
        cfg: the run settings (``ray_address``: the cluster to join; empty starts a local one).
    """
    return dict(
        address=cfg.ray_address or None,
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=False,
        # The tasks import this checkout's modules (tasks.*, tuneline.*) by name.
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_roots())}},
    )


def _import_roots() -> list[str]:
    root = str(Path(__file__).resolve().parent.parent)
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [root, *extra]


class QuietRankLogs:
    """The first step of every rank: DataTrove's task logger writes INFO lines of every rank to
    stderr (through a progress bar, several times a second); they still go to the rank's log
    file, and ``run_ranks`` quotes the log of a rank that failed.

    Reaches into loguru's handler table: its API can add and remove a handler by id, but not
    find the one DataTrove added to stderr.
    """

    def __repr__(self) -> str:  # DataTrove lists the steps of each rank in its log
        return "tuneline: rank logs to the log file only"

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        import sys

        from datatrove.utils.logging import logger

        for hid, handler in list(logger._core.handlers.items()):
            sink = getattr(handler, "_sink", None)
            if getattr(sink, "_stream", None) is sys.stderr:
                logger.remove(hid)
        return data


def make_executor(
    pipeline: Sequence[Any],
    tasks: int,
    logging_dir: str | os.PathLike,
    depends: Any = None,
    max_workers: int | None = None,
):
    """A DataTrove executor for ``pipeline`` over ``tasks`` ranks, as the run settings say.

    Args:
        pipeline: DataTrove pipeline steps; each rank runs a copy.
        tasks: number of ranks (a stage's slices of work).
        logging_dir: where DataTrove keeps its logs, stats and completion markers (scratch).
        depends: an executor that must finish first (same kind).
        max_workers: a cap below ``run.workers`` (e.g. 1 for work too small to share).
    """
    cfg = settings()
    n = min(workers(), tasks, max_workers or tasks)
    if cfg.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        _ray(cfg)
        # It warns that a local logging_dir must be shared by all nodes: moot for a local Ray
        # instance (the only node is this machine), so muted there and kept for a cluster.
        quiet = quiet_datatrove() if not cfg.ray_address else contextlib.nullcontext()
        with quiet:
            return RayPipelineExecutor(
                pipeline=[QuietRankLogs(), *pipeline],
                tasks=tasks,
                workers=n,
                logging_dir=str(logging_dir),
                depends=depends,
                skip_completed=False,
                cpus_per_task=1,
                mem_per_cpu_gb=cfg.ray_memory_per_task_gb,
            )
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(
        pipeline=[QuietRankLogs(), *pipeline],
        tasks=tasks,
        workers=n,
        logging_dir=str(logging_dir),
        depends=depends,
        skip_completed=False,
    )


def run_ranks(executor: Any, done: Path, what: str) -> None:
    """Runs ``executor`` and checks that every rank left its ``done/<rank>`` marker.

    Ray logs a failed rank and goes on, so a missing marker, not an exception, is how a failure
    shows up there; the local executor re-raises the first rank's exception instead (and stops
    the others). Both become one error naming the unfinished ranks and the log folder, chained to
    the exception where there is one.

    Args:
        executor: from ``make_executor``.
        done: the folder where each rank's last step calls ``mark_done``.
        what: names the work in the error (e.g. the stage).
    """
    error: Exception | None = None
    with quiet_datatrove():
        try:
            executor.run()
        except Exception as e:  # checked against the markers below, so the error names ranks
            error = e
    for path in sorted(done.glob("*.user-error")) if done.exists() else []:
        # A rank stopped on bad input (a TunelineError): that, not "rank N failed", is the
        # message for the user, whichever executor ran it.
        raise pickle.loads(path.read_bytes())
    missing = [r for r in range(executor.world_size) if not (done / f"{r:05d}").exists()]
    if missing:
        raise RuntimeError(
            f"{what}: ranks {missing} of {executor.world_size} did not finish "
            f"(run.executor={settings().executor}){_log_tail(executor, missing[0])}"
        ) from error
    if error is not None:  # every rank finished, the executor's own bookkeeping failed
        raise error


@contextlib.contextmanager
def rank_errors(done: Path, rank: int) -> Iterator[None]:
    """Inside a rank: a user error (``TunelineError``) raised in the block is saved for
    ``run_ranks`` to raise again in the stage's process (Ray only logs a rank's exception).

    Args:
        done: the folder ``run_ranks`` checks.
        rank: this rank.
    """
    from tuneline.errors import TunelineError

    try:
        yield
    except TunelineError as e:
        done.mkdir(parents=True, exist_ok=True)
        (done / f"{rank:05d}.user-error").write_bytes(pickle.dumps(e))
        raise


def _log_tail(executor: Any, rank: int, lines: int = 12) -> str:
    """The end of a rank's log, for the error (the scratch folder holding it is removed)."""
    try:
        with executor.logging_dir.open(f"logs/task_{rank:05d}.log", "r") as fh:
            tail = fh.read().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; the end of rank {rank}'s log:\n" + "\n".join(tail) if tail else ""


def merged_parts(parts: Path, world: int) -> Iterator[dict[str, Any]]:
    """The rows of ``parts/<rank>.jsonl.gz`` in input order, for ranks that took turns on
    batches: batch ``n`` (each row's ``"b"``) is rank ``n % world``'s, rows in order within it.

    Args:
        parts: the folder of part files.
        world: how many ranks wrote them.

    Raises:
        RuntimeError: a part is out of order (a bug in the rank, never data to drop).
    """
    import gzip
    import json

    def rows(rank: int) -> Iterator[dict[str, Any]]:
        with gzip.open(parts / f"{rank:05d}.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    its = [rows(r) for r in range(world)]
    peek = [next(it, None) for it in its]
    n = 0
    while any(p is not None for p in peek):
        if any(p is not None and p["b"] < n for p in peek):
            raise RuntimeError(f"part files out of order at batch {n}: {parts}")
        rank = n % world
        while (row := peek[rank]) is not None and row["b"] == n:
            yield row
            peek[rank] = next(its[rank], None)
        n += 1


def mark_done(done: Path, rank: int) -> None:
    """Written by a rank as its last act: the part files before it are complete.

    Args:
        done: the folder ``run_ranks`` checks.
        rank: this rank.
    """
    done.mkdir(parents=True, exist_ok=True)
    (done / f"{rank:05d}").touch()
