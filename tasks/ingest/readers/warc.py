"""WARC and ARC web crawls (plain or gzip), read with warcio: the HTML of every ``response``
record is one row, which goes through the same trafilatura path as an HTML page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.readers.row import RAW_KEEP_CHARS, ReadLog, Row, preview

SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
HTML_TYPES = ("text/html", "application/xhtml+xml")


def read_warc(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """One row per HTML ``response`` record, its payload in ``html`` and its URI in ``url``.

    Other records (warcinfo, request, metadata, revisit...) and non-HTML responses are not
    rows: they are counted in ``log.skipped`` (``warc_<type>``, ``warc_non_html_response``).
    A payload over ``max_row_bytes`` becomes an ``oversized`` row. ARC records are read as
    their WARC equivalents.

    Raises:
        warcio.exceptions.ArchiveLoadFailed / OSError / EOFError: not a WARC/ARC file, or
            truncated (the caller reports it as an unreadable file, after the rows before it).
    """
    from warcio.archiveiterator import ArchiveIterator  # only for runs that read crawls

    with open(path, "rb") as fh:
        for position, rec in enumerate(ArchiveIterator(fh, arc2warc=True)):
            if rec.rec_type != "response":
                log.skipped[f"warc_{rec.rec_type}"] += 1
                continue
            ctype = (rec.http_headers.get_header("Content-Type") or "") if rec.http_headers else ""
            if ctype.split(";")[0].strip().lower() not in HTML_TYPES:
                log.skipped["warc_non_html_response"] += 1
                continue
            uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
            payload = rec.content_stream().read(max_row_bytes + 1)
            if len(payload) > max_row_bytes:
                yield Row(
                    position,
                    error="oversized",
                    detail=f"response over ingest.max_row_bytes ({max_row_bytes})",
                    raw=preview(payload[:RAW_KEEP_CHARS]),
                    row=position,
                    size=rec.length,
                    url=uri,
                )
                continue
            yield Row(position, html=payload, raw=uri, row=position, size=len(payload), url=uri)
