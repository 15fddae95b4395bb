"""JSON sources: one file holding a list of rows, or an object with one such list in it.
(Not ``json.py``, which would shadow the standard library inside this package.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import UTF8_BOM, ReadLog, Row, error_text, preview, wide_bom

SUFFIXES = (".json",)


def read_json(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """Rows of a JSON file holding a list, or an object with one list of records in it.

    Invalid bytes are decoded as U+FFFD here (one file is one JSON value, so it cannot be split
    by line); the broken-UTF-8 filter then drops exactly the records that contain them. A byte
    order mark (UTF-8, or UTF-16/32, whose text is then decoded as such) is dropped. A row whose
    JSON text is longer than ``max_row_bytes`` becomes an ``oversized`` row.

    Raises:
        ValueError: the file is not JSON, or holds no list of records (the caller reports it
            as an unreadable file).
    """
    data = path.read_bytes()
    codec = wide_bom(data[:4])
    text = (
        data.decode(codec, errors="replace")
        if codec
        else data.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    ).lstrip("\ufeff")
    del data
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e}); fix the file or convert it to JSONL") from None
    except (RecursionError, ValueError) as e:
        raise ValueError(f"not valid JSON ({error_text(e)})") from None
    del text
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if not lists:
            raise ValueError("holds a JSON object without a list of records in it")
        value = lists[0]
    if not isinstance(value, list):
        raise ValueError(f"must hold a JSON list of records, not {type(value).__name__}")
    for i, item in enumerate(value):
        yield json_row(i, item, max_row_bytes)


def json_row(position: int, value, max_row_bytes: int, **dumps) -> Row:
    """A parsed value as a row at ``position``, with its JSON text as ``raw`` (bounded), or an
    ``oversized`` / ``unparseable`` row."""
    try:
        text = json.dumps(value, ensure_ascii=False, **dumps)
    except (RecursionError, ValueError, TypeError) as e:
        return Row(position, error="unparseable", detail=error_text(e), row=position)
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_row_bytes:
        return Row(
            position,
            error="oversized",
            detail=f"row of {size} bytes is over ingest.max_row_bytes ({max_row_bytes})",
            raw=preview(text),
            row=position,
            size=size,
        )
    return Row(position, value=value, raw=preview(text), row=position, size=size)
