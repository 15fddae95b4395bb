"""What the flow calls for each stage: run it as a Prefect task, look it up, or skip it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tuneline import preflight, redaction, registry, scratch
from tuneline.artifacts import ArtifactRef, ArtifactStore, CorruptArtifact, corrupt_artifact
from tuneline.errors import MissingArtifact
from tuneline.orchestration import stage_task
from tuneline.pipeline import Selection
from tuneline.redaction import redact_urls
from tuneline.stage import StageOutcome

__all__ = ["MissingArtifact", "StageRunner"]

log = logging.getLogger("tuneline")


class StageRunner:
    """Runs the stages a flow asks for, honouring the run selection and the config's retries."""

    def __init__(self, cfg: Any, **selection: Any):
        self.cfg = cfg
        self.sel = Selection(**selection)
        # A flow started from the UI gets what `tuneline run` does first: redacted logs, and
        # the keys, folders and GPUs its stages need checked before anything is written.
        redaction.protect(cfg)
        preflight.check(cfg, self.sel)
        self.store = ArtifactStore(cfg.run.artifact_root)
        self.outcomes: dict[str, StageOutcome] = {}
        self.refs: dict[str, ArtifactRef | None] = {}
        # each stage's input refs as this run passed them: what recomputing a corrupt artifact starts from
        self.inputs: dict[str, list[ArtifactRef]] = {}
        self.started = time.time()
        scratch.sweep()  # scratch folders of runs that were killed

    def __call__(self, name: str, *inputs: ArtifactRef | None) -> ArtifactRef | None:
        """Runs (or looks up) stage ``name`` on ``inputs``, the artifacts of its ``inputs`` stages."""
        stage = registry.get(name)
        given = [r.stage if r is not None else None for r in inputs]
        if len(inputs) != len(stage.inputs) or any(g not in (None, want) for g, want in zip(given, stage.inputs, strict=False)):
            raise TypeError(f"stage {name!r} reads {list(stage.inputs)}, but the flow passed {given}")
        self.refs[name] = self._step(name, [r for r in inputs if r is not None])
        return self.refs[name]

    def rest(self) -> None:
        """Runs every registered stage the flow did not name (stages added by a module of their
        own, such as a plugin's), in registry order, wiring their inputs from the registry."""
        for stage in registry.stages():
            if stage.name not in self.refs:
                self(stage.name, *[self.refs.get(i) for i in stage.inputs])

    def _step(self, name: str, refs: list[ArtifactRef]) -> ArtifactRef | None:
        stage = registry.get(name)
        if self.sel.after_last(name):
            return None
        if len(refs) != len(stage.inputs):  # an input was skipped: nothing to build on
            return None
        self.inputs[name] = refs
        if not self.sel.runs(name):
            if not self._needed(name) and not self.store.exists(name, stage.key(self.cfg, refs)):
                return None  # before the selection, and nothing selected reads it
            return self._look_up(name, refs)
        return self._run(name, refs, force=self.sel.forced(name))

    def _needed(self, name: str) -> bool:
        """Whether a stage this run executes reads ``name``'s artifact, directly or not."""

        def ancestors(stage: str) -> set[str]:
            direct = set(registry.get(stage).inputs)
            return direct.union(*(ancestors(d) for d in direct)) if direct else set()

        return any(self.sel.runs(s) and name in ancestors(s) for s in registry.names())

    def _run(self, name: str, refs: list[ArtifactRef], force: bool, repaired: frozenset[str] = frozenset()) -> ArtifactRef:
        """Runs stage ``name`` as its Prefect task. When it finds an input corrupt (its files no
        longer match its manifest), the input's stage is recomputed and ``name`` runs again,
        once per corrupt input stage.

        Args:
            name: the stage.
            refs: its input artifacts.
            force: recompute even if its artifact exists.
            repaired: stages already recomputed for this step (each is repaired at most once).
        """
        try:
            outcome = stage_task(registry.get(name), self.cfg.run)(name, self.cfg, refs, force=force)
        except Exception as e:
            bad = corrupt_artifact(e)
            if bad is None or not self._can_recompute(bad, repaired):
                raise
            self._recompute(name, bad, repaired | {bad.stage})
            return self._run(name, refs, force, repaired | {bad.stage})
        self.outcomes[name] = outcome
        return outcome.ref

    def _can_recompute(self, bad: CorruptArtifact, repaired: frozenset[str]) -> bool:
        """Whether ``bad`` is an artifact of this run that it can rebuild: a stage it reached,
        with the same key, not rebuilt once already for this step."""
        refs = self.inputs.get(bad.stage)
        return (
            bad.stage not in repaired
            and refs is not None
            and registry.get(bad.stage).key(self.cfg, refs) == bad.key
        )

    def _recompute(self, reader: str, bad: CorruptArtifact, repaired: frozenset[str]) -> None:
        """Unpublishes the corrupt generation and runs its stage again (its own inputs repaired
        the same way if they turn out corrupt too)."""
        log.warning(
            "%s: input %s/%s (generation %s) does not match its manifest: %s; recomputing %s, then %s",
            reader, bad.stage, bad.key[:12], bad.generation, "; ".join(map(str, bad.problems)), bad.stage, reader,
        )  # fmt: skip
        self.store.invalidate(bad.stage, bad.key, bad.generation, log)
        self._run(bad.stage, self.inputs[bad.stage], force=False, repaired=repaired)

    def _look_up(self, name: str, refs: list[ArtifactRef]) -> ArtifactRef:
        key = registry.get(name).key(self.cfg, refs)
        if not self.store.exists(name, key):
            raise MissingArtifact(
                f"stage {name!r} has no artifact for this config ({key[:12]}) and is outside "
                f"this run's selection; run it first, e.g. `tuneline run --to {name}`"
            )
        ref = self.store.ref(name, key)
        art = self.store.open(ref)
        problems = art.check_sizes()
        if problems:  # its files changed since it was published: the stage must run after all
            log.warning(
                "%s: artifact %s (outside this run's selection) does not match its manifest: %s; recomputing it",
                name, key[:12], "; ".join(map(str, problems)),
            )  # fmt: skip
            return self._run(name, refs, force=False)
        self.outcomes[name] = StageOutcome(stage=name, ref=ref, reused=True, seconds=0.0, report=art.report)
        return ref

    def finish(self) -> dict[str, Any]:
        """Writes the run's lineage record (which artifacts made which model) and returns it."""
        order = registry.names()
        summary = {
            "run": self.cfg.run.name,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - self.started, 2),
            "stages": {
                s: self.outcomes[s].model_dump(mode="json", exclude={"report"}) for s in order if s in self.outcomes
            },
            "config": self.cfg.model_dump(mode="json"),
        }
        summary = redact_urls(summary)  # the flow's result, which Prefect may keep, too
        write_lineage(self.store, summary)
        return summary


def write_lineage(store: ArtifactStore, summary: dict[str, Any]) -> None:
    # Machines sharing a root can finish runs in the same second with the same pid (pid 1 in
    # containers): a random suffix keeps one run from overwriting another's record.
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    body = json.dumps(redact_urls(summary), indent=2, default=str)  # no URL credentials on disk
    if store.local:
        d = Path(store._root_path) / "runs"
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, d / name)
    else:
        store.fs.pipe_file(f"{store._root_path}/runs/{name}", body.encode())  # one object, whole or absent
