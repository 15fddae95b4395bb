"""One source, end to end: check its path, then read -> parse -> filter each of its rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tasks.ingest.config import IngestConfig
from tasks.ingest.filters import FilterChain
from tasks.ingest.readers import RAW_KEEP_CHARS, Row, extract_page, read_source
from tuneline.artifacts import ArtifactWriter, hash_bytes_of
from tuneline.errors import InputError
from tuneline.progress import track
from tuneline.records import Record, record_id
from tuneline.shapes import parse_row


def source_path(cfg: IngestConfig, i: int) -> Path:
    """The i-th source's path.

    Raises:
        InputError: the path does not exist (the message names ``ingest.sources[i].path``).
    """
    path = Path(cfg.sources[i].path).expanduser()
    if not path.exists():
        raise InputError(
            f"ingest.sources[{i}].path: {cfg.sources[i].path!r} does not exist "
            f"(resolved to {path.resolve()}); fix the path in the config or create the file"
        )
    return path


def _rejected_row(source: str, row: Row) -> dict[str, Any]:
    return {"source": source, "index": row.index, "raw": row.raw[:RAW_KEEP_CHARS]}


def ingest_source(
    i: int, cfg: IngestConfig, filters: FilterChain, out: ArtifactWriter
) -> dict[str, Any]:
    """Reads, normalises and filters one source into ``out``; returns its line of the report.

    A record's id hashes the source's bytes and the row's index in it, so it is stable across
    runs and paths. A row that does not read or parse is rejected (``broken_utf8``,
    ``unparseable``) with its raw text; a record a filter drops is rejected with the record.

    Args:
        i: position of the source in ``cfg.sources`` (named in errors).
        cfg: the ingest section.
        filters: the run's filter chain (it also counts the languages seen).
        out: the artifact being written.
    """
    src = cfg.sources[i]
    path = source_path(cfg, i)
    content_key = hash_bytes_of(path)
    stats = Counter()
    for row in track(read_source(path, src.format), f"ingest {src.path}"):
        stats["read"] += 1
        if row.error:
            out.reject(_rejected_row(src.path, row), row.error, error=row.detail)
            stats["rejected"] += 1
            continue
        meta: dict[str, Any] = {"source": src.path, "index": row.index}
        try:
            if row.html is not None:
                fmt, fields = "html", extract_page(row.html)
                meta["file"] = row.raw
            else:
                fmt, fields = parse_row(row.value, src.format, src.text_field)
                if isinstance(row.value.get("id"), (str, int)):
                    meta["source_id"] = row.value["id"]  # the upstream id, for provenance
            meta.update(format=fmt, **fields.pop("meta", {}))
            record = Record(id=record_id(content_key, row.index), meta=meta, **fields)
        except ValueError as e:  # a ParseError, or pydantic's ValidationError
            out.reject(
                _rejected_row(src.path, row), "unparseable", error=str(e).splitlines()[0][:500]
            )
            stats["rejected"] += 1
            continue
        verdict = filters.check(record)
        if verdict:
            out.reject(record, verdict.reason, **verdict.detail)
            stats["rejected"] += 1
        else:
            out.write(record)
            stats["kept"] += 1
            stats[f"kind_{record.kind}"] += 1
    return {
        "path": src.path,
        "format": src.format,
        "read": stats["read"],
        "kept": stats["kept"],
        "rejected": stats["rejected"],
        "kinds": {k[5:]: v for k, v in sorted(stats.items()) if k.startswith("kind_")},
    }
