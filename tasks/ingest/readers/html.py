"""HTML pages (one page is one row), and their main text through trafilatura (which WARC
responses go through too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.ingest.readers.row import RAW_KEEP_CHARS, ReadLog, Row, preview

SUFFIXES = (".html", ".htm", ".xhtml")


def read_page(path: Path, max_row_bytes: int, log: ReadLog) -> Iterator[Row]:
    """One page as one row: its bytes in ``html`` (``oversized`` when over ``max_row_bytes``,
    without reading it)."""
    size = path.stat().st_size
    if size > max_row_bytes:
        with open(path, "rb") as fh:
            head = fh.read(RAW_KEEP_CHARS)
        yield Row(
            0,
            error="oversized",
            detail=f"page of {size} bytes is over ingest.max_row_bytes ({max_row_bytes})",
            raw=preview(head),
            size=size,
        )
        return
    yield Row(0, html=path.read_bytes(), size=size)


def extract_page(html: bytes) -> dict[str, Any]:
    """Main text of a page with trafilatura, favouring precision (boilerplate out over recall).

    Returns the record fields of a text record, with the page's url and title in ``meta``.
    """
    import trafilatura  # heavy (lxml, justext, ...): only for runs that read pages

    doc = (
        trafilatura.bare_extraction(
            html,
            favor_precision=True,
            include_comments=False,
            include_tables=True,
            with_metadata=True,
        )
        or {}
    )
    meta = {k: doc[k] for k in ("url", "title") if doc.get(k)}
    return {"kind": "text", "text": doc.get("text") or "", "meta": meta}
