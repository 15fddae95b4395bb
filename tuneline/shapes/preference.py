"""Preference pairs: a prompt and two replies, ``chosen`` over ``rejected``.

The prompt comes as ``prompt`` (a string or turns), Alpaca ``instruction``/``input``, or
``conversations``/``messages``; each reply as a string, one turn, or a conversation ending in
it. Anthropic's hh-rlhf gives neither: two full ``\\n\\nHuman: ... \\n\\nAssistant: ...``
transcripts, whose shared turns are the prompt.
"""

from __future__ import annotations

import re
from typing import Any

from tuneline.records import Message, Record
from tuneline.shapes.alpaca import prompt_turns
from tuneline.shapes.turns import (
    ParseError,
    dump_turns,
    parse_turns,
    require_text,
    system_turn,
    turn_content,
)

HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _reply(value: Any, what: str) -> tuple[list[Message], str]:
    """A chosen/rejected reply: a string, one turn, or a conversation ending in the reply.

    Returns the turns before the reply (empty unless it was a conversation) and the reply text.
    """
    if isinstance(value, str):
        return [], value
    if isinstance(value, dict):
        return [], turn_content(value, what)
    turns = parse_turns(value, what)
    return turns[:-1], turns[-1].content


def _hh_turns(transcript: str) -> list[Message]:
    parts = HH_TURN.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise ParseError("transcript must start with '\\n\\nHuman: '")
    return [
        Message(role="user" if who == "Human" else "assistant", content=text.strip())
        for who, text in zip(parts[1::2], parts[2::2], strict=False)
    ]


def parse_hh_transcripts(chosen: str, rejected: str) -> dict[str, Any]:
    """hh-rlhf: two full transcripts; the prompt is their shared turns up to the last human one.

    Raises:
        ParseError: a transcript does not start with a human turn, or the two differ anywhere
            but in their last assistant reply.
    """
    a, b = _hh_turns(chosen), _hh_turns(rejected)
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    while shared and a[shared - 1].role != "user":
        shared -= 1
    if not shared:
        raise ParseError("chosen and rejected transcripts share no human turn")
    rest_a, rest_b = a[shared:], b[shared:]
    if (
        len(rest_a) != 1
        or len(rest_b) != 1
        or rest_a[0].role != "assistant"
        or rest_b[0].role != "assistant"
    ):
        raise ParseError(
            "chosen and rejected transcripts diverge before their last assistant reply"
        )
    return {
        "kind": "preference",
        "messages": a[:shared],
        "chosen": rest_a[0].content,
        "rejected": rest_b[0].content,
    }


def parse(row: dict[str, Any]) -> dict[str, Any]:
    """{prompt|instruction|conversations|messages, chosen, rejected} or hh-rlhf transcripts.

    Raises:
        ParseError: no prompt, or a field of the wrong type.
    """
    chosen, rejected = row.get("chosen"), row.get("rejected")
    has_prompt = any(k in row for k in ("prompt", "instruction", "conversations", "messages"))
    if not has_prompt and isinstance(chosen, str) and isinstance(rejected, str):
        return parse_hh_transcripts(chosen, rejected)
    if "prompt" in row:
        prompt = row["prompt"]
        messages = (
            [Message(role="user", content=require_text(prompt, "prompt"))]
            if not isinstance(prompt, list)
            else parse_turns(prompt, "prompt")
        )
    elif "instruction" in row:
        messages = prompt_turns(row)
    elif has_prompt:
        key = "conversations" if "conversations" in row else "messages"
        messages = parse_turns(row[key], key)
    else:
        messages = []
    before, chosen_text = _reply(chosen, "chosen")
    _, rejected_text = _reply(rejected, "rejected")
    messages = system_turn(row) + (
        messages or before
    )  # a conversation-style pair carries its prompt
    if not messages:
        raise ParseError("no prompt: give prompt, instruction, conversations or messages")
    return {
        "kind": "preference",
        "messages": messages,
        "chosen": chosen_text,
        "rejected": rejected_text,
    }


def dump(record: Record) -> dict[str, Any]:
    """``{prompt: [{role, content}], chosen, rejected}`` (TRL's conversational preference form)."""
    return {
        "prompt": dump_turns(record.messages),
        "chosen": record.chosen,
        "rejected": record.rejected,
    }
