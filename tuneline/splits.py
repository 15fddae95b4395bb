"""Split rows: what the format stage writes for training and evaluation, and the one reader
train, evaluate and export use (so no stage imports another)."""

from __future__ import annotations

from typing import Any

from tuneline.artifacts import Artifact
from tuneline.errors import InputError
from tuneline.records import load_jsonl_gz


def load_split(fmt: Artifact, split: str) -> list[dict[str, Any]]:
    """The rows of ``splits/<split>.jsonl.gz`` in a format artifact.

    Args:
        fmt: the format artifact.
        split: ``"train"`` or ``"eval"``.
    """
    path = fmt.path / "splits" / f"{split}.jsonl.gz"
    if not path.exists():
        raise InputError(
            f"format artifact {fmt.ref.short} has no splits/{split}.jsonl.gz; "
            "re-run the format stage (tuneline run --only format --force format)"
        )
    with open(path, "rb") as fh:
        return list(load_jsonl_gz(fh))


def sft_example(row: dict[str, Any], eos_token: str | None) -> dict[str, str]:
    """A split row as the trainer sees it: ``{"prompt", "completion"}``, ending in one eos.

    The completion keeps the chat template's end-of-turn token, so the model learns to stop.
    TRL appends eos to every completion that does not already end with it; a ChatML
    completion ends with ``<|im_end|>\\n``, which would teach a second eos after the newline,
    so trailing whitespace after the eos is dropped and a missing eos is added here, once.
    Evaluate scores exactly these strings.

    Args:
        row: a split row (``prompt``, ``completion``).
        eos_token: the tokenizer's eos token.
    """
    completion = row["completion"]
    if eos_token:
        stripped = completion.rstrip()
        completion = stripped if stripped.endswith(eos_token) else completion + eos_token
    return {"prompt": row["prompt"], "completion": completion}
