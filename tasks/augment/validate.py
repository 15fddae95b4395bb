"""Judging teacher output: which instructions and replies become records, and why others do not.

Teacher output that is missing (``no_output``), ``empty``, ``too_short``, has ``no_letters``,
is ``garbled`` (broken bytes, control characters) or is a ``heading`` rather than an instruction
is rejected as ``teacher_output_invalid`` with that ``problem``, the ``step`` that produced it
and the seed it came from, so every candidate is either a new record or a rejection.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any

from tasks.augment.config import AugmentConfig
from tuneline.artifacts import ArtifactWriter
from tuneline.records import Message, Record, record_id

REASON = "teacher_output_invalid"

# "1. ", "2) ", "- ", "* ", "• ": list markers teachers add although SelfInstruct asks them not to.
_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s+")


def output_problem(text: str | None, min_chars: int) -> str | None:
    """Why a piece of teacher output is unusable, or None when it is fine.

    Args:
        text: an instruction or reply from the teacher (None: the call gave nothing back).
        min_chars: shortest acceptable text, after stripping whitespace.
    """
    if text is None:
        return "no_output"
    text = text.strip()
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if not any(c.isalpha() for c in text):
        return "no_letters"
    if "\ufffd" in text or any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in text):
        return "garbled"  # broken bytes or control characters: a decoding failure, not prose
    return None


def parse_instructions(
    lines: list[str] | None, min_chars: int
) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Splits SelfInstruct's lines into usable instructions and rejected ones.

    Args:
        lines: SelfInstruct's ``instructions`` column for one seed (None: no output).
        min_chars: shortest acceptable instruction.

    Returns:
        ``(kept, dropped)``: ``kept`` holds ``(index, instruction)``, ``dropped`` holds
        ``(index, line, problem)``. Index is the line's position, which ties an answer back to
        its instruction.
    """
    kept: list[tuple[int, str]] = []
    dropped: list[tuple[int, str, str]] = []
    for i, line in enumerate(lines or []):
        text = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        problem = output_problem(text, min_chars)
        if problem is None and text.endswith(":"):
            problem = "heading"  # "Here are three queries:" is a preamble, not a query
        if problem:
            dropped.append((i, line, problem))
        else:
            kept.append((i, text))
    return kept, dropped


def reject(
    out: ArtifactWriter, problems: Counter, candidate: dict[str, Any], problem: str, step: str
) -> None:
    """Keeps ``candidate`` in ``rejected/`` with its problem and counts it.

    Args:
        out: the stage's artifact writer.
        problems: counts by problem, for the report.
        candidate: what the teacher wrote, with the seed it came from.
        problem: one of ``output_problem``'s answers, or ``heading``.
        step: the Distilabel step that wrote it (``self_instruct`` or ``responses``).
    """
    problems[problem] += 1
    out.reject(candidate, REASON, problem=problem, step=step)


def judge_generate(
    seeds: list[Record],
    rows: dict,
    a: AugmentConfig,
    out: ArtifactWriter,
    teacher: str,
    problems: Counter,
) -> list[Record]:
    """Turns SelfInstruct/TextGeneration rows into new records or rejections, seed by seed.

    Args:
        seeds: the records the teacher was shown.
        rows: ``pipelines.generate``'s rows (``instructions`` and ``responses``).
        a: the augment section (``min_chars``).
        out: receives the rejections.
        teacher: the teacher's model name, for the records' meta.
        problems: counts rejections by problem.
    """
    instructions = {r["seed_id"]: r["instructions"] for r in rows["instructions"]}
    answers = {(r["seed_id"], r["index"]): r["generation"] for r in rows["responses"]}
    made = []
    for seed in seeds:
        lines = instructions.get(seed.id)
        if not lines:  # the call failed (None) or wrote only blank lines: one failed attempt
            problem = "no_output" if lines is None else "empty"
            candidate = {"seed_id": seed.id, "instructions": lines}
            reject(out, problems, candidate, problem, "self_instruct")
            continue
        kept, dropped = parse_instructions(lines, a.min_chars)
        for _, line, problem in dropped:
            reject(
                out, problems, {"seed_id": seed.id, "instruction": line}, problem, "self_instruct"
            )
        for index, instruction in kept:
            reply = answers.get((seed.id, index))
            problem = output_problem(reply, a.min_chars)
            if problem:
                candidate = {"seed_id": seed.id, "instruction": instruction, "response": reply}
                reject(out, problems, candidate, problem, "responses")
                continue
            made.append(
                Record(
                    id=record_id("augment", seed.id, index, instruction),
                    kind="chat",
                    messages=[
                        Message(role="user", content=instruction),
                        Message(role="assistant", content=reply.strip()),
                    ],
                    meta={
                        "source": "augment",
                        "teacher": teacher,
                        "seed_id": seed.id,
                        "mode": "generate",
                    },
                )
            )
    return made


def judge_improve(
    seeds: list[Record],
    rows: dict,
    a: AugmentConfig,
    out: ArtifactWriter,
    teacher: str,
    problems: Counter,
) -> list[Record]:
    """Turns rewritten replies into new records (the seed with its last reply replaced) or
    rejections.

    Args:
        seeds: the records the teacher was shown.
        rows: ``pipelines.improve``'s rows (``responses``).
        a: the augment section (``min_chars``).
        out: receives the rejections.
        teacher: the teacher's model name, for the records' meta.
        problems: counts rejections by problem.
    """
    answers = {r["seed_id"]: r["generation"] for r in rows["responses"]}
    made = []
    for seed in seeds:
        reply = answers.get(seed.id)
        problem = output_problem(reply, a.min_chars)
        if problem:
            reject(out, problems, {"seed_id": seed.id, "response": reply}, problem, "responses")
            continue
        messages = [m.model_copy() for m in seed.messages]
        messages[-1] = Message(role="assistant", content=reply.strip())
        made.append(
            Record(
                id=record_id("augment", seed.id, "improve"),
                kind="chat",
                messages=messages,
                meta={
                    "source": "augment",
                    "teacher": teacher,
                    "seed_id": seed.id,
                    "improves": seed.id,
                    "mode": "improve",
                },
            )
        )
    return made
