"""Record shapes: the common fine-tuning row formats, read into and written from tuneline records.

One module per shape (``alpaca``, ``sharegpt``, ``messages``, ``preference``, ``text``), each
with ``parse(row) -> record fields`` (what ingest reads) and ``dump(record) -> row`` (what
format exports), so a shape's two directions sit side by side and can be checked as a round
trip. ``turns`` holds what the chat shapes share: the turn reader, the speaker names and
``ParseError``.

This is a library module under ``tuneline/``, not part of ``tasks/ingest``: ingest parses and
format dumps, and stages never import each other, so the shapes live with the record schema
they map onto.
"""

from __future__ import annotations

from typing import Any

from tuneline.shapes import alpaca, messages, preference, sharegpt, text
from tuneline.shapes.turns import ParseError

__all__ = ["SHAPES", "ParseError", "detect_format", "parse_row"]

SHAPES = {
    "alpaca": alpaca,
    "sharegpt": sharegpt,
    "messages": messages,
    "preference": preference,
    "text": text,
}


def detect_format(row: dict[str, Any], text_field: str) -> str:
    """The shape of one row, from its keys (format: auto).

    Raises:
        ParseError: the keys match no shape.
    """
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


def parse_row(value: Any, fmt: str, text_field: str = "text") -> tuple[str, dict[str, Any]]:
    """The shape name and the record fields of one JSON row.

    Args:
        value: the parsed JSON row.
        fmt: a shape name, or ``auto`` to detect it from the row's keys.
        text_field: the field holding the document, for the text shape.

    Raises:
        ParseError: the row is not an object, its shape is unknown, or it does not fit it.
    """
    if not isinstance(value, dict):
        raise ParseError(f"a record must be a JSON object, got {type(value).__name__}")
    fmt = detect_format(value, text_field) if fmt == "auto" else fmt
    if fmt == "text":
        return fmt, text.parse(value, text_field)
    if fmt not in SHAPES:
        raise ParseError(f"format {fmt!r} is for folders of HTML pages, not JSON rows")
    return fmt, SHAPES[fmt].parse(value)
