"""JSONL sources (plain, or gzip when the name ends in .gz), read as bytes line by line so one
bad line costs one row, not the file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import Row

SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")


def decode_line(index: int, line: bytes) -> Row:
    """One line as a row, or as a ``broken_utf8`` / ``unparseable`` error row."""
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
            yield decode_line(index, line.rstrip(b"\r\n"))
            index += 1
