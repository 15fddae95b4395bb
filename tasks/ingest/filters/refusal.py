"""``refusal``: replies that refuse or disclaim instead of answering."""

from __future__ import annotations

from tasks.ingest.filters.base import RecordFilter, Rejection
from tuneline.records import Record


def fold(s: str) -> str:
    # Typographic apostrophes would hide "I’m sorry, but I cannot" from a plain phrase match.
    return s.lower().replace("\u2019", "'")


class RefusalFilter(RecordFilter):
    """Drops a chat or preference pair whose replies contain one of the refusal phrases
    (case-insensitive). A refusal on the ``rejected`` side of a pair is kept: it is what
    preference training should learn to avoid. Text records have no replies and always pass.

    Args:
        phrases: the phrases that mark a refusal.
    """

    name = "refusal"

    def __init__(self, phrases: list[str]):
        self.phrases = [fold(p) for p in phrases]

    def check(self, record: Record) -> Rejection | None:
        if record.kind == "text":
            return None
        replies = fold("\n".join(record.replies()))
        phrase = next((p for p in self.phrases if p in replies), None)
        return self.reject(phrase=phrase) if phrase else None
