"""Config sections shared by several stages (run, model), and the base every section extends.

Each stage's own section lives with the stage (``tasks/<stage>``); ``tuneline.config`` puts
them together into ``PipelineConfig``. One pydantic model per concern, ``Field(description=...)``
on every field, cross-field rules as named ``check_*`` validators.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# numpy's seeds (HF's set_seed and lm-eval seed numpy too) are 0 to 2**32 - 1; a negative
# seed fails deep inside the trainer instead of here.
SEED_MAX = 2**32 - 1


class Section(BaseModel):
    # Unknown keys are typos: reject them rather than silently ignoring a setting. No setting
    # means anything as NaN or infinity, and infinity passes one-sided range checks (inf > 0):
    # `learning_rate: .inf` trained a 100% NaN adapter and shipped it. So every float of every
    # section must be finite, and the message names the field.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


# ----------------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field(default="demo", description="Run name, shown in Prefect and in reports.")
    artifact_root: str = Field(
        default="data/artifacts",
        description="Where artifacts live: a local path or an fsspec URL such as s3://bucket/prefix.",
    )
    retries: int = Field(default=1, ge=0, le=10, description="Retries of a failing stage task.")
    retry_delay_seconds: float = Field(
        default=5.0, ge=0, description="Delay before the first retry; doubles with each retry."
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where the data stages' parallel work runs: `local` processes (DataTrove's "
        "LocalPipelineExecutor) or a Ray cluster (`ray`, DataTrove's RayPipelineExecutor; "
        "`pip install ray`). Not part of any artifact key: the output is the same either way.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Parallel workers of the data stages (pii, dedup); empty: one per CPU core. "
        "Not part of any artifact key.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join with run.executor=ray (`auto`, or `ray://host:10001`); "
        "empty starts a local Ray instance. Ranks exchange part files through the scratch folder "
        "under $TMPDIR, so a multi-node cluster needs $TMPDIR on a shared filesystem.",
    )
    ray_memory_per_task_gb: float = Field(
        default=2.0, gt=0, description="Memory Ray reserves per task (a pii worker peaks near 0.6 GB)."
    )


# --------------------------------------------------------------------------------- model


class TinyModelConfig(Section):
    """A small Llama built from a config, for offline demos and tests (no hub download)."""

    vocab_size: int = Field(default=1024, ge=256, description="BPE tokenizer vocabulary, trained on the corpus.")
    hidden_size: int = Field(default=128, ge=16, description="Model width.")
    num_hidden_layers: int = Field(default=2, ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(default=4, ge=1, description="Attention heads.")
    intermediate_size: int = Field(default=256, ge=16, description="MLP width.")
    max_position_embeddings: int = Field(default=1024, ge=64, description="Longest sequence.")
    seed: int = Field(default=0, description="Seed of the random initial weights.")
    initializer_range: float = Field(
        default=0.1,
        gt=0,
        description="Std of the initial weights; larger than Llama's 0.02 so a LoRA adapter on a "
        "frozen random base can still move the logits.",
    )

    @model_validator(mode="after")
    def check_heads_divide_width(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        return self


class ModelConfig(Section):
    name_or_path: str | None = Field(
        default=None,
        description="Base model: a hub id or local path. Empty builds the tiny Llama below.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="The offline tiny model.")
    trust_remote_code: bool = Field(
        default=False, description="Run code shipped with the model. Off unless you trust its source."
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) to pin.")

    def check_fits(self, field: str, length: int) -> None:
        """Raises ValueError when ``length`` (the setting ``field``) exceeds the tiny model's
        positions; a real model truncates to its own limit."""
        if self.name_or_path is None and length > self.tiny.max_position_embeddings:
            raise ValueError(
                f"{field} ({length}) exceeds model.tiny.max_position_embeddings ({self.tiny.max_position_embeddings})"
            )
