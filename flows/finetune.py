"""The fine-tuning pipeline as one Prefect flow: it reads like the diagram.

    ingest -> pii -> dedup -> augment -> format -> quality -> train -> evaluate -> export -> card

Each line is one retryable Prefect task that reuses its artifact when the store already holds
it for the same config and inputs, so a re-run (scheduled, from the UI, or after a failure)
only does the work that changed. Stages registered beyond these (a module of their own under
``tasks/``, or a plugin's) run after them, in registry order. Run it with `tuneline run`, or
`python -m flows.finetune`.
"""

from __future__ import annotations

from tuneline.config import PipelineConfig, StageName, demo_config
from tuneline.orchestration import flow  # Prefect's, with the config stored redacted
from tuneline.runner import StageRunner


@flow(
    name="finetune",
    description="ingest -> pii -> dedup -> augment -> format -> quality -> train -> evaluate -> export -> card",
)
def finetune(
    config: PipelineConfig = demo_config(),  # the UI form renders this default
    only: StageName | None = None,
    from_stage: StageName | None = None,
    to_stage: StageName | None = None,
    force: list[StageName] | None = None,
) -> dict:
    """Runs the lifecycle on ``config``; stages whose artifacts exist for it are reused.

    Args:
        config: The pipeline config: one section per stage (a deployment pre-fills its own file).
        only: Run just this stage; its inputs must already be stored.
        from_stage: Run from this stage on; the earlier ones must already be stored.
        to_stage: Stop after this stage.
        force: Recompute these stages (and the ones after them) even if their artifacts exist.
    """
    step = StageRunner(config, only=only, from_stage=from_stage, to_stage=to_stage, force=force or [])
    raw = step("ingest")
    scrubbed = step("pii", raw)
    unique = step("dedup", scrubbed)
    augmented = step("augment", unique)
    splits = step("format", augmented)
    step("quality", raw, scrubbed, unique, splits)  # its gates stop the run before training
    adapter = step("train", splits)
    scores = step("evaluate", splits, adapter)
    exports = step("export", splits, adapter)  # fails unless every format matches the trained model
    step("card", adapter, scores, exports)
    step.rest()
    return step.finish()


if __name__ == "__main__":
    finetune()
