"""Ingest's filters: one small ``RecordFilter`` per rejection reason, run as a chain.

The chain runs cheap rules before expensive ones and stops at the first that rejects:
``broken_utf8``, ``empty``, ``too_short``, ``too_long``, ``refusal`` (string checks), then
``language`` (fastText) and ``quality`` (Gopher rules, text records only). Each filter's
``name`` is the reason written to ``rejected/`` and counted in the report, so a reason found in
a report leads straight to its module here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tasks.ingest.config import IngestConfig
from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.broken_utf8 import BrokenUtf8Filter
from tasks.ingest.filters.empty import EmptyFilter
from tasks.ingest.filters.language import LanguageIdFilter
from tasks.ingest.filters.length import TooLongFilter, TooShortFilter
from tasks.ingest.filters.quality import GopherFilter
from tasks.ingest.filters.refusal import RefusalFilter
from tuneline.records import Record

__all__ = [
    "BrokenUtf8Filter",
    "EmptyFilter",
    "FilterChain",
    "GopherFilter",
    "LanguageIdFilter",
    "RecordFilter",
    "RefusalFilter",
    "Rejection",
    "TooLongFilter",
    "TooShortFilter",
]


class FilterChain:
    """Filters applied in order; the first rejection wins.

    Args:
        filters: the rules, cheapest first.
    """

    def __init__(self, filters: Iterable[RecordFilter]):
        self.filters = list(filters)

    @classmethod
    def from_config(cls, cfg: IngestConfig) -> FilterChain:
        """The chain the ingest section asks for. Language ID always runs, to label records,
        even when ``cfg.languages`` is empty and it keeps everything."""
        filters: list[RecordFilter] = [
            BrokenUtf8Filter(),
            EmptyFilter(),
            TooShortFilter(cfg.min_chars),
            TooLongFilter(cfg.max_chars),
        ]
        if cfg.drop_refusals:
            filters.append(RefusalFilter(cfg.refusal_phrases))
        filters.append(LanguageIdFilter(cfg.languages, cfg.language_threshold))
        if cfg.quality_filter:
            filters.append(GopherFilter())
        return cls(filters)

    def check(self, record: Record) -> Rejection | None:
        """The first rejection of ``record``, or None to keep it. Records that reach language ID
        get ``meta.lang`` and ``meta.lang_score``."""
        for f in self.filters:
            verdict = f.check(record)
            if verdict is not None:
                return verdict
        return None

    @property
    def languages_seen(self) -> Counter[str]:
        """Records per detected language, over every record that reached language ID."""
        return next((f.seen for f in self.filters if isinstance(f, LanguageIdFilter)), Counter())

    def __repr__(self) -> str:
        return f"FilterChain({', '.join(f.name for f in self.filters)})"
