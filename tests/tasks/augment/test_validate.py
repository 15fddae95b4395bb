"""augment.validate: which teacher output becomes a record, and the problem named for the rest."""

from __future__ import annotations

from tasks.augment.validate import output_problem, parse_instructions


def test_parse_instructions_keeps_queries_and_says_why_others_go():
    lines = [
        "Here are two queries:",
        "1. How do tides work?",
        "- ",
        "Why?",
        "42 + 17 = 59",
        '"Describe a river delta."',
        "ab\ufffd\ufffdcd efgh ij",
        "tab\x0bbed\x1c text here",
    ]
    kept, dropped = parse_instructions(lines, min_chars=10)
    assert kept == [(1, "How do tides work?"), (5, "Describe a river delta.")]
    assert [(i, p) for i, _, p in dropped] == [
        (0, "heading"),
        (2, "empty"),
        (3, "too_short"),
        (4, "no_letters"),
        (6, "garbled"),
        (7, "garbled"),
    ]
    assert parse_instructions(None, 10) == ([], [])


def test_output_problem_names_a_missing_reply_and_accepts_prose():
    assert output_problem(None, 5) == "no_output"
    assert output_problem("   ", 5) == "empty"
    assert output_problem("A fine reply.\nWith two lines.", 5) is None
