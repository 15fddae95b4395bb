"""One source, end to end: check its path, then read -> parse -> filter each of its rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tasks.ingest.config import IngestConfig
from tasks.ingest.filters import FilterChain
from tasks.ingest.readers import RAW_KEEP_CHARS, ReadLog, Row, extract_page, read_source
from tasks.ingest.readers.row import error_text
from tuneline.artifacts import ArtifactWriter, hash_bytes_of
from tuneline.errors import InputError
from tuneline.progress import track
from tuneline.records import Record, record_id
from tuneline.shapes import parse_row


class RankShare:
    """Which rows one rank of a parallel ingest takes: batches of ``size`` rows, numbered
    across all sources, go round the ``world`` ranks in turn (every rank reads every row, which
    is cheap; parsing and filtering, the cost, happen once).

    Args:
        rank: this rank.
        world: how many ranks.
        size: rows per batch.
    """

    def __init__(self, rank: int, world: int, size: int):
        self.rank, self.world, self.size = rank, world, size
        self.seen = 0
        self.batch = -1

    def takes_next(self) -> bool:
        """Counts the next row; True when it is this rank's (``batch`` then names its batch)."""
        n, self.seen = self.seen, self.seen + 1
        self.batch = n // self.size
        return self.batch % self.world == self.rank


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


def _first_example(filters: FilterChain, reason: str, source: str, row: Row, error: str | None) -> None:
    """The report's example of a reason that rejects rows before any record exists: where the
    row was and why (the filters keep the first record of their own reasons the same way)."""
    if reason not in filters.examples:
        where = ":".join(str(x) for x in (row.file or source, row.line or row.row or row.index) if x is not None)
        filters.examples[reason] = {"snippet": f"{where}: {(error or '')[:160]}"}


def _rejected_row(source: str, row: Row) -> dict[str, Any]:
    """Where a row that made no record was, and a bounded preview of it (plus its size)."""
    out: dict[str, Any] = {"source": source, "index": row.index}
    if row.file:
        out["file"] = row.file
    for name in ("line", "row", "url"):
        if getattr(row, name) is not None:
            out[name] = getattr(row, name)
    out["raw"] = row.raw[:RAW_KEEP_CHARS]
    size = row.size if row.size is not None else len(row.raw)
    if row.size is not None or size > RAW_KEEP_CHARS:
        out["size"] = size
    return out


def _record(row: Row, src, content_key: str, folder: bool) -> Record:
    """The record of one readable row (``meta.file`` names its file for pages and for every
    row of a folder source).

    Raises:
        Exception: anything a shape's parse or the record's validation raises for a row that
            does not fit (the caller rejects the row as ``unparseable`` with the error text).
    """
    meta: dict[str, Any] = {"source": src.path, "index": row.index}
    if row.html is not None:
        fmt, fields = "html", extract_page(row.html)
        meta["file"] = row.file or row.raw
    else:
        if folder:
            meta["file"] = row.file
        fmt, fields = parse_row(row.value, src.format, src.text_field)
        upstream = row.value.get("id")
        if isinstance(upstream, str | int) and not isinstance(upstream, bool):
            meta["source_id"] = upstream  # the upstream id, for provenance
    meta.update(format=fmt, **fields.pop("meta", {}))
    if row.url:
        meta["url"] = row.url
    return Record(id=record_id(content_key, row.index), meta=meta, **fields)


def ingest_source(
    i: int, cfg: IngestConfig, filters: FilterChain, out: ArtifactWriter, share: RankShare | None = None
) -> dict[str, Any]:
    """Reads, normalises and filters one source into ``out``; returns its line of the report.

    A record's id hashes the source's bytes and the row's index in it, so it is stable across
    runs and paths. A row that does not read or parse is rejected (``broken_utf8``,
    ``unparseable``, ``oversized``) with its file, line or row number and a bounded preview; a
    file that cannot be read at all is rejected as one ``unreadable_file`` row and named in the
    report's ``error`` (or, with ``fail_on_unreadable``, stops the run); a record a filter drops
    is rejected with the record.

    Args:
        i: position of the source in ``cfg.sources`` (named in errors).
        cfg: the ingest section.
        filters: the run's filter chain (it also counts the languages seen).
        out: the artifact being written (or a rank's part, ``tasks/ingest/ranks.py``).
        share: which rows this rank takes (all when None).

    Raises:
        InputError: ``cfg.fail_on_unreadable`` is set and a file of the source cannot be read.
    """
    src = cfg.sources[i]
    path = source_path(cfg, i)
    content_key = hash_bytes_of(path)
    folder = path.is_dir()
    stats: Counter = Counter()
    log = ReadLog()
    unreadable: list[dict[str, str]] = []
    rows = read_source(path, src.format, cfg.max_row_bytes, log)
    label = f"ingest {src.path}" if share is None else f"ingest {src.path} (rank {share.rank + 1}/{share.world})"
    for row in track(rows, label):
        if share is not None and not share.takes_next():
            continue
        stats["read"] += 1
        if row.error == "unreadable_file":
            name = f"{src.path}/{row.file}" if folder else src.path
            if cfg.fail_on_unreadable:
                raise InputError(
                    f"ingest.sources[{i}].path: {name} cannot be read ({row.detail}); fix or "
                    "remove the file, or set ingest.fail_on_unreadable: false to skip it"
                )
            unreadable.append({"file": row.file, "error": row.detail})
        # The example before the rejection, as the filters do: a rank's part writer reads the
        # examples when it writes a row, so one noted after the last row would go unplaced.
        if row.error:
            _first_example(filters, row.error, src.path, row, row.detail)
            out.reject(_rejected_row(src.path, row), row.error, error=row.detail)
            stats["rejected"] += 1
            continue
        try:
            record = _record(row, src, content_key, folder)
        except Exception as e:  # noqa: BLE001 - any row that does not fit is one rejection
            # A shape's ParseError (or pydantic's ValidationError) says what does not fit in
            # its own words; anything else (TypeError, RecursionError...) names its type too.
            plain = isinstance(e, ValueError) and str(e)
            error = str(e).splitlines()[0][:500] if plain else error_text(e)
            _first_example(filters, "unparseable", src.path, row, error)
            out.reject(_rejected_row(src.path, row), "unparseable", error=error)
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
    line = {
        "path": src.path,
        "format": src.format,
        "read": stats["read"],
        "kept": stats["kept"],
        "rejected": stats["rejected"],
        "kinds": {k[5:]: v for k, v in sorted(stats.items()) if k.startswith("kind_")},
    }
    if unreadable:
        line["error"] = "; ".join(f"{u['file']}: {u['error']}" for u in unreadable)[:2000]
        line["unreadable_files"] = unreadable
    if log.skipped_files:
        line["skipped_files"] = log.skipped_files
    if log.skipped:
        line["skipped"] = dict(sorted(log.skipped.items()))
    return line
