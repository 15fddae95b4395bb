"""The one record schema that every data stage reads and writes.

A record is one training example. ``kind`` says which fields carry it:

- ``text``: ``text`` (raw documents, extracted web pages)
- ``chat``: ``messages`` (instruction/response pairs and multi-turn chats)
- ``preference``: ``messages`` (the prompt turns), ``chosen`` and ``rejected`` (the two replies)

``meta`` holds provenance (``source`` file, original index, language score, ...), never data
that a trainer reads. Shards are gzip JSONL, one record per line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    role: Role = Field(description="Who speaks this turn.")
    content: str = Field(description="What is said.")


class Record(BaseModel):
    id: str = Field(description="Stable id: a hash of the source and the record's position in it.")
    kind: Literal["text", "chat", "preference"] = Field(description="Which fields carry the data.")
    text: str | None = Field(default=None, description="The document, for kind=text.")
    messages: list[Message] | None = Field(
        default=None, description="The turns, for kind=chat; the prompt turns for kind=preference."
    )
    chosen: str | None = Field(default=None, description="Preferred reply, for kind=preference.")
    rejected: str | None = Field(default=None, description="Dispreferred reply, for kind=preference.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Provenance; not trained on.")

    @model_validator(mode="after")
    def check_fields_match_kind(self) -> Record:
        if self.kind == "text" and self.text is None:
            raise ValueError("a text record needs `text`")
        if self.kind == "chat" and not self.messages:
            raise ValueError("a chat record needs `messages`")
        if self.kind == "preference" and (
            not self.messages or self.chosen is None or self.rejected is None
        ):
            raise ValueError("a preference record needs `messages` (the prompt), `chosen`, `rejected`")
        return self

    # -- the string fields, for stages (pii, dedup, filters) that treat every string alike --

    def strings(self) -> list[str]:
        """Every trainable string of the record, in a fixed order."""
        out: list[str] = []
        if self.text is not None:
            out.append(self.text)
        for m in self.messages or []:
            out.append(m.content)
        if self.chosen is not None:
            out.append(self.chosen)
        if self.rejected is not None:
            out.append(self.rejected)
        return out

    def map_strings(self, fn: Callable[[str], str]) -> Record:
        """A copy with ``fn`` applied to every trainable string."""
        data = self.model_copy(deep=True)
        if data.text is not None:
            data.text = fn(data.text)
        for m in data.messages or []:
            m.content = fn(m.content)
        if data.chosen is not None:
            data.chosen = fn(data.chosen)
        if data.rejected is not None:
            data.rejected = fn(data.rejected)
        return data

    def joined_text(self) -> str:
        """All strings joined: what dedup and language ID look at."""
        return "\n".join(self.strings())

    def replies(self) -> list[str]:
        """The assistant-side strings: what refusal filters look at."""
        if self.kind == "text":
            return [self.text or ""]
        out = [m.content for m in self.messages or [] if m.role == "assistant"]
        if self.kind == "preference":
            out += [self.chosen or ""]
        return out


def record_id(*parts: Any) -> str:
    """A short stable id from the parts (source hash, position, ...)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return h[:16]


def dump_jsonl_gz(rows: Iterable[dict[str, Any]], fh: io.BufferedIOBase) -> int:
    """Writes rows as gzip JSONL to an open binary file; returns the count."""
    n = 0
    # mtime=0 keeps shards byte-identical across runs of the same data.
    with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
    return n


def load_jsonl_gz(fh: io.BufferedIOBase) -> Iterator[dict[str, Any]]:
    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        for line in gz:
            if line.strip():
                yield json.loads(line)
