"""``Row``: what every reader yields, one unit of a source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RAW_KEEP_CHARS = 4096  # how much of an unparseable row the rejected shard keeps


@dataclass
class Row:
    """One unit read from a source: a parsed JSON value, an HTML page, or why it failed."""

    index: int
    value: Any = None  # the parsed JSON value
    html: bytes | None = None  # a page's bytes, for HTML sources (``raw`` holds its file name)
    error: str | None = None  # "broken_utf8" or "unparseable" when the row could not be read
    detail: str = ""
    raw: str = ""  # the original text, kept in the rejected shard when the row fails
