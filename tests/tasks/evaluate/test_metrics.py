"""evaluate's task metrics: exact match, the BFCL-style function-call checker, ROUGE-L."""

from __future__ import annotations

import json

import pytest

from tasks.evaluate import metrics as M
from tasks.evaluate.generation import bounded_schema

# ------------------------------------------------------------------------------ exact match


@pytest.mark.parametrize(
    ("pred", "ref", "mode", "want"),
    [
        ("The Eiffel Tower!", "eiffel tower", "text", 1.0),
        ("  An apple. ", "apple", "text", 1.0),
        ("a pear", "apple", "text", 0.0),
        ("It costs 1,000 dollars", "1000", "number", 1.0),
        ("1000.0", "1,000", "number", 1.0),
        ("3 + 4 = 7", "7", "number", 1.0),
        ("3 + 4 = 8", "7", "number", 0.0),
        ("no number here", "7", "number", 0.0),
        ("She has 5 left.\n#### 42", "Steps... #### 42", "hash", 1.0),
        ("#### 42.0", "42", "hash", 1.0),  # a reference without #### is its own number
        ("#### 41", "#### 42", "hash", 0.0),
        ("42", "#### 42", "hash", 0.0),  # no #### in the prediction: no answer
        ("(B)", "B", "choice", 1.0),
        ("B. Paris", "b", "choice", 1.0),
        ("The answer is (c)", "C", "choice", 1.0),
        ("answer: b", "(B)", "choice", 1.0),
        ("(A)", "B", "choice", 0.0),
    ],
)
def test_exact_match(pred, ref, mode, want):
    assert M.exact_match(pred, ref, mode) == want


def test_exact_match_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown answer mode 'regex'"):
        M.exact_match("a", "a", "regex")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_known_values():
    # "the cat was found under the bed"
    # vs "the cat was under the bed": LCS 6, P = 6/6, R = 6/7, F = 12/13.
    assert M.rouge_l("the cat was under the bed", "the cat was found under the bed") == (
        pytest.approx(12 / 13)
    )
    assert M.rouge_l("The Cat, sat!", "the cat sat") == 1.0  # case and punctuation ignored
    assert M.rouge_l("dog", "the cat sat") == 0.0
    assert M.rouge_l("", "the cat") == 0.0
    # LCS of "a b c d" and "b d a": 2 ("b d"); P = 2/3, R = 2/4, F = 4/7.
    assert M.rouge_l("b d a", "a b c d") == pytest.approx(4 / 7)


# -------------------------------------------------------------------------- function calls


@pytest.fixture(scope="module")
def toolcall_rows(request):
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "instruction" / "sharegpt_toolcall_demo.json"
    if not path.exists():
        pytest.skip(f"public test data not found at {path}")
    return json.loads(path.read_text())


def first_call(row):
    """``(call text, tools)`` of a ShareGPT tool-call row's first function_call turn."""
    text = next(t["value"] for t in row["conversations"] if t["from"] == "function_call")
    return text, row["tools"]


def test_the_datas_own_call_is_correct(toolcall_rows):
    checked = 0
    for row in toolcall_rows:
        if not any(t["from"] == "function_call" for t in row["conversations"]):
            continue
        text, tools = first_call(row)
        truth = M.parse_calls(text)
        assert truth is not None, text
        assert M.function_call_accuracy(text, truth, tools).outcome == "correct", text
        checked += 1
    assert checked == 153  # every row with a call


def test_wrong_argument_value_scores_zero(toolcall_rows):
    text, tools = first_call(toolcall_rows[20])  # calculate_bmi(weight=70, height=1.75)
    truth = M.parse_calls(text)
    wrong = text.replace("70", "80")
    r = M.function_call_accuracy(wrong, truth, tools)
    assert (r.outcome, r.score) == ("wrong_args", 0.0) and "weight" in r.reason


def test_type_normalised_values_still_match(toolcall_rows):
    text, tools = first_call(toolcall_rows[20])
    truth = M.parse_calls(text)
    pred = '{"name": "calculate_bmi", "arguments": {"height": "1.75", "weight": 70.0}}'
    assert M.function_call_accuracy(pred, truth, tools).score == 1.0
    # OpenAI's shape with string-encoded arguments, inside a <tool_call> block, is read too.
    pred = (
        '<tool_call>{"function": {"name": "calculate_bmi", '
        '"arguments": "{\\"weight\\": 70, \\"height\\": 1.75}"}}</tool_call>'
    )
    assert M.function_call_accuracy(pred, truth, tools).score == 1.0


def test_missing_optional_argument_still_scores_one(toolcall_rows):
    text, tools = first_call(toolcall_rows[10])  # get_news(topics, location); location optional
    truth = M.parse_calls(text)
    assert truth[0]["arguments"]["location"] == "New York"
    pred = '{"name": "get_news", "arguments": {"topics": ["technology", "sports"]}}'
    assert M.function_call_accuracy(pred, truth, tools).outcome == "correct"
    # The required one missing is wrong.
    pred = '{"name": "get_news", "arguments": {"location": "New York"}}'
    r = M.function_call_accuracy(pred, truth, tools)
    assert r.outcome == "wrong_args" and "missing required" in r.reason


def test_extra_unknown_argument_scores_zero(toolcall_rows):
    text, tools = first_call(toolcall_rows[20])
    truth = M.parse_calls(text)
    pred = '{"name": "calculate_bmi", "arguments": {"weight": 70, "height": 1.75, "age": 30}}'
    r = M.function_call_accuracy(pred, truth, tools)
    assert (r.outcome, r.score) == ("wrong_args", 0.0) and "age" in r.reason


def test_unparseable_output_is_a_parse_failure_and_a_wrong_function_is_wrong_name(toolcall_rows):
    text, tools = first_call(toolcall_rows[20])
    truth = M.parse_calls(text)
    assert M.function_call_accuracy('{"name": "calculate_bmi", "argu', truth, tools).outcome == (
        "parse_failure"
    )
    assert M.function_call_accuracy("I can compute your BMI.", truth, tools).outcome == (
        "parse_failure"
    )
    other = '{"name": "search_recipes", "arguments": {"ingredients": ["rice"]}}'
    assert M.function_call_accuracy(other, truth, tools).outcome == "wrong_name"
    counts = M.call_counts(
        [M.function_call_accuracy(t, truth, tools) for t in (text, "nope", other, "{}")]
    )
    assert counts == {
        "n": 4, "correct": 1, "parse_failures": 2, "wrong_name": 1, "wrong_args": 0,
        "accuracy": 0.25,
    }


def test_bfcl_possible_answers_and_parallel_calls():
    # BFCL's possible_answer: each argument lists acceptable values; "" marks it omittable.
    truth = [{"area": {"radius": [5, 5.0], "unit": ["cm", "centimeters", ""]}}]
    assert M.function_call_accuracy('{"name": "area", "arguments": {"radius": 5}}', truth).score
    ok = '{"name": "area", "arguments": {"radius": 5, "unit": "Centimeters"}}'
    assert M.function_call_accuracy(ok, truth).score == 1.0
    bad = '{"name": "area", "arguments": {"radius": 5, "unit": "inches"}}'
    assert M.function_call_accuracy(bad, truth).outcome == "wrong_args"
    # Parallel calls match in any order; one call short is wrong.
    two = [{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {"y": 2}}]
    pred = '[{"name": "g", "arguments": {"y": 2}}, {"name": "f", "arguments": {"x": 1}}]'
    assert M.function_call_accuracy(pred, two).outcome == "correct"
    assert M.function_call_accuracy('{"name": "f", "arguments": {"x": 1}}', two).score == 0.0


# ------------------------------------------------------------------------------ JSON schema


def test_tools_schema_accepts_exactly_the_tools_calls(toolcall_rows):
    text, tools = first_call(toolcall_rows[20])
    schema = M.tools_schema(tools)
    assert M.schema_valid(text, schema)
    assert not M.schema_valid('{"name": "calculate_bmi", "arguments": {"weight": 70}}', schema)
    assert not M.schema_valid('{"name": "launch", "arguments": {}}', schema)
    assert not M.schema_valid("BMI is 22.9", schema)
    assert M.tools_schema(None) is None and M.tools_schema("[]") is None


def test_bounded_schema_only_narrows():
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},  # a property named like a keyword
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        },
    }
    b = bounded_schema(schema, max_string=5)
    assert b["properties"]["type"]["pattern"] == '^[^\\x00-\\x1f"\\\\]{0,5}$'
    assert M.schema_valid('{"type": "abcde"}', b) and not M.schema_valid('{"type": "abcdef"}', b)
    assert not M.schema_valid('{"type": "a\\u0012"}', b)  # no control characters
    assert b["properties"]["n"]["maximum"] == 10**9 and b["properties"]["n"]["minimum"] == -(10**9)
    assert b["properties"]["tags"]["maxItems"] == 4
    assert "pattern" not in b["properties"]["tags"]["items"]  # enum: already bounded
    assert schema["properties"]["type"] == {"type": "string"}  # the original is untouched


def test_rouge_l_agrees_with_rouge_score_where_installed():
    """The same F1 as Google's rouge-score (no stemming) on real-looking pairs."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [
        ("The red lamp costs 61 dollars.", "The red vase costs 48 dollars."),
        ("Yes, we have 4 of the red chair in stock.", "We have 4 red chairs; yes!"),
        ("Poles take load off your knees on descents.", "Trekking poles help on descents"),
        ("", "anything"),
        ("x-ray 3.5 km/h", "3 5 km h x ray"),
    ]
    for pred, ref in pairs:
        want = scorer.score(ref, pred)["rougeL"].fmeasure
        assert M.rouge_l(pred, ref) == pytest.approx(want), (pred, ref)
