"""``broken_markup``: replies with an unclosed code fence or chat-template tokens left in."""

from __future__ import annotations

import re

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import trained_replies
from tuneline.records import Record

FENCE_RE = re.compile(r"^[ \t]*(```|~~~)", re.M)
TEMPLATE_RE = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id|assistant|user|system)\|>"
    r"|\[/?INST\]|<</?SYS>>|</s>|<s>(?=\s*\[INST\])"
)


class BrokenMarkupFilter(RecordFilter):
    """Drops a chat or pair when a trained reply opens a code fence (```` ``` ```` or ``~~~``)
    that it never closes (an odd number of fence lines: a model trained on it learns to leave
    code open), or when any of its strings holds chat-template tokens (``<|im_end|>``,
    ``[INST]``, ``</s>``) left over from another model's format."""

    name = "broken_markup"

    def check(self, record: Record) -> Rejection | None:
        for _, reply in trained_replies(record):
            fences = FENCE_RE.findall(reply)
            if len(fences) % 2:
                return self.reject(problem="unclosed code fence", fences=len(fences))
        if record.kind != "text":
            for s in record.strings():
                m = TEMPLATE_RE.search(s)
                if m:
                    return self.reject(problem="chat-template token", token=m.group(0))
        return None
