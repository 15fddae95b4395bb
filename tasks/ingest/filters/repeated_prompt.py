"""``repeated_prompt``: a reply that only repeats the prompt back."""

from __future__ import annotations

import re

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import snippet, trained_replies
from tuneline.records import Record


def normal(s: str) -> str:
    """Lower-case words and digits only, single-spaced: what two strings say, not their format."""
    return " ".join(re.findall(r"\w+", s.lower()))


class RepeatedPromptFilter(RecordFilter):
    """Drops a chat or pair where a trained reply is its prompt again (same words, ignoring case,
    punctuation and spacing), or the prompt echoed with little added (at most ``max_added`` of
    the reply's characters are new). A reply that quotes its prompt and then answers is kept.

    Args:
        max_added: the largest share of the reply that may be new for it to count as an echo.
    """

    name = "repeated_prompt"

    def __init__(self, max_added: float = 0.2):
        self.max_added = max_added

    def check(self, record: Record) -> Rejection | None:
        for prompt, reply in trained_replies(record):
            p, r = normal(prompt), normal(reply)
            if not p or not r:
                continue
            if r == p or (p in r and (len(r) - len(p)) / len(r) <= self.max_added):
                return self.reject(reply=snippet(reply))
        return None
