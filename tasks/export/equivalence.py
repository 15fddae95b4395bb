"""Proof that each export computes what the trained model computes.

Each export is loaded back the way its users will load it (PEFT for ``adapter/``, transformers
for ``merged/``, transformers' GGUF loader for ``gguf/*.gguf``, with the tokenizer the GGUF
carries), run on the same eval-split prompts as the trained model (base + adapter, float32), and
compared position by position: the largest |logit difference|, and the share of positions whose
greedy next token agrees. Exports are run in float32 so the figures measure what the file lost
(16-bit rounding, 8-bit blocks), not the arithmetic of one machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneline.errors import NonFiniteError, TunelineError

__all__ = [
    "Check",
    "check_finite",
    "ExportMismatch",
    "compare",
    "encode_prompts",
    "failures",
    "load_export",
    "logits_of",
]


class ExportMismatch(TunelineError):
    """An export does not compute what the trained model computes (beyond its tolerance)."""


@dataclass
class Check:
    """One format's figures against the trained model."""

    format: str
    max_abs_logit_diff: float
    top1_agreement: float
    positions: int
    tolerance: float
    min_top1: float
    tokenizer_match: bool | None = (
        None  # GGUF only: its own tokenizer encodes the prompts identically
    )

    @property
    def passed(self) -> bool:
        return (
            self.max_abs_logit_diff <= self.tolerance
            and self.top1_agreement >= self.min_top1
            and self.tokenizer_match is not False
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, as evaluate and train encode them.

    Args:
        tokenizer: the trained model's tokenizer.
        prompts: rendered eval-split prompts.
    """
    return [tokenizer(p)["input_ids"] for p in prompts]


def logits_of(model, prompt_ids: list[list[int]]):
    """Float32 logits at every position of each prompt (one forward pass each: no padding to
    disturb the comparison).

    Args:
        model: a causal LM.
        prompt_ids: from :func:`encode_prompts`.
    """
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in prompt_ids:
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0]
            out.append(logits.float().cpu())
    return out


def check_finite(logits, whose: str) -> None:
    """Raises ``NonFiniteError`` when any of ``logits`` (a :func:`logits_of` result) is NaN or
    infinite. ``max`` passes a NaN difference over (``max(0.0, nan)`` is 0.0) and NaN argmaxes
    agree, so without this a NaN model and its NaN exports "match" with Δ0.

    Args:
        logits: per-prompt logits.
        whose: names them in the error (``the trained model``, ``export q8_0``).
    """
    import torch

    bad = sum(int((~torch.isfinite(x)).any(-1).sum()) for x in logits)
    if not bad:
        return
    total = sum(x.shape[0] for x in logits)
    if whose == "the trained model":
        what = (
            "the train artifact holds a diverged model: lower train.learning_rate, train again "
            "and re-run from train"
        )
    else:
        what = (
            "the trained model's logits are finite, so the export broke them: a conversion "
            "bug, or a dtype too narrow for the weights (export.dtype bfloat16 keeps float32's "
            "range)"
        )
    raise NonFiniteError(
        f"export: {whose} gives NaN or infinite logits at {bad} of {total} positions of the "
        f"check prompts; {what}; nothing is published"
    )


def compare(reference, got, fmt: str = "the export") -> tuple[float, float, int]:
    """``(max |Δlogit|, top-1 agreement, positions)`` between two :func:`logits_of` results.

    Args:
        reference: the trained model's logits.
        got: an export's logits on the same prompts.
        fmt: the export's format, for the error.

    Raises:
        NonFiniteError: either side holds a NaN or infinite logit (no figure would mean
            anything).
    """
    check_finite(reference, "the trained model")
    check_finite(got, f"export {fmt}")
    worst, agree, n = 0.0, 0, 0
    for a, b in zip(reference, got, strict=True):
        worst = max(worst, (a - b).abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n += a.shape[0]
    return worst, agree / n if n else 1.0, n


def load_export(fmt: str, root: Path, base_factory=None):
    """One export loaded back in float32, as its users load it.

    Args:
        fmt: ``adapter``, ``merged`` or a GGUF type (``f16``, ``q8_0``, ``f32``).
        root: the export artifact's folder.
        base_factory: builds the float32 base model (``adapter`` only).

    Returns:
        ``(model, tokenizer or None)``: the GGUF's own tokenizer for a GGUF, else None.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if fmt == "adapter":
        from peft import PeftModel

        return PeftModel.from_pretrained(base_factory(), root / "adapter").eval(), None
    if fmt == "merged":
        return AutoModelForCausalLM.from_pretrained(
            root / "merged", dtype=torch.float32
        ).eval(), None
    name = f"model-{fmt}.gguf"
    model = AutoModelForCausalLM.from_pretrained(
        root / "gguf", gguf_file=name, dtype=torch.float32
    ).eval()
    return model, AutoTokenizer.from_pretrained(root / "gguf", gguf_file=name)


def failures(checks: list[Check]) -> str:
    """The figures of every check as lines, failing ones marked, for the error message.

    Args:
        checks: all formats' checks.
    """
    lines = []
    for c in checks:
        mark = "ok" if c.passed else "FAILED"
        tok = (
            ""
            if c.tokenizer_match is None
            else f", tokenizer {'matches' if c.tokenizer_match else 'DIFFERS'}"
        )
        lines.append(
            f"  {c.format}: max |Δlogit| {c.max_abs_logit_diff:.3g} (limit {c.tolerance:g}), top-1 agreement "
            f"{c.top1_agreement:.3f} (min {c.min_top1:g}) over {c.positions} positions{tok}: {mark}"
        )
    return "\n".join(lines)
