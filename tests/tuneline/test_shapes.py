"""tuneline.shapes: every shape's ``parse`` and ``dump`` are inverses where the shape can hold
the record, and a row that fits no shape says why."""

from __future__ import annotations

import re

import pytest

from tuneline.records import Record
from tuneline.shapes import SHAPES, ParseError, alpaca, detect_format, parse_row, sharegpt
from tuneline.shapes import messages as messages_shape


def record(fmt: str, row: dict) -> Record:
    _, fields = parse_row(row, fmt)
    fields.pop("meta", None)
    return Record(id="r", **fields)


ROWS = {
    "alpaca": {
        "instruction": "Name a layer.",
        "input": "",
        "output": "A fleece.",
        "system": "Be brief.",
    },
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Which boots?"},
            {"from": "gpt", "value": "The Ridgeback."},
            {"from": "observation", "value": '{"stock": 3}'},
        ]
    },
    "messages": {
        "messages": [
            {"role": "user", "content": "Which boots?"},
            {"role": "assistant", "content": "The Ridgeback."},
        ]
    },
    "preference": {
        "prompt": [{"role": "user", "content": "Which tent?"}],
        "chosen": "The Basecamp 2.",
        "rejected": "Any tent.",
    },
    "text": {"text": "A plain document about tents."},
}


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_dump_inverts_parse(fmt):
    rec = record(fmt, ROWS[fmt])
    dumped = SHAPES[fmt].dump(rec)
    assert dumped == ROWS[fmt]
    assert record(fmt, dumped) == rec


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_auto_detects_every_shape_from_its_keys(fmt):
    assert detect_format(ROWS[fmt], "text") == fmt


def test_sharegpt_and_messages_read_either_turn_form():
    # one turn reader for both: a source's format names the shape, the row's list decides
    from_sharegpt = record("sharegpt", ROWS["messages"])
    from_messages = record("messages", {"messages": ROWS["sharegpt"]["conversations"]})
    assert from_sharegpt == record("messages", ROWS["messages"])
    assert messages_shape.dump(from_messages)["messages"][3] == {
        "role": "tool",
        "content": '{"stock": 3}',
    }


def test_alpaca_dump_is_none_where_the_shape_cannot_hold_the_chat():
    multi = record(
        "messages",
        {"messages": [*ROWS["messages"]["messages"], {"role": "user", "content": "And socks?"}]},
    )
    assert alpaca.dump(multi) is None
    assert alpaca.dump(record("text", ROWS["text"])) is None
    # instruction and input were joined into one user turn; the dump cannot split them back
    joined = record(
        "alpaca", {"instruction": "Summarize.", "input": "Great boots.", "output": "Good."}
    )
    assert alpaca.dump(joined) == {
        "instruction": "Summarize.\n\nGreat boots.",
        "input": "",
        "output": "Good.",
    }


def test_sharegpt_dump_uses_sharegpt_speaker_names():
    assert [t["from"] for t in sharegpt.dump(record("sharegpt", ROWS["sharegpt"]))["conversations"]] == [
        "system", "human", "gpt", "observation",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "value, fmt, error",
    [
        (["not", "an", "object"], "auto", "must be a JSON object, got list"),
        ({"title": "x"}, "auto", r"cannot tell the shape from keys \['title'\]"),
        ({"instruction": "Rate it", "output": 3}, "alpaca", "output must be a string, got int"),
        ({"conversations": []}, "sharegpt", "conversations must be a non-empty list of turns"),
        (
            {"messages": [{"role": "narrator", "content": "x"}]},
            "messages",
            "unknown speaker 'narrator'",
        ),
        ({"chosen": "a", "rejected": "b"}, "preference", "transcript must start with"),
        (
            {"chosen": ["x"], "rejected": "b", "prompt": "p"},
            "preference",
            r"chosen\[0\] must be an object",
        ),
        ({"body": 1}, "text", "text must be a string, got NoneType"),
        ({"text": "x"}, "html", "format 'html' is for folders of HTML pages"),
    ],
)
def test_rows_that_do_not_fit_raise_parse_error_naming_the_field(value, fmt, error):
    with pytest.raises(ParseError, match=error):
        parse_row(value, fmt)


def test_text_shape_reads_the_configured_field():
    assert parse_row({"body": "A document."}, "auto", text_field="body") == (
        "text",
        {"kind": "text", "text": "A document."},
    )


# --------------------------------------------------------- wrong types are ParseErrors


@pytest.mark.parametrize(
    "fmt, row, message",
    [
        (
            "messages",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "content part text must be a string, got int",
        ),
        ("messages", {"messages": [{"role": "user", "content": [7]}]}, "parts must be objects"),
        ("sharegpt", {"conversations": [{"from": 3, "value": "x"}]}, "unknown speaker 3"),
        ("sharegpt", {"conversations": [{"from": None, "value": "x"}]}, "unknown speaker None"),
        ("alpaca", {"instruction": "Hi", "output": "Yo", "history": 7}, "history must be a list"),
        (
            "alpaca",
            {"instruction": "Hi", "output": "Yo", "history": "ab"},
            "history must be a list",
        ),
        (
            "alpaca",
            {"instruction": "Hi", "output": "Yo", "history": [[1, "a"]]},
            "history question",
        ),
        (
            "alpaca",
            {"instruction": "Hi", "output": "Yo", "system": ["x"]},
            "system must be a string",
        ),
        ("preference", {"prompt": {"a": 1}, "chosen": "a", "rejected": "b"}, "prompt must be"),
        ("preference", {"prompt": "p", "chosen": 5, "rejected": "b"}, "chosen must be"),
        ("text", {"text": None}, "text must be a string"),
    ],
)
def test_a_wrong_type_anywhere_is_a_parse_error_not_a_crash(fmt, row, message):
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_row(row, fmt)


def test_tools_and_tool_calls_are_kept_as_plain_json_of_bounded_depth():
    deep: list = []
    for _ in range(5000):  # deeper than Python's recursion limit: still a ParseError
        deep = [deep]
    turns = [{"role": "user", "content": "hi"}]
    with pytest.raises(ParseError, match="tools is nested more than 64 levels deep"):
        parse_row({"messages": turns, "tools": deep}, "messages")
    call = [{"role": "assistant", "content": None, "tool_calls": deep}]
    with pytest.raises(ParseError, match="tool_calls is nested more than"):
        parse_row({"messages": turns + call}, "messages")
    # values JSON cannot hold (bytes, dates, from Parquet) are kept as their text
    _, fields = parse_row({"messages": turns, "tools": [{"blob": b"\x00", "n": 1}]}, "messages")
    assert fields["meta"]["tools"] == [{"blob": "b'\\x00'", "n": 1}]
