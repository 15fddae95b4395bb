"""The stage contract: a stage is one registered ``Stage`` object, and ``execute`` runs any of
them against the artifact store.

A stage module (or package) under ``tasks/`` defines ``STAGE = Stage(...)``:

- ``name``, ``version`` (bump when behaviour changes: it invalidates the stage's artifacts),
  ``inputs`` (the stages whose artifacts it reads, in order), ``after`` (stages it must follow
  without reading them);
- ``config``: its own config model, which becomes the section ``<name>`` of ``PipelineConfig``,
  and ``uses``: shared sections it also reads (``model``);
- ``run(inputs, cfg, out)``: the work. ``cfg`` is a ``ConfigSlice`` holding *only* the sections
  that key the artifact (``cfg.<name>`` and the ``uses``), so a stage cannot read a setting that
  does not change its key. It reads only ``inputs`` and writes only through ``out``;
- ``summary(report) -> markdown``: its report for people (the Prefect UI, run reports);
- optionally ``source_keys(cfg)``: content hashes of files read from outside the store (ingest's
  sources), ``check(cfg)``: cross-section rules on its slice (raise ``ValueError``), and
  ``highlights(report)``: the one line the CLI prints for it; ``headline(report)``: the numbers
  followed from run to run (`tuneline runs`, the Prefect `<run>-headline` table);
  ``preflight(cfg)``: what only this machine can say about its slice (an API key's variable is
  set, a folder exists, a GPU is there), raising a ``TunelineError`` or ``ValueError`` that
  names the full config path; ``tuneline.preflight`` runs it before the first stage, for the
  stages the run will compute. ``check`` runs wherever a config is validated (the UI, a
  laptop planning a GPU run), so it must not depend on the machine.

Nothing here imports Prefect: ``tuneline.orchestration`` wraps ``execute`` in a task, and passes
the hooks (logging, the UI's report artifacts) through ``StageHooks``.

Fault injection (tests and demos): ``TUNELINE_FAIL=<stage>[:<n>][,<stage>[:<n>]...]`` makes the
first ``n`` (default 1) attempts of that stage raise ``InjectedFailure`` before it does any work.
Attempts are counted in ``<artifact_root>/faults/<stage>``, so the count survives task retries
and new flow runs: with ``run.retries=1``, ``evaluate:1`` fails once and the retry succeeds;
``evaluate:2`` fails the run, and the next run succeeds. Delete that file to re-arm it. It is an
environment variable, not a config field, so it never changes an artifact key; a stage whose
artifact is reused does no work and never fails.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from tuneline import executors
from tuneline.artifacts import (
    MANIFEST,
    Artifact,
    ArtifactRef,
    ArtifactStore,
    ArtifactWriter,
    artifact_key,
)
from tuneline.errors import StoreError, TransientError
from tuneline.redaction import redact_urls
from tuneline.sections import ModelConfig, RunConfig, Section

if TYPE_CHECKING:
    from tuneline.config import PipelineConfig

# Sections every pipeline has, outside any stage; a stage lists those it reads in ``uses``.
SHARED_SECTIONS: dict[str, type[Section]] = {"run": RunConfig, "model": ModelConfig}


class ConfigSlice(BaseModel):
    """The config sections that key one stage's artifact, and nothing else: reading any other
    section is an ``AttributeError``, so a stage's output depends on its key by construction."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            raise AttributeError(
                f"config section {name!r} is not part of this stage's key; add it to the stage's "
                f"`uses` (sections here: {', '.join(type(self).model_fields)})"
            )
        return super().__getattr__(name)  # type: ignore[misc]


RunFn = Callable[[list[Artifact], Any, ArtifactWriter], None]


@dataclass(frozen=True)
class Stage:
    """One lifecycle stage (see the module docstring for the contract)."""

    name: str
    version: int
    config: type[Section]
    run: RunFn
    summary: Callable[[dict[str, Any]], str]
    inputs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    description: str = ""
    records: bool = True  # its artifact holds records (the CLI shows kept/dropped counts)
    source_keys: Callable[[Any], list[str]] | None = None
    check: Callable[[Any], None] | None = None
    highlights: Callable[[dict[str, Any]], str] | None = None
    # The few numbers of a report that are followed from run to run (`tuneline runs`, the
    # `<run>-headline` Prefect table): {"name": number}.
    headline: Callable[[dict[str, Any]], dict[str, float]] | None = None
    preflight: Callable[[Any], None] | None = None
    module: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = [u for u in self.uses if u not in SHARED_SECTIONS]
        if unknown:
            raise ValueError(f"stage {self.name!r} uses unknown shared sections {unknown}; known: {list(SHARED_SECTIONS)}")

    @property
    def sections(self) -> tuple[str, ...]:
        """The config sections that key this stage's artifact, in order."""
        return (self.name, *self.uses)

    @cached_property
    def slice_model(self) -> type[ConfigSlice]:
        types = {self.name: self.config, **{u: SHARED_SECTIONS[u] for u in self.uses}}
        fields: dict[str, Any] = {s: (t, Field(description=f"The {s} section.")) for s, t in types.items()}
        return create_model(f"{self.name.title()}Slice", __base__=ConfigSlice, **fields)

    def slice(self, cfg: PipelineConfig | BaseModel) -> ConfigSlice:
        """The part of ``cfg`` this stage may read (and its key hashes)."""
        return self.slice_model(**{s: getattr(cfg, s) for s in self.sections})

    def key(self, cfg: PipelineConfig, inputs: list[ArtifactRef]) -> str:
        """The artifact key for ``cfg`` and these input artifacts."""
        sliced = self.slice(cfg)
        extra = list(self.source_keys(sliced)) if self.source_keys else []
        return artifact_key(self.name, self.version, key_config(sliced), [i.key for i in inputs] + extra)

    def describe(self) -> str:
        return self.description or ((self.summary.__doc__ or "").strip().splitlines() or [self.name])[0]


def key_config(sliced: ConfigSlice) -> dict[str, Any]:
    """What the key hashes and the manifest records: each keyed section's values, with the
    credentials of any URL redacted (they never change what a stage computes)."""
    return redact_urls(sliced.model_dump(mode="json"))


class StageOutcome(BaseModel):
    """What a stage task returns: its artifact and whether it was reused from the store."""

    stage: str = Field(description="Stage name.")
    ref: ArtifactRef = Field(description="The artifact the stage produced or found.")
    reused: bool = Field(description="True when the artifact already existed and no work was done.")
    seconds: float = Field(description="Wall time of the stage task, reuse included.")
    report: dict[str, Any] = Field(default_factory=dict, description="The artifact's report.json.")


@dataclass
class StageHooks:
    """What the orchestrator adds around ``execute`` (Prefect's logger and UI artifacts);
    the defaults do nothing, so plain calls and unit tests need no Prefect."""

    logger: logging.Logger | logging.LoggerAdapter = field(default_factory=lambda: logging.getLogger("tuneline"))
    publish: Callable[[Stage, dict[str, Any], ArtifactRef, bool], None] = lambda *a: None


def execute(
    stage: Stage, cfg: PipelineConfig, inputs: list[ArtifactRef], force: bool = False, hooks: StageHooks | None = None
) -> StageOutcome:
    """Runs ``stage`` unless its artifact for these inputs and config exists (or ``force``).

    Check, lock, check again, compute, commit, release: a second run that wants the same key
    while this one computes it waits for the key's lock (and logs that it waits), then reuses
    what this one published. An artifact whose files fail the size check against its manifest
    is treated as absent (a warning names the files) and recomputed as a new generation;
    ``force`` also publishes a new generation, which readers of the old one never notice.

    Args:
        stage: the stage to run.
        cfg: the pipeline config (the stage reads only its slice).
        inputs: the artifacts of the stage's ``inputs`` stages, in order.
        force: recompute even if the artifact exists (unless another run published it while
            this one waited for the lock).
        hooks: logging and report publishing (Prefect's, under the orchestrator).

    Raises:
        CorruptArtifact: an input's files do not match its manifest (the runner recomputes
            that input and calls this again).
    """
    hooks = hooks or StageHooks()
    t0 = time.time()
    store = open_store(cfg.run.artifact_root)
    key = stage.key(cfg, inputs)
    reported: set[str] = set()  # generations whose bad files were already warned about
    seen = store.current(stage.name, key) if force else None  # the generation a forced run replaces
    if not force:
        art = _reusable(store, stage.name, key, hooks.logger, reported)
        if art is not None:
            return _reused(stage, art, hooks, t0)
    inject_failure(store, stage.name)
    with _store_errors(store), store.lock(stage.name, key, hooks.logger) as lock:
        # Another run may have published it while this one waited for the lock.
        if not force or (lock.waited and store.current(stage.name, key) != seen):
            art = _reusable(store, stage.name, key, hooks.logger, reported)
            if art is not None:
                return _reused(stage, art, hooks, t0)
        opened = _open_inputs(store, inputs)
        hooks.logger.info("%s: running (artifact %s)", stage.name, key[:12])
        sliced = stage.slice(cfg)
        with store.writer(stage.name, key, inputs, key_config(sliced), fence=lock.check) as out:
            with executors.using(cfg.run):  # how to spread the work; not part of the key
                stage.run(opened, sliced, out)
            ref = out.commit()
            report = out.report
    hooks.publish(stage, report, ref, False)
    return StageOutcome(stage=stage.name, ref=ref, reused=False, seconds=time.time() - t0, report=report)


def _reusable(store: ArtifactStore, name: str, key: str, logger: Any, reported: set[str]) -> Artifact | None:
    """The published artifact of ``name``/``key`` if its files pass the size check, else None
    (with one warning per bad generation, naming the files)."""
    pointer = store.pointer(name, key)
    if pointer is None or pointer.generation is None:
        return None
    try:
        art = store.open(store.ref(name, key))
    except FileNotFoundError:
        if pointer.generation not in reported:
            reported.add(pointer.generation)
            logger.warning(
                "%s: artifact %s (generation %s) lost its %s; recomputing it",
                name, key[:12], pointer.generation, MANIFEST,
            )  # fmt: skip
        return None
    problems = art.check_sizes()
    if not problems:
        return art
    if art.generation not in reported:
        reported.add(art.generation)
        logger.warning(
            "%s: artifact %s (generation %s) does not match its manifest: %s; recomputing it",
            name, key[:12], art.generation, "; ".join(map(str, problems)),
        )  # fmt: skip
    return None


def _reused(stage: Stage, art: Artifact, hooks: StageHooks, t0: float) -> StageOutcome:
    hooks.logger.info("%s: reusing artifact %s", stage.name, art.ref.short)
    report = art.report
    hooks.publish(stage, report, art.ref, True)
    return StageOutcome(stage=stage.name, ref=art.ref, reused=True, seconds=time.time() - t0, report=report)


def _open_inputs(store: ArtifactStore, inputs: list[ArtifactRef]) -> list[Artifact]:
    """The input artifacts, each one's file sizes checked against its manifest (cheap): a
    deleted or truncated input file stops the stage here, naming the file, instead of deep in
    the stage's libraries. Their hashes are checked as the stage reads them.

    Raises:
        CorruptArtifact: an input's files fail the size check.
    """
    opened = []
    for ref in inputs:
        art = store.open(ref)
        problems = art.check_sizes()
        if problems:
            raise art.corrupt(problems)
        opened.append(art)
    return opened


def open_store(root: str) -> ArtifactStore:
    with _store_errors(None, root):
        return ArtifactStore(root)


class _store_errors:
    """Turns "the root cannot be written" into a ``StoreError`` naming the root (no retry)."""

    def __init__(self, store: ArtifactStore | None, root: str | None = None):
        self.root = store.root if store is not None else root

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOTDIR)):
            raise StoreError(
                f"cannot write the artifact root {self.root}: {exc.strerror or exc} "
                f"({getattr(exc, 'filename', '') or self.root}); set run.artifact_root to a writable place"
            ) from exc
        return False


class InjectedFailure(TransientError):
    """Raised by a stage named in ``TUNELINE_FAIL`` (see the module docstring); retried like
    any transient error."""


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


def flatten_report(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A report as (dotted name, value) rows for a table; lists of dicts (samples, curves) are
    left to the markdown summary."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += flatten_report(v, name + ".")
        elif isinstance(v, list):
            if v and all(isinstance(x, dict) for x in v):
                continue
            rows.append((name, ", ".join(map(str, v))))
        else:
            rows.append((name, v))
    return rows
