"""Split rows: what the format stage writes for training and evaluation, and the one reader
train, evaluate and export use (so no stage imports another).

A format artifact holds ``splits/train.jsonl.gz`` and ``splits/eval.jsonl.gz``, one
``SplitRow`` per line. Format validates every row through the model before writing it, and the
reader validates every row it reads, so a stage downstream sees typed rows or a clear error,
never a dict with a missing key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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
    return {"prompt": row.prompt, "completion": _one_eos(row.completion, eos_token)}


def _one_eos(text: str, eos_token: str | None) -> str:
    """``text`` ending in exactly one eos: trailing whitespace after an eos dropped, a missing
    eos added (see ``sft_example``)."""
    if not eos_token:
        return text
    stripped = text.rstrip()
    return stripped if stripped.endswith(eos_token) else text + eos_token


# --------------------------------------------------------------------- rows per method

ROW_KINDS = ("chat", "preference", "text")

METHOD_ROWS: dict[str, tuple[str, ...]] = {
    # Next-token loss on every token of ``text`` (a preference row: prompt + chosen reply).
    "cpt": ROW_KINDS,
    # Loss on the completion (a preference row: its chosen reply; a text row: the document).
    "sft": ROW_KINDS,
    # Paired preference: each row is one (prompt, chosen, rejected) triple.
    "dpo": ("preference",),
    "orpo": ("preference",),
    # Unpaired preference: each row gives two examples, chosen desirable, rejected undesirable.
    "kto": ("preference",),
}
"""The row kinds each training method trains on: the contract between format (which reports
how many train rows each method can use) and train (which gives a method only those rows)."""

KIND_NEEDS = {
    "preference": "preference rows (a prompt with a chosen and a rejected reply)",
}


def _kinds_of(method: str) -> tuple[str, ...]:
    try:
        return METHOD_ROWS[method]
    except KeyError:
        raise ValueError(
            f"no row selection for training method {method!r}; known: {', '.join(METHOD_ROWS)} "
            "(tuneline.splits.METHOD_ROWS)"
        ) from None


def rows_for_method(method: str, rows: Iterable[SplitRow]) -> list[SplitRow]:
    """The rows ``method`` trains on, in order (see ``METHOD_ROWS``).

    Raises:
        ValueError: ``method`` has no entry in ``METHOD_ROWS``.
    """
    kinds = _kinds_of(method)
    return [r for r in rows if r.kind in kinds]


def method_counts_from_kinds(kinds: Mapping[str, int]) -> dict[str, int]:
    """``{method: rows it can use}`` from rows counted by kind (what format gathers as its rows
    stream by, without keeping them)."""
    return {m: sum(kinds.get(k, 0) for k in ks) for m, ks in METHOD_ROWS.items()}


def method_row_counts(rows: Iterable[SplitRow]) -> dict[str, int]:
    """``{method: how many of rows it can use}`` for every method of ``METHOD_ROWS`` (rows, not
    examples: kto makes two examples of each preference row)."""
    return method_counts_from_kinds(Counter(r.kind for r in rows))


def usable_rows(method: str, rows: Iterable[SplitRow]) -> list[SplitRow]:
    """``rows_for_method``, or an ``InputError`` naming the method and the rows it needs when
    none of ``rows`` is usable (a method's ``build_trainer`` calls this first).

    Raises:
        InputError: no row of a kind ``method`` trains on.
    """
    rows = list(rows)
    usable = rows_for_method(method, rows)
    if not usable:
        kinds = _kinds_of(method)
        needs = (
            KIND_NEEDS[kinds[0]] if len(kinds) == 1 and kinds[0] in KIND_NEEDS
            else "rows of kind " + " or ".join(kinds)
        )
        given = Counter(r.kind for r in rows)
        have = ", ".join(f"{k}: {n}" for k, n in sorted(given.items())) or "none"
        raise InputError(
            f"train: method {method!r} needs {needs}, and the train split has none "
            f"(rows by kind: {have}); pick another train.method or add such records"
        )
    return usable


def preference_example(row: SplitRow, eos_token: str | None) -> dict[str, str]:
    """A preference row as DPO/ORPO see it: ``{"prompt", "chosen", "rejected"}``, each reply
    ending in one eos (as ``sft_example``).

    Raises:
        ValueError: ``row`` is not a preference row.
    """
    if row.rejected_completion is None:
        raise ValueError(f"row {row.id!r} is a {row.kind} row, not a preference row")
    return {
        "prompt": row.prompt,
        "chosen": _one_eos(row.completion, eos_token),
        "rejected": _one_eos(row.rejected_completion, eos_token),
    }


def kto_examples(row: SplitRow, eos_token: str | None) -> list[dict[str, object]]:
    """A preference row as two unpaired KTO examples ``{"prompt", "completion", "label"}``: the
    chosen reply desirable (``True``), the rejected one undesirable (``False``)."""
    ex = preference_example(row, eos_token)
    return [
        {"prompt": ex["prompt"], "completion": ex["chosen"], "label": True},
        {"prompt": ex["prompt"], "completion": ex["rejected"], "label": False},
    ]


def cpt_example(row: SplitRow, eos_token: str | None) -> dict[str, str]:
    """A row as continued pretraining sees it: ``{"text"}``, the whole sequence (prompt and
    completion; a preference row's chosen reply) ending in one eos."""
    return {"text": _one_eos(row.text, eos_token)}
