"""The ``ingest`` config section: which sources to read and what the filters keep."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tuneline.sections import Section

SourceFormat = Literal["auto", "alpaca", "sharegpt", "messages", "preference", "text", "html"]


class SourceConfig(Section):
    path: str = Field(
        description="A file (.jsonl, .json, .jsonl.gz, .parquet) or a folder of .html pages."
    )
    format: SourceFormat = Field(
        default="auto", description="Record shape; auto detects it from each record's keys."
    )
    text_field: str = Field(
        default="text", description="Field holding the document, for format=text."
    )


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
        default_factory=lambda: ["en"],
        description="Keep records in these languages (ISO 639-1; fastText lid.176); empty keeps all.",
    )
    language_threshold: float = Field(
        default=0.65, ge=0, le=1, description="Minimum language-ID score to keep a record."
    )
    min_chars: int = Field(
        default=20, ge=0, description="Drop records whose text is shorter than this."
    )
    max_chars: int = Field(default=100_000, ge=1, description="Drop records longer than this.")
    drop_refusals: bool = Field(default=True, description="Drop replies that refuse or disclaim.")
    refusal_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="Case-insensitive phrases that mark a refusal.",
    )
    quality_filter: bool = Field(
        default=True,
        description="Gopher quality rules (word lengths, symbols, stop words) on text records.",
    )

    @model_validator(mode="after")
    def check_length_bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})"
            )
        if not self.sources:
            raise ValueError("ingest.sources is empty: name at least one input file or folder")
        return self
