"""OpenAI messages: ``{messages: [{role, content}], [tools]}``; content may be a list of parts
(its text parts are kept) and an assistant turn may hold ``tool_calls`` instead."""

from __future__ import annotations

from typing import Any

from tuneline.records import Record
from tuneline.shapes.turns import dump_turns, parse_chat


def parse(row: dict[str, Any]) -> dict[str, Any]:
    """{messages[, system, tools]} -> a chat (tool specs kept in ``meta.tools``).

    Raises:
        ParseError: the turns are missing, malformed or name an unknown role.
    """
    return parse_chat(row)


def dump(record: Record) -> dict[str, Any]:
    """The record's turns as ``{messages: [{role, content}]}``."""
    return {"messages": dump_turns(record.messages)}
