"""Task metrics for evaluate: exact match, function-call accuracy (BFCL's AST checker), ROUGE-L.

Pure functions over strings and JSON values, so each is unit-tested without a model.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

AnswerMode = Literal["text", "number", "hash", "choice"]

# ------------------------------------------------------------------------------ exact match

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_HASH = re.compile(r"####\s*(.+)")
# "(B)", "B.", "B)", "answer: b", "the answer is (c)": a lone letter A-J in those positions.
_CHOICE = [
    re.compile(r"answer\s*(?:is)?\s*[:\-]?\s*\(?([a-j])\b", re.I),
    re.compile(r"\(([a-j])\)", re.I),
    re.compile(r"^\s*([a-j])\s*[.):]", re.I),
    re.compile(r"^\s*([a-j])\s*$", re.I),
]


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and articles, squash spaces.

    Args:
        text: an answer.
    """
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _number(text: str) -> float | None:
    """The last number in ``text`` ("1,000" -> 1000.0), or None when it has none.

    The last one: a worked answer ends with its result ("3 + 4 = 7").
    """
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").replace("$", ""))
    except ValueError:
        return None


def _choice(text: str) -> str | None:
    """The multiple-choice letter ``text`` names, lowercased, or None."""
    for pattern in _CHOICE:
        m = pattern.search(text)
        if m:
            return m.group(1).lower()
    return None


def extract_answer(text: str, mode: AnswerMode) -> str | float | None:
    """The comparable answer in ``text`` for ``mode`` (None: the text has no such answer).

    Args:
        text: a model's output or a reference.
        mode: ``text`` (SQuAD-normalised whole text), ``number`` (the last number),
            ``hash`` (what follows ``####``, GSM8K style; a number when it is one),
            ``choice`` (a multiple-choice letter).
    """
    if mode == "text":
        return normalize_text(text)
    if mode == "number":
        return _number(text)
    if mode == "hash":
        m = _HASH.search(text)
        if not m:
            return None
        value = _number(m.group(1))
        return value if value is not None else normalize_text(m.group(1))
    if mode == "choice":
        return _choice(text)
    raise ValueError(f"unknown answer mode {mode!r}; modes: text, number, hash, choice")


def exact_match(pred: str, ref: str, mode: AnswerMode = "text") -> float:
    """1.0 when ``pred`` and ``ref`` give the same answer after normalisation, else 0.0.

    Numbers compare as numbers ("1,000" == "1000" == "1000.0"). A reference without an answer
    of the mode falls back to its whole text, so a ``hash`` reference "42" still matches
    "#### 42".

    Args:
        pred: the model's output.
        ref: the reference answer.
        mode: see :func:`extract_answer`.
    """
    want = extract_answer(ref, mode)
    if want is None:
        want = _number(ref) if mode in ("number", "hash") else normalize_text(ref)
    got = extract_answer(pred, mode)
    if got is None or want is None:
        return 0.0
    if isinstance(want, float) and isinstance(got, float):
        return float(abs(want - got) <= 1e-9 * max(1.0, abs(want)))
    return float(got == want)


# --------------------------------------------------------------------------------- ROUGE-L

_WORD = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenisation (no stemming): lowercase alphanumeric runs."""
    return _WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a)·len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 of ``pred`` against ``ref`` (as rouge-score's ``rougeL`` without stemming).

    Args:
        pred: the model's output.
        ref: the reference.
    """
    p, r = rouge_tokens(pred), rouge_tokens(ref)
    if not p or not r:
        return 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# -------------------------------------------------------------------------- function calls

Outcome = Literal["correct", "parse_failure", "wrong_name", "wrong_args"]
OUTCOMES: tuple[Outcome, ...] = ("correct", "parse_failure", "wrong_name", "wrong_args")

_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


@dataclass(frozen=True)
class CallResult:
    """How one predicted call compares with the truth: ``outcome`` and why."""

    outcome: Outcome
    reason: str = ""

    @property
    def score(self) -> float:
        """1.0 for a correct call, else 0.0."""
        return float(self.outcome == "correct")


def _as_call(obj: Any) -> dict[str, Any] | None:
    """``{"name", "arguments"}`` from a parsed call (OpenAI's ``function`` wrapper and
    string-encoded arguments accepted), or None when ``obj`` is not a call."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return {"name": obj["name"], "arguments": args} if isinstance(args, dict) else None


def _json_values(text: str) -> Iterable[Any]:
    """JSON values in ``text``: the whole text, each ``<tool_call>`` body, then the first
    value starting at a ``{`` or ``[`` (a call after some words)."""
    text = text.strip()
    try:
        yield json.loads(text)
    except ValueError:
        pass
    tagged = _TOOL_CALL_TAG.findall(text)
    if tagged:
        try:
            yield [json.loads(t) for t in tagged]
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            yield decoder.raw_decode(text[m.start() :])[0]
            return
        except ValueError:
            continue


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """The function calls in a model's output, or None when none parses.

    Accepts a JSON call ``{"name": ..., "arguments": {...}}`` (the data's ``function_call``
    turns, as the chat template renders them), a list of calls, or Hermes/Qwen
    ``<tool_call>{...}</tool_call>`` blocks.

    Args:
        text: the model's output.
    """
    for value in _json_values(text):
        items = value if isinstance(value, list) else [value]
        calls = [_as_call(v) for v in items]
        if calls and all(c is not None for c in calls):
            return calls  # type: ignore[return-value]
    return None


def tool_specs(tools: Any) -> dict[str, dict[str, Any]]:
    """``{name: spec}`` from a row's tools (a JSON string or list; OpenAI's
    ``{"type": "function", "function": {...}}`` unwrapped). Unreadable tools give ``{}``."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return {}
    if isinstance(tools, dict):
        tools = [tools]
    specs = {}
    for tool in tools or []:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            tool = tool["function"]
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            specs[tool["name"]] = tool
    return specs


_STRIP = re.compile(r"[ ,./\-_*^]")


def _norm_value(v: Any) -> Any:
    """A value in comparable form: numeric strings and ints as floats, strings as BFCL's
    ``standardize_string`` (lowercase; spaces and ``,./-_*^`` dropped), recursively."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip().replace(",", ""))
        except ValueError:
            return _STRIP.sub("", v).lower()
    if isinstance(v, list | tuple):
        return [_norm_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm_value(x) for k, x in v.items()}
    return v


def _truth_call(call: dict[str, Any]) -> tuple[str, dict[str, list[Any]], set[str]]:
    """``(name, {arg: acceptable values}, omittable args)`` from one truth call:
    ``{"name", "arguments"}`` (one value each, "" a value like any other) or BFCL's
    possible_answer ``{name: {arg: [acceptable, ...]}}`` (``""`` among them: the argument may
    be omitted)."""
    if "name" in call and "arguments" in call:
        args = call["arguments"]
        if isinstance(args, str):
            args = json.loads(args)
        return call["name"], {k: [v] for k, v in args.items()}, set()
    if len(call) != 1:
        raise ValueError(f"a truth call is {{name, arguments}} or {{name: {{arg: [..]}}}}: {call}")
    ((name, args),) = call.items()
    acceptable = {k: (v if isinstance(v, list) else [v]) for k, v in args.items()}
    omittable = {k for k, v in acceptable.items() if "" in v}
    return name, {k: [x for x in v if x != ""] for k, v in acceptable.items()}, omittable


def check_call(pred: dict[str, Any], truth: dict[str, Any], specs: dict[str, Any]) -> CallResult:
    """One predicted call against one truth call, as BFCL's AST checker.

    Args:
        pred: ``{"name", "arguments"}`` from :func:`parse_calls`.
        truth: see :func:`_truth_call`.
        specs: :func:`tool_specs` of the row's tools (its required and known arguments; without
            a spec, the truth's arguments are both).
    """
    name, acceptable, omittable = _truth_call(truth)
    if pred["name"] != name:
        return CallResult("wrong_name", f"called {pred['name']!r}, expected {name!r}")
    params = (specs.get(name) or {}).get("parameters") or {}
    known = set(params.get("properties") or acceptable)
    # BFCL: every required argument present; the spec's list, else every truth argument not
    # marked omittable.
    required = set(params.get("required") or set(acceptable) - omittable)
    args = pred["arguments"]
    missing = sorted(required - set(args))
    if missing:
        return CallResult("wrong_args", f"missing required argument(s) {missing}")
    unknown = sorted(set(args) - known - set(acceptable))
    if unknown:
        return CallResult("wrong_args", f"unknown argument(s) {unknown}")
    for key, value in args.items():
        if key not in acceptable:
            # An optional argument the truth leaves out: BFCL accepts only its omission.
            return CallResult("wrong_args", f"argument {key!r} is not expected here")
        if _norm_value(value) not in [_norm_value(a) for a in acceptable[key]]:
            return CallResult("wrong_args", f"{key}={value!r}, expected one of {acceptable[key]}")
    return CallResult("correct")


def function_call_accuracy(pred_text: str, truth_calls: list[dict[str, Any]], tools: Any = None) -> CallResult:
    """A model's output against the expected call(s), BFCL style (parallel calls in any order).

    Args:
        pred_text: the model's output.
        truth_calls: the expected calls (see :func:`check_call` for the two forms).
        tools: the row's tool specs (JSON string or list), or None.

    Returns:
        ``parse_failure`` when no call parses; ``wrong_name`` when the called functions differ;
        ``wrong_args`` when names match but an argument does not; else ``correct``.
    """
    calls = parse_calls(pred_text)
    if calls is None:
        return CallResult("parse_failure", "no function call parses in the output")
    specs = tool_specs(tools)
    if len(calls) != len(truth_calls):
        return CallResult("wrong_name", f"{len(calls)} call(s), expected {len(truth_calls)}")
    left = list(calls)
    worst: CallResult | None = None
    for truth in truth_calls:
        results = [check_call(c, truth, specs) for c in left]
        hit = next((i for i, r in enumerate(results) if r.outcome == "correct"), None)
        if hit is None:
            # Report an argument error when some call had the right name.
            args_err = next((r for r in results if r.outcome == "wrong_args"), None)
            worst = worst or args_err or results[0]
            continue
        left.pop(hit)
    return worst or CallResult("correct")


def call_counts(results: Iterable[CallResult]) -> dict[str, float]:
    """``{correct, parse_failures, wrong_name, wrong_args, n, accuracy}`` over results."""
    results = list(results)
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    return {
        "n": len(results),
        "correct": counts["correct"],
        "parse_failures": counts["parse_failure"],
        "wrong_name": counts["wrong_name"],
        "wrong_args": counts["wrong_args"],
        "accuracy": counts["correct"] / len(results) if results else float("nan"),
    }


# ------------------------------------------------------------------------------ JSON schema


def tools_schema(tools: Any) -> dict[str, Any] | None:
    """A JSON schema that only a call of one of ``tools`` fits: ``{"name": <tool>,
    "arguments": <its parameters>}``, one branch per tool (None when there are no tools).

    Args:
        tools: a row's tool specs (JSON string or list).
    """
    branches = []
    for name, spec in tool_specs(tools).items():
        params = dict(spec.get("parameters") or {"type": "object"})
        params.setdefault("type", "object")
        # No invented arguments: BFCL counts an unknown argument as wrong.
        params.setdefault("additionalProperties", False)
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not branches:
        return None
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def schema_valid(text: str, schema: dict[str, Any]) -> bool:
    """Whether ``text`` is one JSON value that validates against ``schema``.

    Args:
        text: a model's output.
        schema: a JSON schema.
    """
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)
