"""The pieces chat-like shapes share: turn lists, speaker names, and the checks that raise
``ParseError`` when a row does not fit."""

from __future__ import annotations

import json
from typing import Any

from tuneline.records import Message


class ParseError(ValueError):
    """A row that does not fit the expected shape (ingest rejects it as ``unparseable``)."""


# ShareGPT speakers, LLaMA-Factory tool turns and OpenAI roles, onto the four record roles.
# A function_call turn is the assistant asking for a tool; an observation is the tool's answer.
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}


def require_text(value: Any, what: str) -> str:
    """``value`` if it is a string.

    Args:
        value: a field of the row.
        what: the field's name, for the error.

    Raises:
        ParseError: ``value`` is not a string.
    """
    if not isinstance(value, str):
        raise ParseError(f"{what} must be a string, got {type(value).__name__}")
    return value


MAX_JSON_DEPTH = 64  # deepest tool spec / tool call a record keeps (real ones nest < 10)


def plain_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON (what a record's meta may hold): at most ``MAX_JSON_DEPTH``
    levels deep, and anything JSON cannot hold (bytes, dates from Parquet) as its string.

    Raises:
        ParseError: nested deeper than ``MAX_JSON_DEPTH``.
    """
    stack = [(value, 1)]
    while stack:  # iterative: a value nested too deeply for recursion must still be refused
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError) as e:
        raise ParseError(f"{what} is not plain JSON ({type(e).__name__}: {e})") from None


def _part_text(part: Any, what: str) -> str:
    """The text of one OpenAI content part ("" for a non-text part such as an image)."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise ParseError(f"{what} content parts must be objects, got {type(part).__name__}")
    if "text" not in part:
        return ""
    return require_text(part["text"], f"{what} content part text")


def turn_content(turn: dict[str, Any], what: str) -> str:
    """A turn's text: ShareGPT `value`, OpenAI `content` (string, text parts, or a tool call).

    Raises:
        ParseError: the content is not a string, a list of parts with string text, or a tool
            call.
    """
    if isinstance(turn.get("value"), list):
        # ShareGPT's value is one string. A list there is not OpenAI's content parts: joining
        # it would glue separate strings into a turn nobody wrote ("a", "b" -> "ab").
        raise ParseError(
            f"{what}.value must be a string, got a list of {len(turn['value'])}; join the "
            "text yourself, or give OpenAI content parts as content: [{type: text, text: ...}]"
        )
    content = turn.get("value", turn.get("content"))
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(_part_text(p, what) for p in content)
    if content is None and turn.get("tool_calls"):
        content = json.dumps(
            plain_json(turn["tool_calls"], f"{what}.tool_calls"), ensure_ascii=False
        )
    return require_text(content, what)


def parse_turns(turns: Any, what: str) -> list[Message]:
    """ShareGPT ``{from, value}`` or OpenAI ``{role, content}`` turns, as record messages.

    Args:
        turns: the row's list of turns.
        what: the field's name, for errors (``conversations``, ``messages``, ``prompt``, ...).

    Raises:
        ParseError: not a non-empty list of objects, or a speaker outside ``ROLES``.
    """
    if not isinstance(turns, list) or not turns:
        raise ParseError(f"{what} must be a non-empty list of turns")
    out = []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ParseError(f"{what}[{j}] must be an object, got {type(turn).__name__}")
        name = turn.get("from", turn.get("role", ""))
        speaker = name.lower() if isinstance(name, str) else None
        if speaker not in ROLES:
            shown = repr(speaker if speaker is not None else name)[:60]
            raise ParseError(f"{what}[{j}] has unknown speaker {shown}; known: {sorted(ROLES)}")
        out.append(Message(role=ROLES[speaker], content=turn_content(turn, f"{what}[{j}]")))
    return out


def system_turn(row: dict[str, Any]) -> list[Message]:
    """The row's top-level ``system`` prompt as a one-turn list (empty when it has none)."""
    system = row.get("system")
    return [Message(role="system", content=require_text(system, "system"))] if system else []


def parse_chat(row: dict[str, Any]) -> dict[str, Any]:
    """ShareGPT {conversations} or OpenAI {messages} -> a chat (tool specs kept in meta).

    Both shapes go through here: the turn reader takes either turn form, so a row is read by
    the list it holds, whichever of the two formats its source names.
    """
    key = "conversations" if "conversations" in row else "messages"
    messages = system_turn(row) + parse_turns(row.get(key), key)
    meta = {"tools": plain_json(row["tools"], "tools")} if row.get("tools") else {}
    return {"kind": "chat", "messages": messages, "meta": meta}


def dump_turns(messages: list[Message] | None) -> list[dict[str, str]]:
    """Record messages as OpenAI ``{role, content}`` dicts."""
    return [m.model_dump() for m in messages or []]
