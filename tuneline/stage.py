"""The stage contract, and the one function that runs any stage against the artifact store.

A stage is a module under ``tasks/`` with:

- ``STAGE``: its name; ``VERSION``: bump when its behaviour changes (invalidates its artifacts);
- ``SECTIONS``: the config sections its output depends on (what its key hashes);
- ``INPUTS``: the stages whose artifacts it reads, in order;
- ``run(inputs: list[Artifact], cfg: PipelineConfig, out: ArtifactWriter)``: the work. It reads
  only ``inputs`` and writes only through ``out`` (records, ``out.reject``, ``out.report``,
  ``out.file``). Unit tests call it directly;
- optionally ``source_keys(cfg) -> list[str]``: content hashes of files it reads from outside
  the store (ingest's sources), so editing a file's bytes invalidates the stage;
- a thin Prefect ``@task`` wrapper that calls ``run_stage``, owning retries and logging.

Fault injection (tests and demos): ``TUNELINE_FAIL=<stage>[:<n>][,<stage>[:<n>]...]`` makes the
first ``n`` (default 1) attempts of that stage raise ``InjectedFailure`` before it does any work.
Attempts are counted in ``<artifact_root>/faults/<stage>``, so the count survives task retries
and new flow runs: with ``run.retries=1``, ``evaluate:1`` fails once and the retry succeeds;
``evaluate:2`` fails the run, and the next run succeeds. Delete that file to re-arm it. It is an
environment variable, not a config field, so it never changes an artifact key; a stage whose
artifact is reused does no work and never fails.
"""

from __future__ import annotations

import logging
import os
import time
from types import ModuleType
from typing import Any

from pydantic import BaseModel, Field

from tuneline.artifacts import ArtifactRef, ArtifactStore, artifact_key
from tuneline.config import PipelineConfig, stage_config


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run (so the UI shows it), else a plain one."""
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger("tuneline")


class StageOutcome(BaseModel):
    """What a stage task returns: its artifact and whether it was reused from the store."""

    stage: str = Field(description="Stage name.")
    ref: ArtifactRef = Field(description="The artifact the stage produced or found.")
    reused: bool = Field(description="True when the artifact already existed and no work was done.")
    seconds: float = Field(description="Wall time of the stage task, reuse included.")
    report: dict[str, Any] = Field(default_factory=dict, description="The artifact's report.json.")


def stage_key(mod: ModuleType, cfg: PipelineConfig, inputs: list[ArtifactRef]) -> str:
    extra = list(mod.source_keys(cfg)) if hasattr(mod, "source_keys") else []
    return artifact_key(
        mod.STAGE, mod.VERSION, stage_config(cfg, mod.SECTIONS), [i.key for i in inputs] + extra
    )


def run_stage(
    mod: ModuleType, cfg: PipelineConfig, inputs: list[ArtifactRef], force: bool = False
) -> StageOutcome:
    """Runs ``mod`` unless its artifact for these inputs and config exists (or ``force``)."""
    t0 = time.time()
    store = ArtifactStore(cfg.run.artifact_root)
    key = stage_key(mod, cfg, inputs)
    if not force and store.exists(mod.STAGE, key):
        art = store.open(store.ref(mod.STAGE, key))
        stage_logger().info("%s: reusing artifact %s", mod.STAGE, key[:12])
        publish_report(mod.STAGE, art.report, art.ref, reused=True)
        return StageOutcome(stage=mod.STAGE, ref=art.ref, reused=True, seconds=time.time() - t0, report=art.report)
    inject_failure(store, mod.STAGE)
    opened = [store.open(r) for r in inputs]
    stage_logger().info("%s: running (artifact %s)", mod.STAGE, key[:12])
    with store.writer(mod.STAGE, key, inputs, stage_config(cfg, mod.SECTIONS)) as out:
        mod.run(opened, cfg, out)
        ref = out.commit()
        report = out.report
    publish_report(mod.STAGE, report, ref)
    return StageOutcome(stage=mod.STAGE, ref=ref, reused=False, seconds=time.time() - t0, report=report)


class InjectedFailure(RuntimeError):
    """Raised by a stage named in ``TUNELINE_FAIL`` (see the module docstring)."""


def inject_failure(store: ArtifactStore, stage: str) -> None:
    """Raises ``InjectedFailure`` if ``TUNELINE_FAIL`` asks ``stage`` to fail this attempt."""
    spec = os.environ.get("TUNELINE_FAIL", "").strip()
    wanted = dict((part.strip().split(":") + ["1"])[:2] for part in spec.split(",") if part.strip())
    if stage not in wanted:
        return
    path = f"{store._root_path}/faults/{stage}"
    store.fs.makedirs(f"{store._root_path}/faults", exist_ok=True)
    done = int(store.fs.cat_file(path)) if store.fs.exists(path) else 0
    if done >= int(wanted[stage]):
        return
    with store.fs.open(path, "w") as fh:
        fh.write(str(done + 1))
    raise InjectedFailure(
        f"injected failure {done + 1}/{wanted[stage]} of stage {stage!r} (TUNELINE_FAIL={spec!r}); "
        f"unset TUNELINE_FAIL or delete {path} to stop it"
    )


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _flatten(v, name + ".")
        elif isinstance(v, list):
            if v and all(isinstance(x, dict) for x in v):
                continue  # samples and curves: shown in the markdown report, not the table
            rows.append((name, ", ".join(map(str, v))))
        else:
            rows.append((name, v))
    return rows


def in_prefect_run() -> bool:
    try:
        from prefect.context import get_run_context

        get_run_context()
        return True
    except Exception:  # MissingContextError, or Prefect not importable: a plain call
        return False


class ProgressArtifact:
    """A Prefect progress artifact (``<stage>-progress``) that a long stage moves as it works;
    does nothing outside a Prefect run, so unit tests never reach for an API."""

    def __init__(self, stage: str, description: str):
        self.id = None
        if in_prefect_run():
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(progress=0.0, key=f"{stage}-progress", description=description)

    def update(self, percent: float, description: str | None = None) -> None:
        if self.id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.id, progress=min(100.0, percent), description=description)


def publish_report(stage: str, report: dict[str, Any], ref: ArtifactRef, reused: bool = False) -> None:
    """Shows the report in the Prefect UI as a keyed table artifact (no-op outside a run)."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{"metric": k, "value": str(v)} for k, v in _flatten(report)]
    create_table_artifact(
        key=f"{stage}-report",
        table=rows,
        description=f"{stage} report (artifact {ref.key[:12]}{', reused' if reused else ''})",
    )
    md = report.get("markdown")
    if isinstance(md, str):
        create_markdown_artifact(key=f"{stage}-summary", markdown=md, description=f"{stage} summary")
