"""Parquet sources, read with pyarrow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import RAW_KEEP_CHARS, Row

SUFFIXES = (".parquet",)


def read_parquet(path: Path) -> Iterator[Row]:
    """Rows of a Parquet file, as plain Python dicts and lists (pyarrow, not numpy arrays)."""
    import pyarrow.parquet as pq

    for i, value in enumerate(pq.read_table(path).to_pylist()):
        yield Row(
            i, value=value, raw=json.dumps(value, ensure_ascii=False, default=str)[:RAW_KEEP_CHARS]
        )
