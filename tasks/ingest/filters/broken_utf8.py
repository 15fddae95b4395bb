"""``broken_utf8``: text that was not valid UTF-8, or was decoded with the wrong codec."""

from __future__ import annotations

from tasks.ingest.filters.base import RecordFilter, Rejection
from tuneline.records import Record


class BrokenUtf8Filter(RecordFilter):
    """Drops a record with U+FFFD (bytes that were not UTF-8) or mojibake (UTF-8 read as
    Latin-1/cp1252, per ftfy) in any of its strings; the detail shows the text around it."""

    name = "broken_utf8"

    def __init__(self) -> None:
        from ftfy.badness import BADNESS_RE, is_bad

        self._badness_re, self._is_bad = BADNESS_RE, is_bad

    def is_broken(self, s: str) -> bool:
        return "\ufffd" in s or self._is_bad(s)

    def sample(self, s: str) -> str:
        """Up to 40 characters either side of the first broken spot."""
        at = s.find("\ufffd")
        if at < 0:
            m = self._badness_re.search(s)
            at = m.start() if m else 0
        return s[max(0, at - 40) : at + 40]

    def check(self, record: Record) -> Rejection | None:
        broken = next((s for s in record.strings() if self.is_broken(s)), None)
        return None if broken is None else self.reject(sample=self.sample(broken))
