"""Running a stage's plain ``run`` in tests: an input artifact in, the committed artifact out."""

from __future__ import annotations

from types import ModuleType

from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.config import PipelineConfig, stage_config
from tuneline.records import Record


def input_artifact(root: str, stage: str, records: list[Record], key: str = "0" * 64) -> Artifact:
    """``records`` stored as if ``stage`` had written them."""
    store = ArtifactStore(root)
    with store.writer(stage, key, [], {}) as w:
        w.write_all(records)
        ref = w.commit()
    return store.open(ref)


def run_plain(mod: ModuleType, cfg: PipelineConfig, inputs: list[Artifact], key: str = "1" * 64) -> Artifact:
    """Runs ``mod.run`` on ``inputs`` into a fresh artifact and returns it, committed."""
    store = ArtifactStore(cfg.run.artifact_root)
    with store.writer(mod.STAGE, key, [a.ref for a in inputs], stage_config(cfg, mod.SECTIONS)) as out:
        mod.run(inputs, cfg, out)
        ref = out.commit()
    return store.open(ref)
