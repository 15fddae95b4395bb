"""The ``ingest`` config section: which sources to read and what the filters keep."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.ingest.languages import language_code
from tuneline.sections import Section

SourceFormat = Literal["auto", "alpaca", "sharegpt", "messages", "preference", "text", "html"]


class SourceConfig(Section):
    path: str = Field(
        description="A file (.jsonl, .jsonl.gz, .json, .parquet, .html, .warc, .warc.gz, .arc) "
        "or a folder of such files (every kind is read; the files skipped are listed in the report)."
    )
    format: SourceFormat = Field(
        default="auto", description="Record shape; auto detects it from each record's keys."
    )
    text_field: str = Field(
        default="text", description="Field holding the document, for format=text."
    )
    language: str | None = Field(
        default=None,
        description="The language this source is written in (ISO 639-1, as in ingest.languages), "
        "if you know it: a record whose language ID says 'unknown' (too short or too symbolic to "
        "tell, e.g. a phone number or a table) is then kept when this language is wanted, and "
        "counted in the report's language_unknown_kept.",
    )

    @field_validator("language", mode="before")
    @classmethod
    def check_language(cls, v):
        return None if v is None else language_code(v, "ingest.sources[].language")


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
        default=0.5,
        ge=0,
        le=1,
        description="Lowest fastText score at which language ID names a language; below it the "
        "record's language is 'unknown' (kept only when its source declares a wanted language). "
        "Scored on the prose part (code, tables, URLs, numbers removed). 0.5: 995 of "
        "alpaca_en_demo's 999 English rows named en (0.65: 987), and 589 of the 600 langid "
        "sentences in 12 languages right, 6 wrong (0.65: 583 right, 3 wrong); "
        "bench/filters_bench.py.",
    )
    min_chars: int = Field(
        default=20,
        ge=0,
        description="Drop records whose text is shorter than this many characters, counting a "
        "Han or kana character as 4 and a Hangul syllable as 3 (about a word each), so a short "
        "Chinese sentence counts as long as its English translation.",
    )
    max_chars: int = Field(default=100_000, ge=1, description="Drop records longer than this.")
    drop_refusals: bool = Field(default=True, description="Drop replies that refuse or disclaim.")
    refusal_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS),
        description="Case-insensitive phrases that mark a refusal.",
    )
    max_row_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="A row (JSONL line, JSON list item, page, WARC payload) larger than this is "
        "rejected as oversized before it is parsed; the rejected shard keeps its first 4 KB. "
        "10 MB is 100x max_chars' default: a row this large would not be kept anyway, and "
        "parsing one took seconds (a 50 MB line: 19 s).",
    )
    fail_on_unreadable: bool = Field(
        default=False,
        description="Stop the run on a file that cannot be read at all (not gzip, not Parquet, "
        "truncated JSON...); by default it is reported (sources[i].error, an unreadable_file "
        "rejection) and the other files are read.",
    )
    quality_filter: bool = Field(
        default=True,
        description="Gopher quality rules (word lengths, symbols, stop words, repetition) on text "
        "records; punctuation is not counted as words, a CJK character is a word.",
    )
    quality_min_words: int = Field(
        default=50,
        ge=0,
        description="Fewest words of a web page (format html) for the quality rules; plain-text "
        "records under it are not judged by the ratio rules at all (too few words for ratios) "
        "rather than dropped. Gopher's 50: a page of trafilatura's evaluation set under 50 words "
        "was navigation left over, not an article (bench/filters_bench.py).",
    )
    reply_filters: bool = Field(
        default=True,
        description="Rules for chats and preference pairs, one reason each: truncated_reply, "
        "repeated_prompt, repetition, placeholder, broken_markup (bench/filters_bench.py: "
        "planted cases caught, alpaca_en_demo rows kept).",
    )

    @field_validator("languages", mode="before")
    @classmethod
    def check_languages(cls, v):
        if isinstance(v, str) or v is False:
            v = [v]  # `languages: en` (or YAML's `languages: no`) means that one language
        if not isinstance(v, list):
            raise ValueError(
                f"ingest.languages: {v!r} is not a list of language codes, e.g. [en, de]"
            )
        return [language_code(x, f"ingest.languages[{i}]") for i, x in enumerate(v)]

    @model_validator(mode="after")
    def check_length_bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})"
            )
        if not self.sources:
            raise ValueError("ingest.sources is empty: name at least one input file or folder")
        return self
