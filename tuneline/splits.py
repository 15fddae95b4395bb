"""Split rows: what the format stage writes for training and evaluation, and the one reader
train, evaluate and export use (so no stage imports another).

A format artifact holds ``splits/train.jsonl.gz`` and ``splits/eval.jsonl.gz``, one
``SplitRow`` per line. Format validates every row through the model before writing it, and the
reader validates every row it reads, so a stage downstream sees typed rows or a clear error,
never a dict with a missing key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneline.artifacts import Artifact
from tuneline.errors import InputError
from tuneline.records import load_jsonl_gz

SPLITS = ("train", "eval")


class SplitRow(BaseModel):
    """One rendered example: the prompt the model is given and the completion it learns.

    Every kind has ``prompt`` and ``completion`` (a text row has an empty prompt: the document
    is learned whole). A preference row's ``completion`` is the chosen reply and
    ``rejected_completion`` the rejected one, both rendered as the assistant turn after
    ``prompt`` (``chosen``/``rejected`` name them). Fields are in the order they are written
    and an absent optional field is not written, so the files keep the layout they always had.
    """

    # Frozen: a row read from an artifact is that artifact's content. Unknown keys are refused:
    # a row with a field this schema does not know comes from a different format version.
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="The record's id (stable across runs; it decides the split).")
    kind: Literal["chat", "preference", "text"] = Field(description="The record's kind.")
    prompt: str = Field(
        description="The rendered context up to the reply: chat template with the generation "
        "prompt; empty for text rows."
    )
    completion: str = Field(
        description="The rendered reply after the prompt, end-of-turn marker included (the "
        "chosen reply for preference rows; the document and eos for text rows)."
    )
    rejected_completion: str | None = Field(
        default=None, description="The rendered rejected reply, for preference rows only."
    )
    text: str = Field(description="prompt + completion: the whole training sequence.")
    n_tokens: int = Field(ge=0, description="Tokens of `text` (template markers included).")
    truncated: bool = Field(description="n_tokens > format.max_length: the trainer will cut it.")

    @model_validator(mode="after")
    def check_fields_match_kind(self) -> SplitRow:
        if (self.kind == "preference") != (self.rejected_completion is not None):
            raise ValueError(
                "`rejected_completion` is required for preference rows and only for them "
                f"(kind={self.kind!r})"
            )
        if self.kind == "text" and self.prompt:
            raise ValueError("a text row has an empty prompt (the document is the completion)")
        return self

    @model_validator(mode="after")
    def check_text_is_prompt_and_completion(self) -> SplitRow:
        if self.text != self.prompt + self.completion:
            raise ValueError("`text` must be exactly prompt + completion")
        return self

    @property
    def chosen(self) -> str | None:
        """The preferred reply after ``prompt`` (preference rows only)."""
        return self.completion if self.kind == "preference" else None

    @property
    def rejected(self) -> str | None:
        """The dispreferred reply after ``prompt`` (preference rows only)."""
        return self.rejected_completion

    def to_json(self) -> dict[str, object]:
        """The row as written to a split file (absent optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _split_path(fmt: Artifact, split: str):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    path = fmt.path / "splits" / f"{split}.jsonl.gz"
    if not path.exists():
        raise InputError(
            f"format artifact {fmt.ref.short} has no splits/{split}.jsonl.gz; "
            "re-run the format stage (tuneline run --only format --force format)"
        )
    return path


def read_split(fmt: Artifact, split: str) -> Iterator[SplitRow]:
    """The rows of ``splits/<split>.jsonl.gz`` in a format artifact, one at a time.

    Args:
        fmt: the format artifact.
        split: ``"train"`` or ``"eval"``.

    Raises:
        InputError: the split file is missing, or a row does not fit ``SplitRow`` (an artifact
            written by another version of format).
    """
    path = _split_path(fmt, split)
    with open(path, "rb") as fh:
        for line, data in enumerate(load_jsonl_gz(fh), 1):
            try:
                yield SplitRow.model_validate(data)
            except ValidationError as e:
                row_id = data.get("id") if isinstance(data, dict) else None
                problems = "; ".join(
                    f"{'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']}" for err in e.errors()
                )
                raise InputError(
                    f"format artifact {fmt.ref.short}: splits/{split}.jsonl.gz row {line} "
                    f"(id {row_id!r}) is not a split row ({problems}); re-run the format stage "
                    "(tuneline run --only format --force format)"
                ) from None


def load_split(fmt: Artifact, split: str) -> list[SplitRow]:
    """Every row of one split (see ``read_split``)."""
    return list(read_split(fmt, split))


def sft_example(row: SplitRow, eos_token: str | None) -> dict[str, str]:
    """A split row as the SFT trainer sees it: ``{"prompt", "completion"}``, ending in one eos.

    The completion keeps the chat template's end-of-turn token, so the model learns to stop.
    TRL appends eos to every completion that does not already end with it; a ChatML
    completion ends with ``<|im_end|>\\n``, which would teach a second eos after the newline,
    so trailing whitespace after the eos is dropped and a missing eos is added here, once.
    Evaluate scores exactly these strings.

    Args:
        row: a split row.
        eos_token: the tokenizer's eos token.
    """
    completion = row.completion
    if eos_token:
        stripped = completion.rstrip()
        completion = stripped if stripped.endswith(eos_token) else completion + eos_token
    return {"prompt": row.prompt, "completion": completion}
