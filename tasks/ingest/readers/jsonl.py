"""JSONL sources (plain, or gzip when the name ends in .gz), read as bytes line by line so one
bad line costs one row, not the file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import (
    UTF8_BOM,
    NonFiniteLiteral,
    ReadLog,
    Row,
    error_text,
    preview,
    refuse_constant,
    wide_bom,
)

SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
GZIP_MAGIC = b"\x1f\x8b"


def decode_line(index: int, line: bytes) -> Row:
    """One line as a row, or as a ``broken_utf8`` / ``unparseable`` error row."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raw = line.decode("utf-8", errors="backslashreplace")
        return Row(index, error="broken_utf8", detail=f"invalid UTF-8 at byte {e.start}", raw=raw)
    try:
        return Row(index, value=json.loads(text, parse_constant=refuse_constant), raw=text)
    except (json.JSONDecodeError, NonFiniteLiteral) as e:
        return Row(index, error="unparseable", detail=f"bad JSON: {e}", raw=text)
    except (RecursionError, ValueError) as e:  # nesting too deep, an integer too long, ...
        return Row(index, error="unparseable", detail=f"bad JSON: {error_text(e)}", raw=text)


def _open(path: Path):
    """The file as a binary stream; gzip when its name ends in .gz (checked by magic bytes)."""
    if not path.name.lower().endswith(".gz"):
        return open(path, "rb")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head != GZIP_MAGIC:
        raise ValueError(
            f"named .gz but not gzip (starts with {head!r}, not {GZIP_MAGIC!r}); "
            "rename it or compress it"
        )
    return gzip.open(path, "rb")


def read_jsonl(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """Rows of a JSONL file (gzip when the name ends in .gz); blank lines are skipped, not rows.

    A line longer than ``max_row_bytes`` is not held, decoded nor parsed: it becomes an
    ``oversized`` row with its first bytes and its size. A UTF-8 byte order mark on the first
    line is dropped.

    Raises:
        ValueError / OSError / EOFError: the file is not gzip, is truncated, or is UTF-16/32
            (the caller reports it as an unreadable file, after the rows read before it).
    """
    index = 0
    with _open(path) as fh:
        for lineno in range(1, 1 << 62):
            line = fh.readline(max_row_bytes + 1)
            if not line:
                break
            if lineno == 1:
                if codec := wide_bom(line):
                    raise ValueError(f"{codec} text (byte order mark); convert it to UTF-8")
                line = line.removeprefix(UTF8_BOM)
            if len(line) > max_row_bytes and not line.endswith(b"\n"):
                size = len(line) + _skip_rest_of_line(fh)
                yield Row(
                    index,
                    error="oversized",
                    detail=f"line of {size} bytes is over ingest.max_row_bytes ({max_row_bytes})",
                    raw=preview(line),
                    line=lineno,
                    size=size,
                )
                index += 1
                continue
            if not line.strip():
                continue
            line = line.rstrip(b"\r\n")
            row = decode_line(index, line)
            row.line, row.size = lineno, len(line)
            yield row
            index += 1


def _skip_rest_of_line(fh) -> int:
    """Reads past the end of the current line in bounded chunks; the bytes it held (no newline)."""
    size = 0
    while chunk := fh.readline(1 << 20):
        if chunk.endswith(b"\n"):
            return size + len(chunk.rstrip(b"\r\n"))
        size += len(chunk)
    return size
