"""ShareGPT: ``{conversations: [{from, value}], [system], [tools]}``, incl. LLaMA-Factory's tool
turns (``function_call``, ``observation``)."""

from __future__ import annotations

from typing import Any

from tuneline.records import Record
from tuneline.shapes.turns import parse_chat

# Record roles onto ShareGPT speaker names; "observation" is LLaMA-Factory's name for a tool result.
SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}


def parse(row: dict[str, Any]) -> dict[str, Any]:
    """{conversations[, system, tools]} -> a chat (tool specs kept in ``meta.tools``).

    Raises:
        ParseError: the turns are missing, malformed or name an unknown speaker.
    """
    return parse_chat(row)


def dump(record: Record) -> dict[str, Any]:
    """The record's turns as ``{conversations: [{from, value}]}``."""
    return {
        "conversations": [
            {"from": SHAREGPT_FROM[m.role], "value": m.content} for m in record.messages or []
        ]
    }
