"""Parquet sources, read with pyarrow one record batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.json_file import json_row
from tasks.ingest.readers.row import ReadLog, Row

SUFFIXES = (".parquet",)


def read_parquet(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """Rows of a Parquet file, as plain Python dicts and lists (pyarrow, not numpy arrays).

    Raises:
        pyarrow.ArrowException / OSError: not Parquet, or truncated (the caller reports it as an
            unreadable file, after the rows read before it).
    """
    import pyarrow.parquet as pq

    position = 0
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                yield json_row(position, value, max_row_bytes, default=str)
                position += 1
