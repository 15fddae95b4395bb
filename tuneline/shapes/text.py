"""Raw text: one document per row, in one field (``text`` unless the source names another)."""

from __future__ import annotations

from typing import Any

from tuneline.records import Record
from tuneline.shapes.turns import require_text


def parse(row: dict[str, Any], text_field: str = "text") -> dict[str, Any]:
    """{<text_field>} -> a text record.

    Raises:
        ParseError: the field is missing or not a string.
    """
    return {"kind": "text", "text": require_text(row.get(text_field), text_field)}


def dump(record: Record) -> dict[str, Any]:
    """The document as ``{text}``."""
    return {"text": record.text}
