"""The stage graph and run selection: which stages run, which are looked up, which are forced.

Every artifact key is a pure function of the config (and the bytes of the source files), so
the whole chain of keys is known before anything runs: ``plan_keys`` is what ``tuneline
status`` shows, and what lets ``--only``/``--from`` start mid-pipeline without redoing the
stages before it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from tuneline import registry
from tuneline.artifacts import ArtifactRef, ArtifactStore


def plan_keys(cfg) -> dict[str, ArtifactRef]:
    """The artifact every stage would read or write for ``cfg``, computed without running."""
    store = ArtifactStore(cfg.run.artifact_root)
    refs: dict[str, ArtifactRef] = {}
    for stage in registry.stages():
        inputs = [refs[i] for i in stage.inputs]
        refs[stage.name] = store.ref(stage.name, stage.key(cfg, inputs))
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
        order = registry.names()
        for field in ("only", "from_stage", "to_stage"):
            v = getattr(self, field)
            if v is not None and v not in order:
                raise ValueError(f"{field}={v!r} is not a stage; stages are: {', '.join(order)}")
        for v in self.force:
            if v not in order:
                raise ValueError(f"force={v!r} is not a stage; stages are: {', '.join(order)}")
        if self.only and (self.from_stage or self.to_stage):
            raise ValueError("use either --only (only), or --from/--to (from_stage/to_stage), not both")
        if self.from_stage and self.to_stage and order.index(self.to_stage) < order.index(self.from_stage):
            raise ValueError(
                f"--to {self.to_stage} comes before --from {self.from_stage} (the order is {' -> '.join(order)})"
            )
        return self

    def runs(self, stage: str) -> bool:
        """False: the stage is only looked up (its artifact must already exist)."""
        order = registry.names()
        i = order.index(stage)
        if self.only:
            return stage == self.only
        lo = order.index(self.from_stage) if self.from_stage else 0
        hi = order.index(self.to_stage) if self.to_stage else len(order) - 1
        return lo <= i <= hi

    def after_last(self, stage: str) -> bool:
        """True for stages past the end of the selection: not run, not needed."""
        order = registry.names()
        i = order.index(stage)
        if self.only:
            return i > order.index(self.only)
        return self.to_stage is not None and i > order.index(self.to_stage)

    def forced(self, stage: str) -> bool:
        order = registry.names()
        i = order.index(stage)
        return any(i >= order.index(f) for f in self.force)
