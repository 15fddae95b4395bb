"""Where Prefect meets the stages: the one generic task wrapper, and the hooks that show a
stage's work in the Prefect UI. Apart from ``flows/``, this is the only module that imports
Prefect; stage code never does.

- ``stage_task(stage, run_cfg)``: a Prefect task named after the stage that runs
  ``tuneline.stage.execute``; its retries come from ``run.retries`` only, and only errors a
  retry can fix are retried (``tuneline.errors.is_transient``). A user or input error fails the
  stage at once.
- While a stage task runs, stage code's ``tuneline.progress.logger()`` is Prefect's run logger
  and ``progress_handle()`` moves a ``<stage>-progress`` artifact.
- After a stage, its report is published as ``<stage>-report`` (table) and ``<stage>-summary``
  (markdown, from ``Stage.summary``), on reuse too.
- ``flow(...)``: Prefect's ``@flow`` for tuneline's flows, whose run parameters (the config) are
  stored in Prefect's database with URL credentials redacted (``RedactedFlow``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from prefect import Flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

from tuneline import progress, registry
from tuneline.artifacts import ArtifactRef
from tuneline.errors import TunelineError, is_transient, user_error
from tuneline.redaction import redact_url_text, redact_urls
from tuneline.sections import RunConfig
from tuneline.stage import Stage, StageHooks, StageOutcome, execute, flatten_report


def in_prefect_run() -> bool:
    try:
        get_run_context()
        return True
    except Exception:  # MissingContextError: a plain call
        return False


class PrefectProgress(progress.ProgressHandle):
    def __init__(self, stage: str, description: str):
        self.id = create_progress_artifact(progress=0.0, key=f"{stage}-progress", description=description)

    def update(self, percent: float, description: str | None = None) -> None:
        update_progress_artifact(self.id, progress=min(100.0, percent), description=description)


class PrefectReporter(progress.Reporter):
    """Stage code's logger and progress handles inside a Prefect run."""

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        return get_run_logger()

    def progress(self, stage: str, description: str) -> progress.ProgressHandle:
        return PrefectProgress(stage, description)


def headline_key(run_name: str, stage: str) -> str:
    """The Prefect artifact key of a run's headline table: stable across runs of one pipeline
    (so the UI's artifact page lists them as its history), lowercase letters, digits, dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-") or "run"
    return f"{slug}-{stage}-headline"


def publish_report(
    stage: Stage, report: dict[str, Any], ref: ArtifactRef, reused: bool = False, run_name: str | None = None
) -> None:
    """Shows the report in the Prefect UI as keyed table and markdown artifacts, and the
    stage's headline numbers as a table under a key that stays the same for every run of the
    pipeline (``<run>-<stage>-headline``): its versions are the run-over-run history."""
    if not in_prefect_run():
        return
    if stage.headline is not None and run_name is not None:
        try:
            numbers = stage.headline(report)
        except (KeyError, TypeError, ValueError):  # an old report without the fields
            numbers = {}
        if numbers:
            create_table_artifact(
                key=headline_key(run_name, stage.name),
                table=[{"artifact": ref.key[:12], "reused": reused, **numbers}],
                description=f"{run_name}: {stage.name} headline metrics (one version per run)",
            )
    report = redact_urls(report)  # reports written before redaction may still hold a URL's password
    rows = [{"metric": k, "value": str(v)} for k, v in flatten_report(report)]
    note = f"artifact {ref.key[:12]}{', reused' if reused else ''}"
    create_table_artifact(key=f"{stage.name}-report", table=rows, description=f"{stage.name} report ({note})")
    try:
        md = redact_url_text(stage.summary(report))
    except Exception as e:  # an old report without a field the summary wants: show the table only
        get_run_logger().warning("%s: could not render its summary (%s)", stage.name, e)
        return
    create_markdown_artifact(key=f"{stage.name}-summary", markdown=md, description=f"{stage.name} summary ({note})")


class RedactedFlow(Flow):
    """A Prefect flow whose run parameters go to Prefect's database with URL credentials
    redacted. The flow itself is called with the config as given; only the stored copy (what
    the UI shows, and what a re-run from the UI starts from) says ``***`` instead."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return redact_urls(super().serialize_parameters(parameters))


def flow(**options: Any) -> Callable[[Callable[..., Any]], RedactedFlow]:
    """``prefect.flow(**options)`` making a ``RedactedFlow``."""
    return lambda fn: RedactedFlow(fn=fn, **options)


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: only errors a second attempt may not see."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as e:  # the result could not be read: decide on that error
            exc = e
    retry = is_transient(exc if isinstance(exc, BaseException) else None)
    if not retry and user_error(exc) is None:
        get_run_logger().info("not retrying %s: a retry cannot fix it", type(exc).__name__)
    return retry


def _run(name: str, cfg: Any, inputs: list[ArtifactRef], force: bool = False) -> StageOutcome:
    stage = registry.get(name)
    with progress.reporting(PrefectReporter()):
        publish = functools.partial(publish_report, run_name=cfg.run.name)
        return execute(stage, cfg, inputs, force=force, hooks=StageHooks(logger=get_run_logger(), publish=publish))


def stage_task(stage: Stage, run_cfg: RunConfig):
    """The Prefect task that runs ``stage``: named after it, retried per ``run`` on transient errors."""
    return task(
        _run,
        name=stage.name,
        task_run_name=stage.name,
        cache_policy=NO_CACHE,  # the artifact store is the cache
        retries=run_cfg.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=run_cfg.retry_delay_seconds) if run_cfg.retries else 0,
        retry_condition_fn=_retry_if_transient,
        description=stage.describe(),
    )


def read_secret(name: str) -> str:
    """The value of the Prefect Secret block ``name`` (ValueError when it cannot be loaded)."""
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def _subclasses(cls: type) -> set[type]:
    return {cls} | {s for c in cls.__subclasses__() for s in _subclasses(c)}


class QuietUserErrors(logging.Filter):
    """For console handlers: drops Prefect's failure records for user and input errors (their
    tracebacks, and the "Finished in state Failed(...)" lines that repeat the message), whose
    one message the CLI prints itself. The run's logs in the UI keep them."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            return user_error(exc) is None
        msg = record.getMessage()
        if "Finished in state Failed(" in msg:
            names = "|".join(c.__name__ for c in _subclasses(TunelineError))
            return re.search(rf"\b({names}): ", msg) is None
        return True


def quiet_console_for_user_errors() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, PrefectConsoleHandler) and not any(isinstance(f, QuietUserErrors) for f in h.filters):
                h.addFilter(QuietUserErrors())


# --------------------------------------------------------------------- the temporary API
# (tuneline/ui.py's TemporaryAPI runs the server process; these are its Prefect-side hooks)


def configured_api_url() -> str | None:
    """The Prefect API this process is configured to use (environment, profile, test harness)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


@contextlib.contextmanager
def use_api(api_url: str) -> Iterator[None]:
    """Points this process's Prefect settings at ``api_url`` for the block, also for contexts
    copied before it (Prefect's loop thread), as ``prefect_test_harness`` does."""
    from prefect import context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        global_ctx = getattr(context, "_temporary_global_settings_context", None)  # private, 3.x
        if global_ctx is not None:
            stack.enter_context(global_ctx(context.get_settings_context()))
        yield


def drain_queues(timeout: float = 10) -> None:
    """Sends the logs and events still queued in this process before its API server goes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception:  # never started, or already stopped
            pass
