"""``truncated_reply``: a reply cut off mid-sentence (a generation that hit its token limit)."""

from __future__ import annotations

import re

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import trained_replies
from tuneline.records import Record

# A sentence does not end on these: a comma, an opening bracket, a connective or an article.
_DANGLING_PUNCT = (",", ";", "(", "[", "{", "—", "–")
_DANGLING_WORDS = frozenset(
    "a an the and or but of to with in on for from by as that which who is are was were "
    "because if then than such their its our your my".split()
)
_LAST_WORD = re.compile(r"([A-Za-z]+)\s*$")


class TruncatedReplyFilter(RecordFilter):
    """Drops a chat or pair whose last trained reply stops where no sentence can end: on a comma,
    an opening bracket or a dash, or on an article or connective ("the", "and", "of", ...)
    without closing punctuation. Replies ending in a code fence are left to ``broken_markup``."""

    name = "truncated_reply"

    @staticmethod
    def is_truncated(reply: str) -> bool:
        s = reply.rstrip()
        if not s or s.endswith(("```", "~~~")):
            return False
        if s.endswith(_DANGLING_PUNCT):
            return True
        m = _LAST_WORD.search(s)
        return bool(m) and m.group(1).lower() in _DANGLING_WORDS

    def check(self, record: Record) -> Rejection | None:
        replies = trained_replies(record)
        if not replies:
            return None
        reply = replies[-1][1]
        if self.is_truncated(reply):
            tail = reply.rstrip()
            return self.reject(ending=("…" if len(tail) > 60 else "") + tail[-60:])
        return None
