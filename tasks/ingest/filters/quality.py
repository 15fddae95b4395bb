"""``quality``: text documents that fail Gopher's quality or repetition rules (via datatrove)."""

from __future__ import annotations

from tasks.ingest.filters.base import RecordFilter, Rejection
from tuneline.records import Record


class GopherFilter(RecordFilter):
    """Drops a text record that datatrove's ``GopherQualityFilter`` (word counts and lengths,
    symbols, stop words) or ``GopherRepetitionFilter`` (repeated lines, paragraphs, n-grams)
    rejects; the detail names the failed rule (e.g. ``gopher_short_doc``). Chats and pairs pass:
    the rules are written for web documents, not short replies.
    """

    name = "quality"

    def __init__(self) -> None:
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

        self.rules = [GopherQualityFilter(), GopherRepetitionFilter()]

    def check(self, record: Record) -> Rejection | None:
        if record.kind != "text":
            return None
        from datatrove.data import Document

        doc = Document(text=record.joined_text(), id=record.id)
        for rule in self.rules:
            result = rule.filter(doc)
            if result is not True:
                return self.reject(rule=result[1] if isinstance(result, tuple) else rule.name)
        return None
