"""JSON sources: one file holding a list of rows, or an object with one such list in it.
(Not ``json.py``, which would shadow the standard library inside this package.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import RAW_KEEP_CHARS, Row
from tuneline.errors import InputError

SUFFIXES = (".json",)


def read_json(path: Path) -> Iterator[Row]:
    """Rows of a JSON file holding a list, or an object with one list of records in it.

    Invalid bytes are decoded as U+FFFD here (one file is one JSON value, so it cannot be split
    by line); the broken-UTF-8 filter then drops exactly the records that contain them.

    Raises:
        InputError: the file is not JSON, or holds no list of records.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path} is not valid JSON ({e}); fix the file or convert it to JSONL"
        ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if not lists:
            raise InputError(f"{path} holds a JSON object without a list of records in it")
        data = lists[0]
    if not isinstance(data, list):
        raise InputError(f"{path} must hold a JSON list of records, not {type(data).__name__}")
    for i, value in enumerate(data):
        yield Row(i, value=value, raw=json.dumps(value, ensure_ascii=False)[:RAW_KEEP_CHARS])
