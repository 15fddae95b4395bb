"""``empty``: nothing to train on."""

from __future__ import annotations

from tasks.ingest.filters.base import RecordFilter, Rejection
from tuneline.records import Record


def missing_reply(record: Record) -> bool:
    """A chat without a reply or whose last reply is blank, or a pair with a blank side, has nothing to learn."""
    if record.kind == "chat":
        replies = [m.content for m in record.messages or [] if m.role == "assistant"]
        # a blank last reply is an empty answer too, even after earlier turns with text
        return not replies or not replies[-1].strip()
    if record.kind == "preference":
        return not (record.chosen or "").strip() or not (record.rejected or "").strip()
    return False


class EmptyFilter(RecordFilter):
    """Drops a record whose strings are all blank, or that has no reply to learn from."""

    name = "empty"

    def check(self, record: Record) -> Rejection | None:
        if not record.joined_text().strip():
            return self.reject(what="no text")
        if missing_reply(record):
            return self.reject(what="no reply to train on")
        return None
