"""Every workaround for Distilabel's effects on the process around it, in one place.

Running a Distilabel pipeline inside a Prefect task (or a pytest run) needs some care: its
``Pipeline.run`` rewires logging, signals and its worker pool for a standalone script. Most
workarounds below reach into Distilabel's private names; each says why it is needed and was
checked against distilabel 1.5.3. After upgrading Distilabel, re-check every one of them here:
tests/tasks/augment/ runs real pipelines with a local and an HTTP teacher, on the main thread
and on another one (as Prefect runs tasks), and after parallel torch work in the parent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tuneline.scratch import scratch_dir

# Distilabel's own pool initializer, while ``_init_worker`` wraps it (see ``contained``).
_distilabel_init_worker = None


class Collect(logging.Handler):
    """Keeps Distilabel's warnings (failed teacher calls), to report and to explain errors.

    Passed as ``Pipeline.run(logging_handlers=...)``: a failed LLM call in a Distilabel worker
    becomes a None output plus a warning in its logs, never an exception we could catch.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _init_worker(*args: Any) -> None:
    """Pool initializer for Distilabel's workers: fork-safe torch, the default SIGTERM, then
    Distilabel's own.

    Installed in place of ``distilabel.pipeline.local._init_worker`` (private; 1.5.3 passes it
    as ``Pool(initializer=...)`` in ``Pipeline.run``), because that is the only code that runs
    in every worker before a step does. ``Pool.terminate()`` stops the workers with SIGTERM. A
    handler inherited from the parent (Prefect's raises ``TerminationSignal``) can leave a
    worker holding the pool's queue lock, and ``terminate()`` then waits for it forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:
        # A forked worker inherits the parent's OpenMP pool in a broken state once the parent
        # has run a parallel op (training, scoring): its first parallel op then hangs for
        # ever. One intra-op thread never enters that pool; teachers here are small or remote.
        sys.modules["torch"].set_num_threads(1)
    from distilabel.pipeline import local

    (_distilabel_init_worker or local._init_worker)(*args)  # None in a spawned (fresh) worker


@contextmanager
def contained() -> Iterator[None]:
    """Runs Distilabel quietly and undoes what its run does to the process around it.

    ``Pipeline.run`` clears the root logger's handlers (Prefect's and pytest's), silences some
    library loggers for good (``distilabel.utils.logging._SILENT_LOGGERS``, set to CRITICAL by
    its ``setup_logging``), and installs a SIGINT handler, which Python only allows on the main
    thread (Prefect may run tasks on worker threads). Its INFO chatter and the progress bars of
    the ``datasets`` it builds are kept out of our logs (set DISTILABEL_LOG_LEVEL=INFO to see
    them), and so is its end-of-run citation lookup (``distilabel.distiset._grab_citations``),
    which goes to the network for Hub dataset cards we never push. Its workers get the default
    SIGTERM and fork-safe torch (see ``_init_worker``). All checked against distilabel 1.5.3.
    """
    global _distilabel_init_worker
    import datasets
    from distilabel import distiset
    from distilabel.pipeline import local
    from distilabel.utils import logging as dl_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {n: logging.getLogger(n).level for n in getattr(dl_logging, "_SILENT_LOGGERS", [])}
    main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main else None
    log_level = os.environ.get("DISTILABEL_LOG_LEVEL")
    bars = datasets.utils.logging.is_progress_bar_enabled()
    grab_citations = distiset._grab_citations
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")  # read by the forked workers too
    datasets.utils.logging.disable_progress_bar()
    distiset._grab_citations = lambda dag: []
    _distilabel_init_worker, local._init_worker = local._init_worker, _init_worker
    try:
        yield
    finally:
        local._init_worker, _distilabel_init_worker = _distilabel_init_worker, None
        distiset._grab_citations = grab_citations
        if bars:
            datasets.utils.logging.enable_progress_bar()
        if log_level is None:
            os.environ.pop("DISTILABEL_LOG_LEVEL", None)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in quiet.items():
            logging.getLogger(name).setLevel(lvl)
        if main and sigint is not None:
            signal.signal(signal.SIGINT, sigint)


@contextmanager
def cache_dir() -> Iterator[str]:
    """A temporary ``cache_dir`` for Distilabel pipelines, deleted afterwards.

    Distilabel 1.5.3 writes each pipeline's dump (``pipeline.yaml``), log, batches and step
    data under its cache dir (``$DISTILABEL_CACHE_DIR``, else ``~/.cache/distilabel``), to
    resume a run. Our content-addressed store is the cache, and nothing of a teacher run may
    outlive it, so each run gets a fresh directory that is deleted with it.
    """
    with scratch_dir("distilabel") as path:
        yield str(path)


def run_pipeline(pipeline, leaves: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """Runs a Distilabel pipeline with no cache reuse; returns each leaf's rows and the warnings.

    Args:
        pipeline: a built ``distilabel.pipeline.Pipeline`` (its cache_dir from ``cache_dir``).
        leaves: names of its leaf steps.
    """
    collect = Collect()
    if threading.current_thread() is not threading.main_thread():
        # Pipeline.run installs its SIGINT handler through this private method (1.5.3), and
        # signal.signal raises on any thread but the main one, where Prefect may run a task.
        pipeline._handle_keyboard_interrupt = lambda: None
    with contained():
        distiset = pipeline.run(use_cache=False, logging_handlers=[collect])
        rows: dict[str, list[dict]] = {}
        for name in leaves:
            # A single leaf is renamed "default" (1.5.3); a leaf that produced nothing is absent.
            ds = distiset.get(name) or (distiset.get("default") if len(leaves) == 1 else None)
            rows[name] = ds["train"].to_list() if ds is not None else []
    return rows, collect.messages
