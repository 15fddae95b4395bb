"""``Row``: what every reader yields, one unit of a source; ``ReadLog``: what a reader passed over."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RAW_KEEP_CHARS = 4096  # how much of a rejected row's raw text the rejected shard keeps
DEFAULT_MAX_ROW_BYTES = 10 * 1024 * 1024  # ingest.max_row_bytes' default

# The UTF-16/32 byte order marks: a file that starts with one is not UTF-8 text.
WIDE_BOMS = {
    b"\xff\xfe\x00\x00": "utf-32",
    b"\x00\x00\xfe\xff": "utf-32",
    b"\xff\xfe": "utf-16",
    b"\xfe\xff": "utf-16",
}
UTF8_BOM = b"\xef\xbb\xbf"


def wide_bom(head: bytes) -> str | None:
    """The codec a UTF-16/32 byte order mark at the start of ``head`` names, else None."""
    return next((codec for bom, codec in WIDE_BOMS.items() if head.startswith(bom)), None)


@dataclass
class Row:
    """One unit read from a source: a parsed JSON value, an HTML page, or why it failed.

    ``index`` numbers the rows of the whole source (a folder's files one after the other, in
    path order); ``file``, ``line`` and ``row`` say where the row is, for the rejected shard.
    """

    index: int
    value: Any = None  # the parsed JSON value
    html: bytes | None = None  # a page's bytes, for HTML pages and WARC responses
    error: str | None = None  # broken_utf8 / unparseable / oversized / unreadable_file
    detail: str = ""
    raw: str = ""  # the original text (a page: its name), kept bounded in the rejected shard
    file: str = ""  # the file it came from (relative to a folder source)
    line: int | None = None  # 1-based line, for JSONL
    row: int | None = None  # 0-based position in a JSON list, a Parquet file or a WARC file
    size: int | None = None  # the raw row's size in bytes, where the reader knows it
    url: str | None = None  # a WARC response's target URI


@dataclass
class ReadLog:
    """What reading a source passed over without making a row of it, for the report.

    ``skipped_files``: files of a folder no reader takes, each ``{"file", "reason"}``;
    ``skipped``: records inside files that are not rows (WARC requests, non-HTML responses...).
    """

    skipped_files: list[dict[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


class NonFiniteLiteral(ValueError):
    """A ``NaN``, ``Infinity`` or ``-Infinity`` literal in a row: Python's json reads them, but
    they are not JSON (RFC 8259), and a NaN score or weight would poison what trains on it."""

    def __init__(self, name: str):
        super().__init__(
            f"{name} is not a JSON number (JSON has no NaN or Infinity); write null or a "
            "finite number"
        )


def refuse_constant(name: str):
    """``parse_constant`` for ``json.loads``: a row holding NaN/Infinity does not parse."""
    raise NonFiniteLiteral(name)


def preview(raw: str | bytes) -> str:
    """The first ``RAW_KEEP_CHARS`` of a raw row, as text (undecodable bytes escaped)."""
    if isinstance(raw, bytes):
        raw = raw[:RAW_KEEP_CHARS].decode("utf-8", errors="backslashreplace")
    return raw[:RAW_KEEP_CHARS]


def error_text(e: BaseException) -> str:
    """An exception as one bounded line: its type and the first line of its message."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else "(no message)"
    if isinstance(e, RecursionError):
        text = f"nested too deeply ({text})"
    return f"{type(e).__name__}: {text}"[:500]
