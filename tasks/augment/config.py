"""The augment section of the config; the teacher's own section is shared (tuneline.teacher)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneline.sections import Section
from tuneline.teacher import TeacherConfig

__all__ = ["AugmentConfig", "TeacherConfig"]


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
        default=2,
        ge=1,
        description="New instructions asked of the teacher per seed, for mode=generate.",
    )
    application_description: str = Field(
        default="AI assistant",
        description="What the tuned model is for; steers the instructions the teacher invents (mode=generate).",
    )
    min_chars: int = Field(
        default=10,
        ge=1,
        description="Teacher instructions and replies shorter than this are rejected.",
    )
