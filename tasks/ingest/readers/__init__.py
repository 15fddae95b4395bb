"""Source readers: one module per kind of source, each turning a path into ``Row``s.

``read_source`` picks the reader from the path: a folder or an .html/.htm file is pages
(``html``), otherwise the file's suffix (``jsonl``, ``json_file``, ``parquet``). A new kind of
source (WARC, say) is one module with a ``read_*`` generator and its ``SUFFIXES``, plus one line
in ``READERS``. Readers never raise for one bad row: they yield it with ``error`` set, and the
stage rejects it; a file that cannot be read at all raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.ingest.readers import html, json_file, jsonl, parquet
from tasks.ingest.readers.html import extract_page
from tasks.ingest.readers.row import RAW_KEEP_CHARS, Row
from tuneline.errors import InputError

__all__ = ["RAW_KEEP_CHARS", "READERS", "Row", "extract_page", "read_source"]

# File readers by name suffix, tried in order.
READERS: list[tuple[tuple[str, ...], Callable[[Path], Iterator[Row]]]] = [
    (jsonl.SUFFIXES, jsonl.read_jsonl),
    (json_file.SUFFIXES, json_file.read_json),
    (parquet.SUFFIXES, parquet.read_parquet),
]


def read_source(path: Path, fmt: str) -> Iterator[Row]:
    """The rows of one source.

    Args:
        path: an existing file or folder.
        fmt: the source's configured format (``html`` insists on pages).

    Raises:
        InputError: the path's type is not one a reader knows, or ``fmt`` is html and the path
            is not pages.
    """
    name = path.name.lower()
    if path.is_dir() or name.endswith(html.SUFFIXES):
        return html.read_pages(path)
    if fmt == "html":
        raise InputError(f"{path}: format html needs a folder of .html/.htm pages or one such page")
    for suffixes, reader in READERS:
        if name.endswith(suffixes):
            return reader(path)
    raise InputError(
        f"{path}: unsupported file type; use .jsonl, .jsonl.gz, .json, .parquet or a folder of .html pages"
    )
