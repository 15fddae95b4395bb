"""``placeholder``: replies holding template text instead of content."""

from __future__ import annotations

import re

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import snippet, trained_replies, without_code
from tuneline.records import Record

PLACEHOLDER_RE = re.compile(
    r"lorem ipsum|dolor sit amet"
    r"|[\[<{]\s*(?:insert|add|enter|fill in|placeholder)\b[^\]>}\n]{0,60}[\]>}]"
    r"|(?-i:\b(?:TODO|TBD|FIXME|XXX)\b)"
    r"|\bplaceholder text\b",
    re.I,
)


ASKED_FOR_RE = re.compile(r"template|placeholder|lorem ipsum|fill[- ]in|blanks?\b", re.I)


class PlaceholderFilter(RecordFilter):
    """Drops a chat or pair whose trained replies (outside code blocks, where ``TODO`` comments
    are code) contain placeholder text: "lorem ipsum", "[insert ...]", "<add ...>", or a bare
    upper-case TODO / TBD / FIXME / XXX; the detail shows the text around it. A reply to a prompt
    that asks for a template, placeholders or blanks is kept."""

    name = "placeholder"

    def check(self, record: Record) -> Rejection | None:
        for prompt, reply in trained_replies(record):
            if ASKED_FOR_RE.search(prompt):
                continue  # "write a template / a form to fill in": placeholders are the answer
            prose = without_code(reply)
            m = PLACEHOLDER_RE.search(prose)
            if m:
                return self.reject(found=m.group(0), sample=snippet(prose, m.start(), 80))
        return None
