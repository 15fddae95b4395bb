"""LLM-as-judge for the evaluate stage: rubric scores per answer, and tuned-vs-base pairwise.

The judge is a teacher (``tuneline.teacher``: a local transformers model or an
OpenAI-compatible endpoint), asked through ``TeacherClient.complete``; the API key stays in
the client, which redacts it from anything it logs.

- ``score_answers``: a 1-5 score per rubric criterion for each answer, as a JSON object.
- ``pairwise``: which of two answers (tuned, base) is better, asked twice with the order
  swapped, because judges favour a position: the tuned answer wins only if it wins in both
  orders, loses only if it loses in both, and ties otherwise.

A reply is parsed leniently (the last JSON object with the expected keys, inside prose or a
code fence, else ``key: value`` lines); a reply that still cannot be read, or a call that
failed, is an *unparseable* judgment: kept in the results and counted, never dropped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator

from tuneline import progress
from tuneline.errors import InputError, TransientError
from tuneline.sections import Section
from tuneline.teacher import TeacherClient, TeacherConfig

# The judge's section in the pipeline config, for messages about its key.
WHERE = "evaluate.judge.teacher"

# A criterion with no description of its own gets this one.
CRITERIA = {
    "relevance": "the answer addresses the question that was asked, and nothing else",
    "accuracy": "the facts agree with the reference answer and contain no errors",
    "format": "the answer is clear, well formed and of a sensible length",
}
DEFAULT_RUBRIC = [f"{name}: {text}" for name, text in CRITERIA.items()]

# The judge's role, sent as the system message of every judgment.
JUDGE_SYSTEM = (
    "You are a strict, impartial judge of answers written by AI assistants. "
    "You reply with one JSON object and nothing else."
)

# Rubric scoring. {criteria}: one "- name: description" line per criterion; {keys}: the
# JSON keys expected. The placeholder in the example is not valid JSON on purpose, so an
# echo of this prompt never parses as a judgment.
SCORE_PROMPT = """Rate the answer below against the reference answer.

Criteria, each scored from 1 (very poor) to 5 (excellent):
{criteria}

# Question
{prompt}

# Reference answer
{reference}

# Answer to rate
{answer}

Reply with only a JSON object with the integer keys {keys}, for example
{{"{first}": <1-5>, ...}}"""

# Pairwise comparison. "A" and "B" are positions, swapped between the two asks.
PAIRWISE_PROMPT = """Which of the two answers below answers the question better? \
Judge correctness against the reference first, then relevance and clarity; \
ignore which answer comes first and how long it is.

# Question
{prompt}

# Reference answer
{reference}

# Answer A
{a}

# Answer B
{b}

Reply with only a JSON object: {{"winner": <"A", "B" or "tie">}}"""

SCORE_MIN, SCORE_MAX = 1, 5


class JudgeModelConfig(TeacherConfig):
    """The teacher section, decoding greedily unless told otherwise: a judge is a measuring
    instrument, and a sampled verdict changes from run to run (MT-Bench judges at 0 too)."""

    temperature: float = Field(
        default=0.0, ge=0, le=2, description="Sampling temperature; 0 (greedy) makes verdicts repeatable."
    )


class JudgeConfig(Section):
    teacher: JudgeModelConfig = Field(
        description="The judge model: a local transformers model or an OpenAI-compatible "
        "endpoint, with augment's teacher fields (temperature defaults to 0 here)."
    )
    rubric: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RUBRIC),
        min_length=1,
        description="Criteria scored 1-5, each `name: one-line description` (a bare name "
        "among relevance, accuracy, format takes the built-in description).",
    )
    pairwise: bool = Field(
        default=True,
        description="Also compare tuned against base answers, each pair judged in both orders.",
    )
    max_examples: int = Field(
        default=50, ge=1, description="Examples judged (each costs up to 4 judge calls)."
    )

    @field_validator("teacher", mode="before")
    @classmethod
    def accept_a_teacher_section(cls, teacher: Any) -> Any:
        # augment's TeacherConfig object works here too; what it left unset takes the judge defaults
        if isinstance(teacher, TeacherConfig) and not isinstance(teacher, JudgeModelConfig):
            return teacher.model_dump(exclude_unset=True)
        return teacher

    @field_validator("rubric")
    @classmethod
    def check_rubric(cls, rubric: list[str]) -> list[str]:
        names = [criterion_name(c) for c in rubric]
        for c, name in zip(rubric, names, strict=True):
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(
                    f"judge.rubric entry {c!r}: the name before ':' must be a lowercase word "
                    "(letters, digits, _), e.g. 'helpfulness: answers what was asked'"
                )
            if ":" not in c and name not in CRITERIA:
                raise ValueError(
                    f"judge.rubric entry {c!r} has no description; write it as "
                    f"'{name}: <one line saying what a 5 means>'"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"judge.rubric names a criterion twice: {names}")
        return rubric


# ------------------------------------------------------------------------------- rubric


def criterion_name(entry: str) -> str:
    """The criterion's name: the part of a rubric entry before ':' (lowercased)."""
    return entry.split(":", 1)[0].strip().lower()


def criteria(rubric: list[str]) -> dict[str, str]:
    """``{name: description}`` for the rubric entries, in order.

    Args:
        rubric: ``name: description`` entries (a bare built-in name takes its description).
    """
    out = {}
    for entry in rubric:
        name = criterion_name(entry)
        text = entry.split(":", 1)[1].strip() if ":" in entry else CRITERIA.get(name, "")
        out[name] = text
    return out


def score_prompt(item: dict[str, Any], rubric: list[str], answer_key: str = "answer") -> str:
    """The rubric-scoring prompt for one item.

    Args:
        item: ``prompt``, ``reference`` and the answer under ``answer_key``.
        rubric: the criteria.
        answer_key: which field holds the answer to rate.
    """
    crit = criteria(rubric)
    return SCORE_PROMPT.format(
        criteria="\n".join(f"- {n}: {d}" for n, d in crit.items()),
        keys=", ".join(f'"{n}"' for n in crit),
        first=next(iter(crit)),
        prompt=item["prompt"],
        reference=item.get("reference") or "(none)",
        answer=item[answer_key],
    )


def pairwise_prompt(item: dict[str, Any], a: str, b: str) -> str:
    """The pairwise prompt for one item with ``a`` and ``b`` in positions A and B."""
    return PAIRWISE_PROMPT.format(
        prompt=item["prompt"], reference=item.get("reference") or "(none)", a=a, b=b
    )


# ------------------------------------------------------------------------------ parsing


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object embedded in ``text`` (in prose, in a code fence), in order."""
    decoder = json.JSONDecoder()
    found, i = [], text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def _score(value: Any) -> int | None:
    """A 1-5 score from 4, 4.0, "4" or "4/5"; None when it is anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.0+)?)\s*(?:/\s*5)?\s*", value)
        if not m:
            return None
        value = float(m.group(1))
    if isinstance(value, (int, float)) and float(value).is_integer():
        score = int(value)
        return score if SCORE_MIN <= score <= SCORE_MAX else None
    return None


def parse_scores(reply: str | None, names: list[str]) -> dict[str, int] | None:
    """The 1-5 score of every criterion in a judge's reply; None if any is missing or bad.

    Takes the last JSON object holding all the criteria (judges often reason first), with
    keys matched case-insensitively; failing that, ``name: 4`` lines.

    Args:
        reply: the judge's text (None: the call failed).
        names: the criteria names.
    """
    if not reply:
        return None
    for obj in reversed(json_objects(reply)):
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        # Some judges nest the scores: {"scores": {...}}.
        if isinstance(lowered.get("scores"), dict):
            lowered = {str(k).strip().lower(): v for k, v in lowered["scores"].items()}
        if all(n in lowered for n in names):
            scores = {n: _score(lowered[n]) for n in names}
            return scores if all(v is not None for v in scores.values()) else None  # type: ignore[return-value]
    scores = {}
    for n in names:
        hits = re.findall(rf"(?im)^\W*{re.escape(n)}\W*[:=]\s*\**\s*([1-5])\b", reply)
        if not hits:
            return None
        scores[n] = int(hits[-1])
    return scores


def parse_winner(reply: str | None) -> str | None:
    """The winner of a pairwise reply: "A", "B" or "tie"; None when it cannot be read.

    Args:
        reply: the judge's text (None: the call failed).
    """
    if not reply:
        return None

    def norm(value: Any) -> str | None:
        v = str(value).strip().strip("\"'*").strip().lower()
        v = re.sub(r"^(answer|position)\s+", "", v)
        return {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie"}.get(v)

    for obj in reversed(json_objects(reply)):
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        if "winner" in lowered:
            return norm(lowered["winner"])
    hits = re.findall(r'(?i)winner\W{0,3}[:=]\s*["\'*]*\s*(answer a|answer b|a|b|tie)\b', reply)
    return norm(hits[-1]) if hits else None


# ----------------------------------------------------------------------------- judging


def _ask(client: TeacherClient, prompts: list[str], what: str) -> list[str | None]:
    """The judge's replies; a TransientError when not one call got a reply.

    Args:
        client: the connected judge.
        prompts: one judgment each.
        what: names the judgment in the error.
    """
    replies = client.complete(prompts, system=JUDGE_SYSTEM)
    if prompts and all(r is None for r in replies):
        info = client.info()
        raise TransientError(
            f"judge {info['model']} ({info['kind']}, {info['base_url'] or 'local'}) returned no "
            f"reply to any of {len(prompts)} {what} prompts; check that it is reachable and the "
            "key is valid (the stage log has the errors)"
        )
    return replies


def _check_items(items: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    for i, item in enumerate(items):
        missing = [k for k in keys if not isinstance(item.get(k), str)]
        if missing:
            raise InputError(
                f"judge: item {i} lacks the text field(s) {missing}; each item needs "
                f"{', '.join(keys)} (reference may be empty)"
            )


def score_answers(
    client: TeacherClient,
    items: list[dict[str, Any]],
    rubric: list[str] | None = None,
    answer_key: str = "answer",
) -> list[dict[str, Any]]:
    """Rubric scores, one judgment per item, in order.

    Args:
        client: ``TeacherClient.connect(judge.teacher)``.
        items: ``{"prompt", "reference", answer_key}`` texts.
        rubric: the criteria (default :data:`DEFAULT_RUBRIC`).
        answer_key: the field holding the answer to rate ("answer", or "tuned"/"base").

    Returns:
        Per item ``{"index", "scores": {criterion: 1-5} | None, "mean": float | None,
        "unparseable": bool, "reply": str | None}``; :func:`score_summary` totals them.

    Raises:
        InputError: an item lacks a text field.
        TransientError: the judge answered none of the prompts.
    """
    rubric = rubric or DEFAULT_RUBRIC
    _check_items(items, ("prompt", answer_key))
    names = list(criteria(rubric))
    replies = _ask(client, [score_prompt(it, rubric, answer_key) for it in items], "scoring")
    out = []
    for i, reply in enumerate(replies):
        scores = parse_scores(reply, names)
        out.append(
            {
                "index": i,
                "scores": scores,
                "mean": sum(scores.values()) / len(scores) if scores else None,
                "unparseable": scores is None,
                "reply": client.redact(reply) if reply is not None else None,
            }
        )
    return out


def score_summary(results: list[dict[str, Any]], rubric: list[str] | None = None) -> dict[str, Any]:
    """Mean score per criterion over the parsed judgments, and how many were unparseable.

    Args:
        results: from :func:`score_answers`.
        rubric: the criteria scored (default :data:`DEFAULT_RUBRIC`).
    """
    names = list(criteria(rubric or DEFAULT_RUBRIC))
    parsed = [r["scores"] for r in results if r["scores"] is not None]
    means = {n: (sum(s[n] for s in parsed) / len(parsed) if parsed else None) for n in names}
    overall = [r["mean"] for r in results if r["mean"] is not None]
    return {
        "n": len(results),
        "parsed": len(parsed),
        "unparseable": len(results) - len(parsed),
        "mean": means,
        "overall": sum(overall) / len(overall) if overall else None,
    }


def _tuned_view(winner: str | None, tuned_position: str) -> str | None:
    """One judgment from the tuned answer's side: "win", "loss", "tie" (None: unreadable)."""
    if winner is None or winner == "tie":
        return winner
    return "win" if winner == tuned_position else "loss"


def pairwise(client: TeacherClient, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Tuned against base per item, judged in both orders to cancel position bias.

    The first ask puts the tuned answer in position A, the second in position B. The tuned
    answer wins if it wins both, loses if it loses both; anything else (split, or a tie in
    either) is a tie. An item with an unreadable judgment in either order is "unparseable":
    counted, kept in ``verdicts``, and left out of the rates.

    Args:
        client: ``TeacherClient.connect(judge.teacher)``.
        items: ``{"prompt", "reference", "tuned", "base"}`` texts.

    Returns:
        ``{"verdicts": [{"index", "tuned_first", "tuned_second", "verdict"}], "n",
        "decided", "win_rate", "tie_rate", "loss_rate", "unparseable" (items),
        "unparseable_judgments" (asks), "first_position_rate"}``; rates are over decided
        items (None when there are none), ``first_position_rate`` is how often the judge
        picked position A over the readable non-tie judgments (0.5: no position bias).

    Raises:
        InputError: an item lacks a text field.
        TransientError: the judge answered none of the prompts.
    """
    _check_items(items, ("prompt", "tuned", "base"))
    prompts = []
    for it in items:
        prompts += [
            pairwise_prompt(it, it["tuned"], it["base"]),
            pairwise_prompt(it, it["base"], it["tuned"]),
        ]
    winners = [parse_winner(r) for r in _ask(client, prompts, "pairwise")]
    verdicts, counts = [], {"win": 0, "tie": 0, "loss": 0, "unparseable": 0}
    for i in range(len(items)):
        first = _tuned_view(winners[2 * i], "A")
        second = _tuned_view(winners[2 * i + 1], "B")
        if first is None or second is None:
            verdict = "unparseable"
        elif first == second and first != "tie":
            verdict = first
        else:
            verdict = "tie"
        counts[verdict] += 1
        verdicts.append(
            {"index": i, "tuned_first": first, "tuned_second": second, "verdict": verdict}
        )
    decided = len(items) - counts["unparseable"]
    positional = [w for w in winners if w in ("A", "B")]
    return {
        "verdicts": verdicts,
        "n": len(items),
        "decided": decided,
        **{f"{k}_rate": (counts[k] / decided if decided else None) for k in ("win", "tie", "loss")},
        "unparseable": counts["unparseable"],
        "unparseable_judgments": sum(w is None for w in winners),
        "first_position_rate": (positional.count("A") / len(positional) if positional else None),
    }


def judge(settings: JudgeConfig, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole judgment for the evaluate report: rubric scores of tuned and base answers,
    and (``settings.pairwise``) the pairwise comparison, on the first ``max_examples`` items.

    Args:
        settings: the judge section.
        items: ``{"prompt", "reference", "tuned", "base"}`` texts (the stage's samples).

    Raises:
        MissingSecret: the judge's API key is not set where the config says.
        RefusedSecret: the judge's server refused the key (HTTP 401/403); asked once.
        InputError: an item lacks a text field.
        TransientError: the judge answered none of the prompts.
    """
    client = TeacherClient.connect(settings.teacher, where=WHERE)  # a missing key: before any call
    client.check_access()  # a refused key fails here, once, not once per prompt
    items = items[: settings.max_examples]
    progress.logger().info(
        "evaluate: judging %d examples with %s judge %s",
        len(items),
        settings.teacher.kind,
        settings.teacher.model,
    )
    report: dict[str, Any] = {"judge": client.info(), "rubric": criteria(settings.rubric)}
    for side in ("tuned", "base"):
        results = score_answers(client, items, settings.rubric, answer_key=side)
        report[side] = {**score_summary(results, settings.rubric), "items": results}
    if settings.pairwise:
        report["pairwise"] = pairwise(client, items)
    return report
