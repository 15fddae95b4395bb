"""What the flow calls for each stage: run it as a Prefect task, look it up, or skip it."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect.tasks import exponential_backoff

from tuneline.artifacts import ArtifactRef, ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.pipeline import Selection
from tuneline.stage import StageOutcome, stage_key


class MissingArtifact(RuntimeError):
    """A stage outside the selection has no artifact for this config yet."""


class StageRunner:
    """Runs the stages a flow asks for, honouring the run selection and the config's retries."""

    def __init__(self, cfg: PipelineConfig, **selection: Any):
        self.cfg = cfg
        self.sel = Selection(**selection)
        self.store = ArtifactStore(cfg.run.artifact_root)
        self.outcomes: dict[str, StageOutcome] = {}
        self.started = time.time()

    def __call__(self, mod: ModuleType, *inputs: ArtifactRef | None) -> ArtifactRef | None:
        stage = mod.STAGE
        if self.sel.after_last(stage):
            return None
        refs = [r for r in inputs if r is not None]
        if len(refs) != len(mod.INPUTS):  # an input was skipped: nothing to build on
            return None
        if not self.sel.runs(stage):
            return self._look_up(mod, refs)
        task = getattr(mod, f"{stage}_task").with_options(
            retries=self.cfg.run.retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=self.cfg.run.retry_delay_seconds)
            if self.cfg.run.retries
            else 0,
        )
        outcome = task(self.cfg, refs, force=self.sel.forced(stage))
        self.outcomes[stage] = outcome
        return outcome.ref

    def _look_up(self, mod: ModuleType, refs: list[ArtifactRef]) -> ArtifactRef:
        key = stage_key(mod, self.cfg, refs)
        if not self.store.exists(mod.STAGE, key):
            raise MissingArtifact(
                f"stage {mod.STAGE!r} has no artifact for this config ({key[:12]}) and is outside "
                f"this run's selection; run it first, e.g. `tuneline run --to {mod.STAGE}`"
            )
        ref = self.store.ref(mod.STAGE, key)
        self.outcomes[mod.STAGE] = StageOutcome(
            stage=mod.STAGE, ref=ref, reused=True, seconds=0.0, report=self.store.open(ref).report
        )
        return ref

    def finish(self) -> dict[str, Any]:
        """Writes the run's lineage record (which artifacts made which model) and returns it."""
        summary = {
            "run": self.cfg.run.name,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - self.started, 2),
            "stages": {s: o.model_dump(mode="json", exclude={"report"}) for s, o in self.outcomes.items()},
            "config": self.cfg.model_dump(mode="json"),
        }
        write_lineage(self.store, summary)
        return summary


def write_lineage(store: ArtifactStore, summary: dict[str, Any]) -> None:
    # Machines sharing a root can finish runs in the same second with the same pid (pid 1 in
    # containers): a random suffix keeps one run from overwriting another's record.
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    body = json.dumps(summary, indent=2, default=str)
    if store.local:
        d = Path(store._root_path) / "runs"
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.replace(tmp, d / name)
    else:
        store.fs.pipe_file(f"{store._root_path}/runs/{name}", body.encode())  # one object, whole or absent
