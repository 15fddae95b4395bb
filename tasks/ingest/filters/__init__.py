"""Ingest's filters: one small ``RecordFilter`` per rejection reason, run as a chain.

The chain runs cheap rules before expensive ones and stops at the first that rejects:
``broken_utf8``, ``empty``, ``too_short``, ``too_long``, ``refusal`` (string checks), the reply
rules for chats and pairs (``truncated_reply``, ``repeated_prompt``, ``placeholder``,
``broken_markup``, ``repetition``), then ``language`` (fastText on the prose part) and
``quality`` (Gopher rules, text records only). Each filter's ``name`` is the reason written to
``rejected/`` and counted in the report, so a reason found in a report leads straight to its
module here. The chain keeps the first rejected record of each reason as an example
(``examples``), for the report and the stage summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from tasks.ingest.config import IngestConfig
from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.broken_markup import BrokenMarkupFilter
from tasks.ingest.filters.broken_utf8 import BrokenUtf8Filter
from tasks.ingest.filters.empty import EmptyFilter
from tasks.ingest.filters.language import LanguageIdFilter
from tasks.ingest.filters.length import TooLongFilter, TooShortFilter
from tasks.ingest.filters.placeholder import PlaceholderFilter
from tasks.ingest.filters.quality import GopherFilter
from tasks.ingest.filters.refusal import RefusalFilter
from tasks.ingest.filters.repeated_prompt import RepeatedPromptFilter
from tasks.ingest.filters.repetition import RunawayRepetitionFilter
from tasks.ingest.filters.text import snippet
from tasks.ingest.filters.truncated import TruncatedReplyFilter
from tuneline.records import Record

__all__ = [
    "BrokenMarkupFilter",
    "BrokenUtf8Filter",
    "EmptyFilter",
    "FilterChain",
    "GopherFilter",
    "LanguageIdFilter",
    "PlaceholderFilter",
    "RecordFilter",
    "RefusalFilter",
    "Rejection",
    "RepeatedPromptFilter",
    "RunawayRepetitionFilter",
    "TooLongFilter",
    "TooShortFilter",
    "TruncatedReplyFilter",
]

EXAMPLE_CHARS = 160
"""How much of a rejected record the report's example per reason shows."""


def example(record: Record, verdict: Rejection) -> dict[str, Any]:
    """A short view of a rejected record: its id, where it came from, the start of the part the
    rule looked at (the last reply of a chat or pair, else the text) and the rule's details."""
    replies = record.replies() if record.kind != "text" else []
    shown = replies[-1] if replies and replies[-1].strip() else record.joined_text()
    out: dict[str, Any] = {
        "id": record.id,
        "source": record.meta.get("source"),
        "snippet": snippet(shown, 0, EXAMPLE_CHARS),
    }
    detail = {k: v for k, v in verdict.detail.items() if len(repr(v)) <= 200}
    return {**out, **detail}


class FilterChain:
    """Filters applied in order; the first rejection wins.

    Args:
        filters: the rules, cheapest first.
    """

    def __init__(self, filters: Iterable[RecordFilter]):
        self.filters = list(filters)
        self.examples: dict[str, dict[str, Any]] = {}

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
        if cfg.reply_filters:
            filters += [
                TruncatedReplyFilter(),
                RepeatedPromptFilter(),
                PlaceholderFilter(),
                BrokenMarkupFilter(),
                RunawayRepetitionFilter(),
            ]
        declared = {s.path: s.language for s in cfg.sources}
        filters.append(LanguageIdFilter(cfg.languages, cfg.language_threshold, declared))
        if cfg.quality_filter:
            filters.append(GopherFilter(min_doc_words=cfg.quality_min_words))
        return cls(filters)

    def check(self, record: Record) -> Rejection | None:
        """The first rejection of ``record``, or None to keep it. Records that reach language ID
        get ``meta.lang`` and ``meta.lang_score``."""
        for f in self.filters:
            verdict = f.check(record)
            if verdict is not None:
                if verdict.reason not in self.examples:
                    self.examples[verdict.reason] = example(record, verdict)
                return verdict
        return None

    @property
    def languages_seen(self) -> Counter[str]:
        """Records per detected language, over every record that reached language ID."""
        return next((f.seen for f in self.filters if isinstance(f, LanguageIdFilter)), Counter())

    @property
    def language_unknown_kept(self) -> int:
        """Records whose language could not be told, kept because their source declares a
        wanted language."""
        return sum(f.unknown_kept for f in self.filters if isinstance(f, LanguageIdFilter))

    def __repr__(self) -> str:
        return f"FilterChain({', '.join(f.name for f in self.filters)})"
