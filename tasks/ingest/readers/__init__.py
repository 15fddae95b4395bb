"""Source readers: one module per kind of file, each turning a file into ``Row``s.

``read_source`` reads one source: a file, by its name's suffix (``jsonl``, ``json_file``,
``parquet``, ``html``, ``warc``), or a folder, every file under it in path order with the reader
its suffix names (the files no reader takes are listed in the ``ReadLog``, with why). A new kind
of file is one module with a ``read_*(path, max_row_bytes, log)`` generator and its
``SUFFIXES``, plus one line in ``READERS``.

Nothing here raises for one bad row or one bad file: a row that cannot be read is yielded with
``error`` set (``broken_utf8``, ``unparseable``, ``oversized``), and a file that cannot be read
at all (not gzip, not Parquet, truncated, not JSON...) ends its rows with one
``unreadable_file`` row naming it; the stage rejects them and goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.ingest.readers import html, json_file, jsonl, parquet, warc
from tasks.ingest.readers.html import extract_page
from tasks.ingest.readers.row import (
    DEFAULT_MAX_ROW_BYTES,
    RAW_KEEP_CHARS,
    ReadLog,
    Row,
    error_text,
)
from tuneline.errors import InputError

__all__ = [
    "DEFAULT_MAX_ROW_BYTES",
    "RAW_KEEP_CHARS",
    "READERS",
    "ReadLog",
    "Row",
    "extract_page",
    "read_source",
    "reader_for",
]

Reader = Callable[[Path, int, ReadLog], Iterator[Row]]

# File readers by name suffix (matched case-insensitively), tried in order.
READERS: list[tuple[str, tuple[str, ...], Reader]] = [
    ("jsonl", jsonl.SUFFIXES, jsonl.read_jsonl),
    ("json", json_file.SUFFIXES, json_file.read_json),
    ("parquet", parquet.SUFFIXES, parquet.read_parquet),
    ("html", html.SUFFIXES, html.read_page),
    ("warc", warc.SUFFIXES, warc.read_warc),
]
PAGE_KINDS = ("html", "warc")  # what a source with format html reads
KNOWN = ", ".join(s for _, suffixes, _ in READERS for s in suffixes)


def reader_for(name: str) -> tuple[str, Reader] | None:
    """The kind and reader of a file name, by its suffix; None when no reader takes it."""
    lower = name.lower()
    for kind, suffixes, reader in READERS:
        if lower.endswith(suffixes):
            return kind, reader
    return None


def read_source(
    path: Path, fmt: str, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, log: ReadLog | None = None
) -> Iterator[Row]:
    """The rows of one source, numbered from 0 across its files.

    Args:
        path: an existing file or folder.
        fmt: the source's configured format (``html`` reads only pages and WARC files).
        max_row_bytes: a row (line, list item, page, WARC payload) larger than this is an
            ``oversized`` row, not parsed.
        log: receives the files and records passed over (a folder's unknown files, WARC
            requests...).

    Raises:
        InputError: the path is a file of a kind no reader knows, or ``fmt`` is html and the
            file is not a page or a crawl (raised at the call, before any row).
    """
    log = log if log is not None else ReadLog()
    if path.is_dir():
        return _rows(_folder_files(path, fmt, log), max_row_bytes, log)
    found = reader_for(path.name)
    if found is None:
        raise InputError(f"{path}: unsupported file type; use one of {KNOWN}, or a folder of them")
    if fmt == "html" and found[0] not in PAGE_KINDS:
        raise InputError(
            f"{path}: format html needs a folder of .html/.htm pages, one such page, "
            "or a WARC/ARC crawl"
        )
    return _rows([(path, path.name, found[1])], max_row_bytes, log)


def _folder_files(folder: Path, fmt: str, log: ReadLog) -> list[tuple[Path, str, Reader]]:
    """The files of a folder a reader takes, in path order; the others go to ``log``."""
    files = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = f.relative_to(folder).as_posix()
        found = reader_for(f.name)
        if any(part.startswith(".") for part in f.relative_to(folder).parts):
            log.skipped_files.append({"file": name, "reason": "hidden file"})
        elif found is None:
            suffix = "".join(f.suffixes[-2:]) or "no suffix"
            log.skipped_files.append(
                {"file": name, "reason": f"unknown file type ({suffix}); known: {KNOWN}"}
            )
        elif fmt == "html" and found[0] not in PAGE_KINDS:
            log.skipped_files.append(
                {"file": name, "reason": "the source's format is html: pages and crawls only"}
            )
        else:
            files.append((f, name, found[1]))
    return files


def _rows(files: list[tuple[Path, str, Reader]], max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    index = 0
    for path, name, reader in files:
        try:
            for row in reader(path, max_row_bytes, log):
                row.index, row.file = index, name
                if row.html is not None and not row.raw:
                    row.raw = name
                yield row
                index += 1
        except Exception as e:  # noqa: BLE001 - any failure of one file is reported, not raised
            yield Row(index, error="unreadable_file", detail=error_text(e), raw=name, file=name)
