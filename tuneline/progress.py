"""Progress bars for long stage work (rich; quiet when TUNELINE_PROGRESS=0, e.g. in CI logs)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("TUNELINE_PROGRESS", "1") != "0"


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterates ``items`` while showing a progress bar labelled ``description``."""
    if not enabled():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=False)


# ---------------------------------------------------------------------------------------------
# Logging and live progress from stage code, without importing the orchestrator: while a stage
# runs under Prefect, tuneline.orchestration installs a Reporter (Prefect's run logger, progress
# artifacts in the UI); in plain calls and unit tests the defaults log to "tuneline" and do
# nothing else.


class ProgressHandle:
    """A progress indicator a long stage moves as it works (no-op unless a reporter shows it)."""

    def update(self, percent: float, description: str | None = None) -> None:
        return None


class Reporter:
    """What an orchestrator gives stage code: a logger and progress handles."""

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        return logging.getLogger("tuneline")

    def progress(self, stage: str, description: str) -> ProgressHandle:
        return ProgressHandle()


_DEFAULT = Reporter()
_reporter: ContextVar[Reporter | None] = ContextVar("tuneline_reporter", default=None)


def logger() -> logging.Logger | logging.LoggerAdapter:
    """The logger stage code writes to (the Prefect UI's run log inside a run)."""
    return (_reporter.get() or _DEFAULT).logger()


def progress_handle(stage: str, description: str) -> ProgressHandle:
    """A progress indicator for ``stage`` (a ``<stage>-progress`` artifact inside a run)."""
    return (_reporter.get() or _DEFAULT).progress(stage, description)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
