"""``too_short`` and ``too_long``: bounds on a record's length in characters (all its strings).

The lower bound counts a Han or kana character as 4 characters and a Hangul syllable as 3
(``text.length_units``): 「今天天气很好。」 says as much as "The weather is nice today." and must
not fall under a bound chosen for English. The upper bound counts plain characters (memory)."""

from __future__ import annotations

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import length_units
from tuneline.records import Record


class TooShortFilter(RecordFilter):
    """Drops a record shorter than ``min_chars`` (CJK characters weighted, see the module).

    Args:
        min_chars: the fewest (Latin-equivalent) characters a kept record has.
    """

    name = "too_short"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def check(self, record: Record) -> Rejection | None:
        chars = length_units(record.joined_text())
        return (
            self.reject(chars=chars, min_chars=self.min_chars) if chars < self.min_chars else None
        )


class TooLongFilter(RecordFilter):
    """Drops a record longer than ``max_chars``.

    Args:
        max_chars: the most characters a kept record has.
    """

    name = "too_long"

    def __init__(self, max_chars: int):
        self.max_chars = max_chars

    def check(self, record: Record) -> Rejection | None:
        chars = len(record.joined_text())
        return (
            self.reject(chars=chars, max_chars=self.max_chars) if chars > self.max_chars else None
        )
