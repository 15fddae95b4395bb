"""evaluate.judge: rubric scores and position-swapped pairwise verdicts from a teacher LLM.

The OpenAI-compatible test server (tests/support/openai_server.py) answers every chat with its
module-level ``answer(prompt)``; each test that needs a judge's behaviour swaps that function
for its own with monkeypatch (the server's default answer is left as it is).
"""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from tasks.evaluate.judge import (
    DEFAULT_RUBRIC,
    JudgeConfig,
    judge,
    pairwise,
    parse_scores,
    parse_winner,
    score_answers,
    score_summary,
)
from tests.support import openai_server
from tests.support.openai_server import serve
from tests.support.teachers import KEY, KEY_ENV
from tests.support.teachers import tiny_teacher as make_tiny_teacher
from tuneline.errors import MissingSecret, RefusedSecret
from tuneline.teacher import TeacherClient, TeacherConfig

NAMES = ["relevance", "accuracy", "format"]


@pytest.fixture(scope="module")
def server():
    with serve(token=KEY) as running:
        yield running


@pytest.fixture
def client(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.requests.clear()
    return TeacherClient.connect(teacher(server))


def teacher(server) -> TeacherConfig:
    return TeacherConfig(
        kind="openai", model="test-teacher", base_url=server.url, api_key_env=KEY_ENV,
        temperature=0,
    )  # fmt: skip


def section(prompt: str, title: str) -> str:
    """The text under ``# <title>`` in a judge prompt."""
    return prompt.split(f"# {title}\n", 1)[1].split("\n\n#", 1)[0].split("\n\nReply", 1)[0].strip()


def chat_prompts(server) -> list[str]:
    return [
        r["body"]["messages"][-1]["content"]
        for r in server.requests
        if r["path"] == "/v1/chat/completions"
    ]


# -------------------------------------------------------------------------------- scores


def rubric_judge(prompt: str) -> str:
    """Scores accuracy 5 when the answer quotes the reference, else 1; the marker in the
    question picks the reply's shape."""
    answer, reference = section(prompt, "Answer to rate"), section(prompt, "Reference answer")
    acc = 5 if reference in answer else 1
    question = section(prompt, "Question")
    if "[[fenced]]" in question:
        return f'Let me think.\n```json\n{{"Relevance": "4", "accuracy": "{acc}/5", "FORMAT": 4.0}}\n```'
    if "[[lines]]" in question:
        return f"relevance: 3\naccuracy: {acc}\nformat: **2**"
    if "[[prose]]" in question:
        return "The answer looks fine to me overall."
    if "[[out-of-range]]" in question:
        return '{"relevance": 7, "accuracy": 5, "format": 5}'
    if "[[partial]]" in question:
        return '{"relevance": 4, "accuracy": 4}'
    return json.dumps({"relevance": 5, "accuracy": acc, "format": 4})


ITEMS = [
    {
        "prompt": "Where is the red lamp made?",
        "reference": "Osaka.",
        "answer": "It is made in Osaka.",
    },
    {"prompt": "Cost? [[fenced]]", "reference": "12 dollars", "answer": "It costs 12 dollars."},
    {"prompt": "Stock? [[lines]]", "reference": "3 left", "answer": "None left."},
    {"prompt": "Colour? [[prose]]", "reference": "red", "answer": "red"},
    {"prompt": "Size? [[out-of-range]]", "reference": "small", "answer": "small"},
    {"prompt": "Weight? [[partial]]", "reference": "1 kg", "answer": "1 kg"},
]


def test_rubric_scores_are_parsed_and_bad_judgments_counted(client, server, monkeypatch):
    monkeypatch.setattr(openai_server, "answer", rubric_judge)
    results = score_answers(client, ITEMS)
    assert [r["scores"] for r in results] == [
        {"relevance": 5, "accuracy": 5, "format": 4},
        {"relevance": 4, "accuracy": 5, "format": 4},
        {"relevance": 3, "accuracy": 1, "format": 2},
        None,
        None,
        None,
    ]
    assert [r["unparseable"] for r in results] == [False] * 3 + [True] * 3
    assert results[2]["mean"] == pytest.approx(2.0) and results[3]["reply"].startswith("The answer")
    s = score_summary(results)
    assert (s["n"], s["parsed"], s["unparseable"]) == (6, 3, 3)
    assert s["mean"] == {
        "relevance": 4.0,
        "accuracy": pytest.approx(11 / 3),
        "format": pytest.approx(10 / 3),
    }
    # One request per item, each with the judge's system message and the item's texts.
    prompts = chat_prompts(server)
    assert len(prompts) == len(ITEMS)
    # (The client sends a batch concurrently: requests arrive in any order.)
    rated = {section(p, "Question"): section(p, "Answer to rate") for p in prompts}
    assert rated == {it["prompt"]: it["answer"] for it in ITEMS}
    assert all(r["body"]["messages"][0]["role"] == "system" for r in server.requests if r["body"])


def test_an_echoing_server_gives_only_unparseable_judgments(client):
    """The server's default reply quotes the prompt: its instructions must never parse."""
    results = score_answers(client, ITEMS[:2])
    assert all(r["reply"].startswith("Answer: ") for r in results)
    assert score_summary(results)["unparseable"] == 2
    pw = pairwise(client, [{"prompt": "q", "reference": "r", "tuned": "x", "base": "y"}])
    assert pw["unparseable"] == 1 and pw["unparseable_judgments"] == 2 and pw["win_rate"] is None


def test_custom_rubric_keys(client, monkeypatch):
    monkeypatch.setattr(openai_server, "answer", lambda p: '{"brevity": 2, "tone": 5}')
    rubric = ["brevity: short and to the point", "tone: polite"]
    [r] = score_answers(client, ITEMS[:1], rubric)
    assert r["scores"] == {"brevity": 2, "tone": 5}


# ------------------------------------------------------------------------------ pairwise

PAIRS = [
    {"prompt": "q0", "reference": "Osaka", "tuned": "GOOD: Osaka", "base": "bad: Lyon"},
    {"prompt": "q1", "reference": "12", "tuned": "GOOD: 12", "base": "bad: 40"},
    {"prompt": "q2", "reference": "3", "tuned": "bad: 9", "base": "GOOD: 3"},
    {"prompt": "q3", "reference": "red", "tuned": "GOOD: red", "base": "GOOD: red!"},
]


def content_judge(prompt: str) -> str:
    """Prefers the answer marked GOOD, in whichever position it is; a tie when both are."""
    a, b = "GOOD" in section(prompt, "Answer A"), "GOOD" in section(prompt, "Answer B")
    return json.dumps({"winner": "tie" if a == b else ("A" if a else "B")})


def test_pairwise_asks_both_orders_and_counts_wins_only_when_both_agree(
    client, server, monkeypatch
):
    monkeypatch.setattr(openai_server, "answer", content_judge)
    r = pairwise(client, PAIRS)
    assert [v["verdict"] for v in r["verdicts"]] == ["win", "win", "loss", "tie"]
    assert (r["win_rate"], r["tie_rate"], r["loss_rate"]) == (0.5, 0.25, 0.25)
    assert r["unparseable"] == 0 and r["decided"] == 4
    # Two asks per item, one with the tuned answer in position A, one with it in position B
    # (the client sends a batch concurrently: requests arrive in any order).
    prompts = chat_prompts(server)
    assert len(prompts) == 2 * len(PAIRS)
    asked: dict[str, set] = {}
    for p in prompts:
        asked.setdefault(section(p, "Question"), set()).add(
            (section(p, "Answer A"), section(p, "Answer B"))
        )
    assert asked == {
        it["prompt"]: {(it["tuned"], it["base"]), (it["base"], it["tuned"])} for it in PAIRS
    }


def test_a_judge_that_always_picks_position_a_yields_only_ties(client, monkeypatch):
    monkeypatch.setattr(openai_server, "answer", lambda p: 'I prefer the first. {"winner": "A"}')
    r = pairwise(client, PAIRS)
    assert [v["verdict"] for v in r["verdicts"]] == ["tie"] * 4
    assert [(v["tuned_first"], v["tuned_second"]) for v in r["verdicts"]] == [("win", "loss")] * 4
    assert (r["win_rate"], r["tie_rate"], r["loss_rate"]) == (0.0, 1.0, 0.0)
    assert r["first_position_rate"] == 1.0


def test_an_unreadable_order_makes_the_item_unparseable_not_dropped(client, monkeypatch):
    def judge_fn(prompt: str) -> str:
        # The second ask about q0 (tuned in position B) gets a reply without a verdict.
        if section(prompt, "Question") == "q0" and section(prompt, "Answer B").startswith(
            "GOOD: Osaka"
        ):
            return "Both have merit."
        return content_judge(prompt)

    monkeypatch.setattr(openai_server, "answer", judge_fn)
    r = pairwise(client, PAIRS)
    assert r["verdicts"][0] == {
        "index": 0,
        "tuned_first": "win",
        "tuned_second": None,
        "verdict": "unparseable",
    }
    assert (r["n"], r["decided"], r["unparseable"], r["unparseable_judgments"]) == (4, 3, 1, 1)
    assert r["win_rate"] == pytest.approx(1 / 3) and r["loss_rate"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------- judge()


def test_judge_reports_both_sides_and_never_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(
        openai_server,
        "answer",
        lambda p: content_judge(p) if "# Answer A" in p else rubric_judge(p),
    )
    items = [{**p, "answer": p["tuned"]} for p in PAIRS] * 2
    report = judge(JudgeConfig(teacher=teacher(server), max_examples=3), items)
    assert report["tuned"]["n"] == report["base"]["n"] == report["pairwise"]["n"] == 3
    assert report["tuned"]["unparseable"] == 0 and report["tuned"]["mean"]["relevance"] == 5
    assert report["pairwise"]["win_rate"] == pytest.approx(2 / 3)
    assert report["judge"] == {"model": "test-teacher", "kind": "openai", "base_url": server.url}
    assert KEY not in json.dumps(report)


def test_missing_key_and_refused_key_are_clear_errors(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(MissingSecret, match=KEY_ENV):
        judge(JudgeConfig(teacher=teacher(server)), PAIRS)
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(RefusedSecret, match=r"evaluate\.judge\.teacher: .* refused the API key"):
        judge(JudgeConfig(teacher=teacher(server)), PAIRS)


def test_rubric_entries_are_validated():
    t = {"kind": "openai", "model": "m", "base_url": "http://x/v1"}
    assert JudgeConfig(teacher=t).rubric == DEFAULT_RUBRIC
    assert JudgeConfig(teacher=t, rubric=["accuracy"]).rubric == ["accuracy"]
    for bad in (["helpfulness"], ["Bad Name: x"], ["tone: a", "tone: b"], []):
        with pytest.raises(ValidationError):
            JudgeConfig(teacher=t, rubric=bad)


def test_parsers_on_odd_replies():
    assert parse_scores('{"scores": {"relevance": 2, "accuracy": 3, "format": 4}}', NAMES) == {
        "relevance": 2, "accuracy": 3, "format": 4,
    }  # fmt: skip
    # The last complete object wins (a judge that corrects itself).
    assert (
        parse_scores(
            '{"relevance": 1, "accuracy": 1, "format": 1} no: {"relevance": 2, "accuracy": 2, "format": 2}',
            NAMES,
        )["accuracy"]
        == 2
    )
    assert parse_scores('{"relevance": 4.5, "accuracy": 3, "format": 3}', NAMES) is None
    assert parse_scores(None, NAMES) is None and parse_scores("", NAMES) is None
    assert parse_winner('```json\n{"Winner": "Answer B"}\n```') == "B"
    assert parse_winner("Winner: tie") == "tie"
    assert parse_winner('{"winner": "C"}') is None and parse_winner("A is nicer") is None


# ------------------------------------------------------------------------- a local judge


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory) -> str:
    return make_tiny_teacher(tmp_path_factory.mktemp("judge"))


def test_a_random_local_judge_is_unparseable_everywhere_and_does_not_crash(tiny_judge):
    t = TeacherConfig(kind="transformers", model=tiny_judge, max_new_tokens=16, temperature=0)
    report = judge(JudgeConfig(teacher=t, max_examples=2), PAIRS)
    for side in ("tuned", "base"):
        assert (report[side]["n"], report[side]["unparseable"]) == (2, 2)
        assert all(isinstance(r["reply"], str) for r in report[side]["items"])  # it did answer
    pw = report["pairwise"]
    assert (pw["n"], pw["unparseable"], pw["decided"], pw["win_rate"]) == (2, 2, 0, None)
    assert re.sub(r"\s", "", report["tuned"]["items"][0]["reply"]) != ""


def test_the_judge_decodes_greedily_unless_told_otherwise():
    plain = {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    assert JudgeConfig(teacher=plain).teacher.temperature == 0.0
    assert JudgeConfig(teacher=TeacherConfig(**plain)).teacher.temperature == 0.0
    assert JudgeConfig(teacher=TeacherConfig(**plain, temperature=0.3)).teacher.temperature == 0.3
    assert TeacherConfig(**plain).temperature == 0.7  # augment's teacher still samples
