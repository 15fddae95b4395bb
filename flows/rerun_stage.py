"""Re-run one stage of the pipeline, reusing every artifact before it.

The stages before ``stage`` are looked up in the artifact store, never recomputed; they must
exist for this config (run the full pipeline once first). ``force`` recomputes ``stage`` and
the stages after it even when their artifacts exist; otherwise a stage whose artifact exists is
reused, so re-running after a failure redoes only the failed stage onward.
"""

from __future__ import annotations

from flows.finetune import finetune
from tuneline.config import PipelineConfig, StageName, demo_config
from tuneline.orchestration import flow  # Prefect's, with the config stored redacted


@flow(name="rerun-stage", description="Re-run one stage (and, with to_end, those after it).")
def rerun_stage(
    stage: StageName,
    config: PipelineConfig = demo_config(),
    force: bool = False,
    to_end: bool = True,
) -> dict:
    """Runs ``stage`` (and the stages after it when ``to_end``) on top of stored artifacts.

    Args:
        stage: The stage to re-run, e.g. the one that failed.
        config: The config of the run being repaired (the stages before ``stage`` must be stored for it).
        force: Recompute ``stage`` even if its artifact exists (e.g. after changing code or data outside the config).
        to_end: Also run the stages after ``stage``; off runs ``stage`` alone.
    """
    if to_end:
        return finetune(config=config, from_stage=stage, force=[stage] if force else [])
    return finetune(config=config, only=stage, force=[stage] if force else [])


if __name__ == "__main__":
    import sys

    rerun_stage(sys.argv[1] if len(sys.argv) > 1 else "evaluate")
