"""HTML sources: a folder of pages (or one page), and their main text through trafilatura."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.ingest.readers.row import Row

SUFFIXES = (".html", ".htm")


def read_pages(path: Path) -> Iterator[Row]:
    """One row per .html/.htm page under a folder (sorted, so indexes are stable), or one page.

    A row carries the page's bytes in ``html`` and its path under the folder in ``raw``.
    """
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    )
    for i, f in enumerate(files):
        name = f.name if path.is_file() else str(f.relative_to(path))
        yield Row(i, html=f.read_bytes(), raw=name)


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
