"""The stage graph and run selection: which stages run, which are looked up, which are forced.

Every artifact key is a pure function of the config (and the bytes of the source files), so
the whole chain of keys is known before anything runs: ``plan_keys`` is what ``tuneline
status`` shows, and what lets ``--only``/``--from`` start mid-pipeline without redoing the
stages before it.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from pydantic import BaseModel, Field, model_validator

from tuneline.artifacts import ArtifactRef, ArtifactStore
from tuneline.config import STAGES, PipelineConfig
from tuneline.stage import stage_key


@cache
def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(f"tasks.{name}")


def modules() -> list[ModuleType]:
    return [stage_module(s) for s in STAGES]


def plan_keys(cfg: PipelineConfig) -> dict[str, ArtifactRef]:
    """The artifact every stage would read or write for ``cfg``, computed without running."""
    store = ArtifactStore(cfg.run.artifact_root)
    refs: dict[str, ArtifactRef] = {}
    for mod in modules():
        inputs = [refs[i] for i in mod.INPUTS]
        refs[mod.STAGE] = store.ref(mod.STAGE, stage_key(mod, cfg, inputs))
    return refs


class Selection(BaseModel):
    """Which part of the pipeline a run covers."""

    only: str | None = Field(default=None, description="Run just this stage; its inputs must exist.")
    from_stage: str | None = Field(default=None, description="Run this stage and the ones after it; inputs must exist.")
    to_stage: str | None = Field(default=None, description="Stop after this stage.")
    force: list[str] = Field(
        default_factory=list, description="Recompute these stages and every stage after them, even if cached."
    )

    @model_validator(mode="after")
    def check_stage_names(self) -> Selection:
        for field in ("only", "from_stage", "to_stage"):
            v = getattr(self, field)
            if v is not None and v not in STAGES:
                raise ValueError(f"{field}={v!r} is not a stage; stages are: {', '.join(STAGES)}")
        for v in self.force:
            if v not in STAGES:
                raise ValueError(f"force={v!r} is not a stage; stages are: {', '.join(STAGES)}")
        if self.only and (self.from_stage or self.to_stage):
            raise ValueError("use either only, or from_stage/to_stage, not both")
        if self.from_stage and self.to_stage and STAGES.index(self.to_stage) < STAGES.index(self.from_stage):
            raise ValueError(f"to_stage={self.to_stage!r} comes before from_stage={self.from_stage!r}")
        return self

    def runs(self, stage: str) -> bool:
        """False: the stage is only looked up (its artifact must already exist)."""
        i = STAGES.index(stage)
        if self.only:
            return stage == self.only
        lo = STAGES.index(self.from_stage) if self.from_stage else 0
        hi = STAGES.index(self.to_stage) if self.to_stage else len(STAGES) - 1
        return lo <= i <= hi

    def after_last(self, stage: str) -> bool:
        """True for stages past the end of the selection: not run, not needed."""
        i = STAGES.index(stage)
        if self.only:
            return i > STAGES.index(self.only)
        return self.to_stage is not None and i > STAGES.index(self.to_stage)

    def forced(self, stage: str) -> bool:
        i = STAGES.index(stage)
        return any(i >= STAGES.index(f) for f in self.force)
