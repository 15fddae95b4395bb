"""The ``export`` section: which formats to write and how close each must stay to the trained model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from tasks.export.gguf_writer import GGUF_TYPES
from tuneline.sections import Section

__all__ = ["DEFAULT_MIN_TOP1", "DEFAULT_TOLERANCE", "FORMATS", "ExportConfig"]

# Every format the equivalence check compares with the trained model (float32 base + adapter).
FORMATS = ("adapter", "merged", *GGUF_TYPES)

# Max |logit difference| allowed per format, against the trained model in float32, over every
# position of the check prompts. Measured on tiny Llamas (hidden 64 and 128, LoRA after 10 steps
# and 2 epochs, full weights after 20 steps; tests/tasks/export): the worst figure seen per
# format, and the default set a few times above it, so a correct export passes while a wrong one
# (a missed Q/K permutation, an adapter left out, a swapped tensor: off by whole logits) fails:
# - adapter: reloaded and run in float32 like the reference: 0 seen -> 1e-4;
# - merged: one rounding of every weight to 16 bits: bfloat16 (8-bit mantissa) 0.031-0.056,
#   float16 (11-bit) 0.0027-0.0057 -> 0.15;
# - f32: the merge's own float32 arithmetic: up to 7.4e-6 -> 1e-4;
# - f16: 0.0024-0.0057 -> 0.05;
# - q8_0: blocks of 32 weights with one scale each: 0.063-0.19 -> 0.5.
# Bigger models have bigger logits and longer sums: their figures grow, so a real model may
# need these raised (the stage's error names the figures to set them from).
DEFAULT_TOLERANCE: dict[str, float] = {
    "adapter": 1e-4,
    "merged": 0.15,
    "f32": 1e-4,
    "f16": 0.05,
    "q8_0": 0.5,
}
# Least share of positions whose greedy next token agrees with the trained model's. A weak tiny
# model has near-ties, which 16-bit or 8-bit rounding flips: merged bfloat16 agreed on 0.961-0.995
# of positions, q8_0 on 0.985-0.995, f16 and the float32 formats on all.
DEFAULT_MIN_TOP1: dict[str, float] = {
    "adapter": 1.0,
    "merged": 0.9,
    "f32": 1.0,
    "f16": 0.95,
    "q8_0": 0.9,
}


def _known(kind: str, names, known) -> None:
    """Raises ValueError naming each unknown entry of ``names`` and the known ones."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )


class ExportConfig(Section):
    dtype: Literal["bfloat16", "float16"] = Field(
        default="bfloat16",
        description="Weight dtype of merged/ (base + adapter merged). bfloat16 keeps float32's "
        "range; float16 is more precise but may overflow on large activations.",
    )
    gguf_types: list[str] = Field(
        default_factory=lambda: ["f16", "q8_0"],
        description=f"GGUF files to write (gguf/model-<type>.gguf), each one of {', '.join(GGUF_TYPES)}; "
        "[] writes none (needed for models outside the Llama family).",
    )
    check_prompts: int = Field(
        default=8,
        ge=1,
        description="Eval-split prompts whose next-token logits compare every export with the trained model.",
    )
    tolerance: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TOLERANCE),
        description=f"Max |logit difference| per format ({', '.join(FORMATS)}); entries given here "
        f"replace the measured defaults {DEFAULT_TOLERANCE}. A format above it fails the stage.",
    )
    min_top1: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_TOP1),
        description="Least greedy top-1 agreement with the trained model per format (0-1); entries "
        f"replace the defaults {DEFAULT_MIN_TOP1}. A format below it fails the stage.",
    )

    @field_validator("gguf_types")
    @classmethod
    def check_gguf_types(cls, value: list[str]) -> list[str]:
        """Each type must be one the writer knows; duplicates are dropped, order kept."""
        _known("GGUF type", value, GGUF_TYPES)
        return list(dict.fromkeys(value))

    @field_validator("tolerance", "min_top1")
    @classmethod
    def check_formats(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        """Keys must be formats, values non-negative (and a top-1 share at most 1; NaN and inf
        are refused for every section); formats not given keep their defaults (so the key holds
        every limit in force)."""
        _known("export format", value, FORMATS)
        bad = [f"{k}={v}" for k, v in value.items() if v < 0]
        if bad:
            raise ValueError(f"negative limits {', '.join(bad)}; use a value >= 0")
        over = [f"{k}={v}" for k, v in value.items() if info.field_name == "min_top1" and v > 1]
        if over:
            raise ValueError(f"shares over 1 {', '.join(over)}: no export could pass; use 0-1")
        defaults = DEFAULT_TOLERANCE if info.field_name == "tolerance" else DEFAULT_MIN_TOP1
        return {**defaults, **value}

    def limits(self, fmt: str) -> tuple[float, float]:
        """``(max |Δlogit|, min top-1 agreement)`` for ``fmt``.

        Args:
            fmt: one of ``FORMATS``.
        """
        return self.tolerance[fmt], self.min_top1[fmt]
