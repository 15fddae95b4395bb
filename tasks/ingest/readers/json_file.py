"""JSON sources: one file holding a list of rows, or an object with one such list in it.
(Not ``json.py``, which would shadow the standard library inside this package.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.ingest.readers.row import (
    UTF8_BOM,
    NonFiniteLiteral,
    ReadLog,
    Row,
    error_text,
    preview,
    wide_bom,
)

SUFFIXES = (".json",)
_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module skips it


class _NonFinite:
    """Stands for a NaN/Infinity literal inside a parsed file, so the row holding it is
    rejected, not the whole file (``json.loads`` reads a file in one go)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:  # as the rejected row's preview shows it
        return self.name


class _Constants:
    """``parse_constant`` that marks each NaN/Infinity literal, and says whether any was seen
    (so the rows of a file without one are not walked)."""

    def __init__(self):
        self.seen = False

    def __call__(self, name: str) -> _NonFinite:
        self.seen = True
        return _NonFinite(name)


def _non_finite(value: Any) -> str | None:
    """The first NaN/Infinity literal in a parsed value, or None."""
    stack = [value]
    while stack:  # iterative: rows may nest deeper than the recursion limit
        item = stack.pop()
        if isinstance(item, _NonFinite):
            return item.name
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def read_json(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """Rows of a JSON file holding a list, or an object with one list of records in it.

    Invalid bytes are decoded as U+FFFD here (one file is one JSON value, so it cannot be split
    by line); the broken-UTF-8 filter then drops exactly the records that contain them. A byte
    order mark (UTF-8, or UTF-16/32, whose text is then decoded as such) is dropped. A row whose
    JSON text is longer than ``max_row_bytes`` becomes an ``oversized`` row, one holding a NaN
    or Infinity literal an ``unparseable`` one. A list that breaks part-way (a cut download, a
    bad item) yields its complete items before the break, then raises naming where it broke.

    Raises:
        ValueError: the file is not JSON, holds no list of records, or its list breaks part-way
            (the caller reports it as an unreadable file, after the rows read before it).
    """
    data = path.read_bytes()
    codec = wide_bom(data[:4])
    text = (
        data.decode(codec, errors="replace")
        if codec
        else data.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    ).lstrip("\ufeff")
    del data
    constants = _Constants()
    try:
        value = json.loads(text, parse_constant=constants)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            yield from _items_to_break(text, max_row_bytes, constants)
            return
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
        yield _item_row(i, item, max_row_bytes, constants)


def _item_row(i: int, item: Any, max_row_bytes: int, constants: _Constants) -> Row:
    if constants.seen and (name := _non_finite(item)):
        return Row(
            i,
            error="unparseable",
            detail=f"bad JSON: {NonFiniteLiteral(name)}",
            raw=preview(json.dumps(item, ensure_ascii=False, default=str)),
            row=i,
        )
    return json_row(i, item, max_row_bytes)


def _items_to_break(text: str, max_row_bytes: int, constants: _Constants) -> Iterator[Row]:
    """The complete items of a top-level list that does not parse as a whole, in order; then
    raises ValueError naming where the list breaks and where the rest (not read) starts, so
    what precedes a cut is kept and the rest is reported rather than the whole file lost."""
    decoder = json.JSONDecoder(parse_constant=constants)
    pos, i = text.index("[") + 1, 0
    while True:
        rest = pos = _WS.match(text, pos).end()  # where the first item not read yet starts
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            reason, pos = e.msg, e.pos
            break
        except (RecursionError, ValueError) as e:
            reason = error_text(e)
            break
        yield _item_row(i, item, max_row_bytes, constants)
        i += 1
        pos = _WS.match(text, pos).end()
        if not text.startswith(",", pos):
            reason = "text after the closing ]" if text.startswith("]", pos) else "expected , or ]"
            rest = pos
            break
        pos += 1
    cut = " (the file ends there: cut short?)" if _WS.match(text, pos).end() >= len(text) else ""
    items = f"the {i} complete items before it were" if i != 1 else "the one complete item was"
    # json's messages end in "at" where it names a place ("Unterminated string starting at").
    raise ValueError(
        f"the JSON list breaks: {reason.removesuffix(' at')} at {_where(text, pos)}{cut}; "
        f"{items} read, the rest, from {_where(text, rest)}, was not: fix or re-export the file"
    )


def _where(text: str, pos: int) -> str:
    """A position in the text as json's errors give it: line, column and character."""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)  # 1-based; rfind gives -1 on the first line
    return f"line {line} column {column} (char {pos})"


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
