"""Alpaca: ``{instruction, input, output[, system, history]}``, one exchange per row.

``history`` is LLaMA-Factory's extension: earlier ``[question, answer]`` pairs.
"""

from __future__ import annotations

from typing import Any

from tuneline.records import Message, Record
from tuneline.shapes.turns import ParseError, require_text, system_turn


def prompt_turns(row: dict[str, Any]) -> list[Message]:
    """The turns of an Alpaca row before its output: earlier history, then instruction + input."""
    instruction = require_text(row.get("instruction"), "instruction")
    extra = require_text(row.get("input") or "", "input")
    history = row.get("history") or []
    if not isinstance(history, list):
        raise ParseError(
            f"history must be a list of [question, answer] pairs, got {type(history).__name__}"
        )
    messages = []
    for pair in history:  # LLaMA-Factory: earlier [question, answer] turns
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ParseError("history must be a list of [question, answer] pairs")
        messages += [
            Message(role="user", content=require_text(pair[0], "history question")),
            Message(role="assistant", content=require_text(pair[1], "history answer")),
        ]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return messages + [Message(role="user", content=user)]


def parse(row: dict[str, Any]) -> dict[str, Any]:
    """{instruction, input, output[, system, history]} -> a chat.

    Raises:
        ParseError: a field is not a string, or ``history`` is not a list of pairs.
    """
    reply = Message(role="assistant", content=require_text(row.get("output"), "output"))
    return {"kind": "chat", "messages": system_turn(row) + prompt_turns(row) + [reply]}


def dump(record: Record) -> dict[str, str] | None:
    """An Alpaca row for a single-turn chat ([system,] user, assistant), else None."""
    if record.kind != "chat":
        return None
    msgs = record.messages or []
    system = None
    if msgs and msgs[0].role == "system":
        system, msgs = msgs[0].content, msgs[1:]
    if [m.role for m in msgs] != ["user", "assistant"]:
        return None
    # Ingest already joined instruction and input into one user turn; it cannot be split back.
    row = {"instruction": msgs[0].content, "input": "", "output": msgs[1].content}
    if system is not None:
        row["system"] = system
    return row
