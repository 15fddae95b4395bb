"""The ``train`` section: shared hyper-parameters, the LoRA adapter, and the training method.

``train.method`` is a discriminated union over the method modules of this package: every module
here (but this one and ``_private`` ones) that defines ``CONFIG``, its config model with a
``name: Literal["<method>"]`` field, and ``build_trainer(...)`` is a method. So a method is
added by adding one module; nothing here lists them. In YAML a method is its bare name
(``method: sft``) or a mapping with its settings (``method: {name: sft, ...}``).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    FieldSerializationInfo,
    GetJsonSchemaHandler,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

from tuneline.sections import SEED_MAX, ModelConfig, Section

DEFAULT_METHOD = "sft"
PREFERENCE_METHODS = ("dpo", "orpo", "kto")  # learn from chosen vs rejected replies
NOT_METHODS = {"config", "adapters", "distributed", "merge", "plan", "worker"}  # modules here that are not methods


# -------------------------------------------------------------------------------- methods


def method_name(config: type[BaseModel]) -> str:
    """The ``name`` a method's config model is selected by (its ``Literal`` default)."""
    field = config.model_fields.get("name")
    if field is None or not isinstance(field.default, str):
        raise TypeError(
            f"{config.__module__}.{config.__name__}: a method config needs a field "
            '`name: Literal["<method>"] = "<method>"`'
        )
    return field.default


def find_methods(package: str) -> dict[str, ModuleType]:
    """``{method name: module}`` for every method module of ``package``.

    A method module defines ``CONFIG`` (a ``Section`` with ``name: Literal["<method>"]``) and
    ``build_trainer``; modules without ``CONFIG``, ``_private`` ones and ``config`` are skipped.

    Args:
        package: the dotted name of an importable package (``tasks.train``).

    Raises:
        TypeError: a module defines ``CONFIG`` but is not a complete method.
        ValueError: two modules claim the same method name.
    """
    pkg = importlib.import_module(package)
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in NOT_METHODS:
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        config = getattr(mod, "CONFIG", None)
        if config is None:
            continue
        if not (isinstance(config, type) and issubclass(config, Section)):
            raise TypeError(f"{mod.__name__}.CONFIG must be a Section subclass, not {config!r}")
        if not callable(getattr(mod, "build_trainer", None)):
            raise TypeError(
                f"method module {mod.__name__} defines CONFIG but no build_trainer(...)"
            )
        name = method_name(config)
        if name in found:
            raise ValueError(
                f"training method {name!r} is defined twice: {found[name].__name__} and {mod.__name__}"
            )
        found[name] = mod
    return found


class _AlsoByName:
    """JSON schema of ``train.method``: a method's bare name is valid too (YAML, the Prefect
    form and the deployments' parameters hold ``method: sft``), so the schema says so and
    Prefect's parameter check accepts what the config dumps."""

    def __init__(self, names: list[str]):
        self.names = names

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "enum": self.names}, handler(schema)]}


def method_union(methods: dict[str, ModuleType]) -> Any:
    """The type of ``train.method``: the methods' config models, told apart by ``name``."""
    configs = tuple(m.CONFIG for m in methods.values())
    return Annotated[Union[configs], Field(discriminator="name"), _AlsoByName(list(methods))]  # noqa: UP007


METHODS = find_methods(__package__)
if DEFAULT_METHOD not in METHODS:
    raise ImportError(
        f"the default training method {DEFAULT_METHOD!r} has no module in {__package__}"
    )
Method = method_union(METHODS)


# ---------------------------------------------------------------------------------- train


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


ADAPTERS = ("lora", "dora", "qlora", "full", "hft")


class HftConfig(Section):
    """Half fine-tuning (HFT, Hui et al. 2024): full fine-tuning in rounds, each training one
    half of the decoder's parameter groups while the other half keeps its weights."""

    round_steps: int | None = Field(
        default=None,
        ge=1,
        description="Optimizer steps per round. Empty (null): a quarter of the run, so each half "
        "trains twice.",
    )


class DistributedConfig(Section):
    """Several processes (GPUs) through `accelerate launch`; tuneline writes its config."""

    strategy: Literal["none", "ddp", "fsdp"] = Field(
        default="none",
        description="none: one process. ddp: a full replica per process, gradients averaged. "
        "fsdp: parameters, gradients and optimizer states sharded across processes.",
    )
    num_processes: int = Field(
        default=1, ge=1, description="Processes to launch (one per GPU; CPU processes use gloo)."
    )
    fsdp_sharding: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD"] = Field(
        default="FULL_SHARD",
        description="FSDP sharding: FULL_SHARD (least memory), SHARD_GRAD_OP (less "
        "communication), HYBRID_SHARD (full shard within a node, replicas across nodes).",
    )
    main_process_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Rendezvous port of the launched processes. Empty (null): a free port.",
    )

    @model_validator(mode="after")
    def check_processes_match_strategy(self) -> DistributedConfig:
        if self.strategy == "none" and self.num_processes > 1:
            raise ValueError(
                f"num_processes is {self.num_processes} but strategy is none; set strategy: ddp "
                "(or fsdp) to launch several processes"
            )
        return self


class TrainConfig(Section):
    method: Method = Field(
        default_factory=lambda: METHODS[DEFAULT_METHOD].CONFIG(),
        description="Training objective and its settings: a method name (sft) or a mapping "
        "{name: sft, ...}. One module per method in tasks/train/.",
    )
    adapter: Literal["lora", "dora", "qlora", "full", "hft"] = Field(
        default="lora",
        description="What trains. lora: low-rank adapter (PEFT). dora: LoRA with weight "
        "decomposition (PEFT use_dora). qlora: LoRA on 4-bit NF4 weights (bitsandbytes, needs "
        "CUDA). full: every weight. hft: half fine-tuning, full fine-tuning in alternating halves.",
    )
    lora: LoraConfig = Field(
        default_factory=LoraConfig, description="The low-rank adapter (lora, dora, qlora)."
    )
    hft: HftConfig = Field(default_factory=HftConfig, description="Half fine-tuning rounds (hft).")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Peak learning rate. Empty (null): 1e-2 for the tiny model (random weights, tiny "
        "data); for a pretrained model 2e-4 with an adapter, 2e-5 for full and hft, and 40x less "
        "for dpo, orpo and kto (5e-6 with LoRA).",
    )
    epochs: float = Field(default=5, gt=0, description="Passes over the train split.")
    max_steps: int = Field(
        default=-1, ge=-1, description="Stop after this many steps (-1: use epochs)."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Steps per optimizer update."
    )
    max_length: int = Field(default=512, ge=16, description="Longest training sequence in tokens.")
    packing: bool = Field(default=False, description="Pack short examples into full-length rows.")
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="Training seed.")
    logging_steps: int = Field(default=5, ge=1, description="Log the loss every N steps.")
    checkpoint_steps: int = Field(
        default=50,
        ge=0,
        description="Save a resumable checkpoint every N optimizer steps, outside the artifact "
        "until it is committed; a killed run resumes from the last one. 0: no checkpoints.",
    )
    gradient_checkpointing: bool | None = Field(
        default=None,
        description="Recompute activations in the backward pass (less memory, ~30% slower). "
        "Empty (null): on with CUDA, off on CPU. `tuneline plan` says whether you need it.",
    )
    liger_kernel: bool = Field(
        default=False,
        description="Liger's fused Triton kernels (linear cross-entropy without full-vocab logits, "
        "RMSNorm, RoPE, SwiGLU); needs CUDA and `pip install liger-kernel`.",
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        default="auto",
        description="Attention kernel. auto: flash_attention_2 on CUDA when flash-attn is "
        "installed, else sdpa. Packed rows stay separate on every path (position ids).",
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="Several processes through accelerate launch (DDP, FSDP).",
    )

    @field_validator("method", mode="before")
    @classmethod
    def check_method_is_known(cls, value: Any) -> Any:
        """A bare name selects that method with its defaults; an unknown name lists the known."""
        if isinstance(value, BaseModel):
            name = getattr(value, "name", None)
        elif isinstance(value, dict):
            name = value.get("name")
        else:
            name = value
        if not isinstance(name, str) or name not in METHODS:
            shown = (
                f"training method {name!r} is unknown"
                if name is not None
                else "the training method needs a `name`"
            )
            raise ValueError(
                f"{shown}; known methods: {', '.join(METHODS)} (one module each in tasks/train/)"
            )
        return {"name": value} if isinstance(value, str) else value

    @field_validator("max_steps")
    @classmethod
    def check_max_steps(cls, value: int) -> int:
        # The trainer reads 0 as "use epochs" too; a 0 meant as "no training" would train.
        if value == 0:
            raise ValueError("must be -1 (train for train.epochs) or a number of steps from 1")
        return value

    @field_serializer("method")
    def dump_default_method_by_name(
        self, method: BaseModel, info: FieldSerializationInfo
    ) -> str | dict[str, Any]:
        """A method with default settings dumps as its bare name.

        The artifact key hashes this dump, and ``method: sft`` is what the key hashed before
        methods had settings: dumping an untouched method as its name keeps those keys (and
        the deployments' parameters) as they were. Changed settings dump in full.
        """
        if not method.model_dump(exclude_defaults=True):
            return method.name  # type: ignore[attr-defined]
        return method.model_dump(mode=info.mode)

    def resolved_learning_rate(self, model: ModelConfig) -> float:
        """``learning_rate``, or the usual rate for this model, method and adapter: the tiny
        model's random weights take 1e-2; a pretrained model 2e-4 with an adapter and 2e-5
        for its own weights, and a preference method (dpo, orpo, kto) 40x less, as the
        alignment-handbook recipes use (5e-6 with LoRA): its loss pushes on log-ratios and
        diverges at supervised rates."""
        if self.learning_rate is not None:
            return self.learning_rate
        if model.name_or_path is None:
            return 1e-2
        rate = 2e-5 if self.adapter in ("full", "hft") else 2e-4
        return rate / 40 if self.method.name in PREFERENCE_METHODS else rate
