"""evaluate: held-out loss and perplexity of the base model against base + adapter.

Both models score the same eval-split rows (``tuneline.splits.SplitRow``), tokenized exactly
as train's SFT method tokenized its rows (``tuneline.splits.sft_example``, TRL's
prompt/completion masking), so the numbers compare like with like: ``loss_completion`` is the
mean token NLL of the replies (what was trained, and the headline ``loss``), ``loss_all`` that
of the whole rendered text. The base is rebuilt the way
train built it (same hub id or path; same seed for the tiny Llama) and the tuned model is that
base with the train artifact's adapter, so one model in memory serves both (PEFT's
``disable_adapter`` gives the base back); a fully trained model (``model/``) loads beside it.

Task metrics (``metrics.py``): both models answer up to ``max_generate`` eval prompts greedily
(``generation.py``, batched), scored by ROUGE-L and exact match against the reference reply;
with ``function_call`` on, the eval records' tool calls are asked for too (the conversation up
to the call, as the chat template renders it) and checked as the Berkeley function-calling
leaderboard's AST checker does. Schema-guided decoding (``schema_guided``) constrains those
answers to the JSON schema of the row's tools (or ``json_schema``) and reports how many
outputs are valid JSON for the schema, with and without it.
Writes ``report.json`` (through the report), ``report.md`` and ``examples.jsonl`` (every
generated answer with its scores).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tuneline.artifacts import Artifact, ArtifactWriter, hash_bytes_of
from tuneline.errors import ConfigError, InputError, NonFiniteError, TunelineError
from tuneline.models import chat_tools, load_base_model, load_tokenizer
from tuneline.progress import track
from tuneline.sections import Section
from tuneline.splits import load_split, sft_example
from tuneline.stage import Stage
from tuneline.teacher import check_key_is_set

from . import metrics as M
from .generation import SchemaCompiler, bounded_schema, generate_batch, output_vocab_size
from .harness import HarnessConfig, check_tasks, run_harness
from .judge import WHERE as JUDGE_WHERE
from .judge import JudgeConfig, judge

# ------------------------------------------------------------------------------ evaluate


class EvaluateConfig(Section):
    max_examples: int = Field(default=200, ge=1, description="Eval-split examples scored.")
    num_samples: int = Field(default=3, ge=0, description="Prompts to generate sample answers for.")
    max_new_tokens: int = Field(default=48, ge=1, description="Length of each sample answer.")
    max_length: int = Field(
        default=512, ge=16, description="Longest scored sequence in tokens; longer examples are cut at the end."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per forward pass when scoring.")
    metrics: list[Literal["exact_match", "function_call", "rouge_l"]] = Field(
        default=["rouge_l", "exact_match"],
        description="Task metrics on generated answers: rouge_l and exact_match against the "
        "reference reply; function_call asks for the eval records' tool calls and checks them "
        "BFCL style (name, required/unknown arguments, values). Empty: loss only.",
    )
    max_generate: int = Field(
        default=32, ge=0, description="Eval prompts each model answers for the task metrics."
    )
    answer_pattern: M.AnswerMode = Field(
        default="text",
        description="What exact_match compares: text (SQuAD-normalised whole answer), number "
        "(the last number; '1,000' == '1000.0'), hash (after '####', GSM8K), choice (a "
        "multiple-choice letter: '(B)', 'B.', 'answer: b').",
    )
    schema_guided: Literal["off", "on", "both"] = Field(
        default="off",
        description="Constrain answers to a JSON schema (a function call's: the row's tools; "
        "else json_schema): on replaces free generation, both reports both. true/false mean "
        "on/off.",
    )
    json_schema: str | dict[str, Any] | None = Field(
        default=None,
        description="A JSON schema (inline, or a path to a .json file) every reply must fit; "
        "validity is reported, and schema_guided decodes with it. Function calls use their "
        "tools' schema instead.",
    )
    max_new_tokens_json: int = Field(
        default=160, ge=1, description="Length of each function-call or schema-guided answer."
    )
    schema_max_string: int = Field(
        default=48,
        ge=1,
        description="Guided decoding caps each free string at this many characters (arrays at 4 "
        "items, numbers at 1e9) so every output closes within max_new_tokens_json.",
    )

    harness: HarnessConfig | None = Field(
        default=None,
        description="lm-evaluation-harness tasks (YAMLs over local data files) run on base and "
        "tuned. Empty: none.",
    )
    judge: JudgeConfig | None = Field(
        default=None,
        description="An LLM judge (local transformers model or OpenAI-compatible endpoint) that "
        "scores answers on a rubric and compares tuned with base pairwise. Empty: none.",
    )

    @field_validator("schema_guided", mode="before")
    @classmethod
    def _bool_guided(cls, v: Any) -> Any:
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def check_guided_decoding_is_installed(self) -> EvaluateConfig:
        import importlib.util

        if self.schema_guided != "off" and importlib.util.find_spec("xgrammar") is None:
            raise ValueError(
                "evaluate.schema_guided needs xgrammar: pip install 'tuneline[guided]' (or set "
                "schema_guided: off)"
            )
        return self


def load_schema(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """``evaluate.json_schema`` as a schema: inline dict, inline JSON text, or a file path.

    Raises:
        ConfigError: the file is missing or the text is not a JSON object.
    """
    if value is None or isinstance(value, dict):
        return value
    text = value.strip()
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"evaluate.json_schema: {value!r} is neither inline JSON nor an existing file; "
                "give a JSON schema object or the path of a .json file holding one"
            )
        text = path.read_text()
    try:
        schema = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"evaluate.json_schema is not valid JSON ({e}); fix the schema") from None
    if not isinstance(schema, dict):
        raise ConfigError("evaluate.json_schema must be a JSON object (a schema)")
    return schema


# ------------------------------------------------------------------------------- scoring


def encode(tokenizer, example: dict[str, str], max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion (cut at ``max_length``) and where the completion starts.

    Tokenized as TRL's SFTTrainer does it: the prompt and the whole text separately, the
    completion starting where the two diverge (a merge across the boundary moves it left).
    """
    from trl.data_utils import common_prefix_length

    prompt_ids = tokenizer(example["prompt"])["input_ids"]
    ids = tokenizer(example["prompt"] + example["completion"])["input_ids"]
    return ids[:max_length], common_prefix_length(prompt_ids, ids)


def nonfinite_loss(label: str, value: float, tokens: int) -> NonFiniteError:
    """The error of a model whose eval loss is NaN or infinite over ``tokens`` scored tokens
    (a tuned model from a diverged run, or a broken base): every figure after it (perplexity,
    deltas, exports, the card) would be meaningless, so the stage stops here."""
    if label == "base":
        why = (
            "the base model itself computes NaN/inf logits: check model.name_or_path, its "
            "weights and dtype (a bfloat16 checkpoint loaded in float16 can overflow)"
        )
    else:
        why = (
            "its weights or logits hold NaN/inf, so training diverged: see the train report's "
            "loss, lower train.learning_rate and train again"
        )
    return NonFiniteError(
        f"evaluate: the {label} model's eval loss is {value} over {tokens} tokens; {why}"
    )


def score(
    model, batches: list[list[tuple[list[int], int]]], pad_id: int, label: str
) -> dict[str, float]:
    """Mean token NLL over all tokens and over completion tokens, with perplexities.

    Sums per-token NLLs across batches before dividing, so the result does not depend on how
    the examples were batched or padded.

    Args:
        model: a causal LM in eval mode.
        batches: lists of ``(ids, completion_start)`` from :func:`encode`.
        pad_id: the padding token id (padding is masked out).
        label: names the progress bar and, in an error, the model (``base``, ``tuned``).

    Raises:
        NonFiniteError: the loss over the scored tokens is NaN or infinite.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    nll = {"all": 0.0, "completion": 0.0}
    count = {"all": 0, "completion": 0}
    for batch in track(batches, f"evaluate: scoring {label}"):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        in_completion = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (ids, start) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            in_completion[i, start : len(ids)] = True
        input_ids, attention = input_ids.to(device), attention.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        # Position t predicts token t+1: the first token of each row is never scored.
        token_nll = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none"
        ).cpu()
        scored = attention[:, 1:].bool().cpu()
        for name, mask in (("all", scored), ("completion", scored & in_completion[:, 1:])):
            nll[name] += token_nll[mask].sum().item()
            count[name] += int(mask.sum())
    out: dict[str, float] = {}
    for name in ("all", "completion"):
        if count[name] and not math.isfinite(nll[name]):
            raise nonfinite_loss(label, nll[name], count[name])
        loss = nll[name] / count[name] if count[name] else float("nan")
        out[f"loss_{name}"] = loss
        out[f"ppl_{name}"] = math.exp(loss) if count[name] else float("nan")
        out[f"tokens_{name}"] = count[name]
    # The headline numbers are the completion's: the prompt is given, never written by the model.
    out["loss"], out["ppl"] = out["loss_completion"], out["ppl_completion"]
    return out


def plain(tokenizer, text: str) -> str:
    """``text`` without template markers, for the human-readable report."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# ---------------------------------------------------------------------------- task metrics


@dataclass
class Case:
    """One prompt both models answer: a reply (scored against the reference) or a function
    call (checked against ``calls``)."""

    id: str
    task: Literal["reply", "function_call"]
    prompt: str  # rendered: chat template up to the generation prompt
    reference: str  # plain text of the expected answer
    calls: list[dict[str, Any]] | None = None
    tools: Any = None
    schema: dict[str, Any] | None = None
    answers: dict[str, str] = field(default_factory=dict)  # label -> answer
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> metric -> score


def reply_cases(rows, tokenizer, n: int, schema: dict[str, Any] | None) -> list[Case]:
    """The first ``n`` eval rows that have a prompt, as reply cases.

    Args:
        rows: eval split rows.
        tokenizer: renders the reference as plain text.
        n: how many.
        schema: ``evaluate.json_schema`` (every reply's), or None.
    """
    picked = [r for r in rows if r.prompt][:n]
    return [
        Case(r.id, "reply", r.prompt, plain(tokenizer, r.completion), schema=schema)
        for r in picked
    ]


def call_cases(fmt: Artifact, tokenizer, n: int) -> list[Case]:
    """Up to ``n`` function-call cases from the format artifact's eval records.

    The split rows hold only each chat's last reply, and in tool-call data (LLaMA-Factory's
    ``function_call`` turns) that is usually the text after the tool's answer; so the first
    assistant turn of each eval record that is a call is asked for instead, the conversation
    before it rendered with the generation prompt as format renders a prompt.

    Args:
        fmt: the format artifact (its records carry ``meta.split`` and ``meta.tools``).
        tokenizer: its chat template renders the prompt.
        n: the most cases.
    """
    cases: list[Case] = []
    if n <= 0 or not fmt.count:
        return cases  # an artifact without records (tests' hand-made splits) has no calls
    for record in fmt.records():
        if record.meta.get("split") != "eval" or record.kind != "chat" or not record.messages:
            continue
        messages = [m.model_dump() for m in record.messages]
        for i, m in enumerate(messages):
            # A call is the whole turn: a reply that merely quotes some JSON is not one.
            if m["role"] != "assistant" or m["content"].lstrip()[:1] not in ("{", "[", "<"):
                continue
            calls = M.parse_calls(m["content"])
            if calls is None:
                continue
            tools = record.meta.get("tools")
            # The tools in the prompt as format renders them: the model is asked for a call
            # with the functions it may call in view (format quarantined unreadable tools).
            prompt = tokenizer.apply_chat_template(
                messages[:i], add_generation_prompt=True, tokenize=False, tools=chat_tools(tools)
            )
            schema = M.tools_schema(tools)
            cases.append(Case(record.id, "function_call", prompt, m["content"], calls, tools, schema))
            break
        if len(cases) >= n:
            break
    return cases


def variants(mode: str) -> list[tuple[str, bool]]:
    """``[(label suffix, guided)]`` for ``evaluate.schema_guided``."""
    both = [("", False), ("_guided", True)]
    return {"off": [("", False)], "on": [("", True)], "both": both}[mode]


def answer_all(models, tokenizer, cases: list[Case], ev, vocab_size: int) -> None:
    """Fills ``case.answers[label]`` for every model and decoding variant.

    Args:
        models: ``[(name, factory of a context manager giving the model)]``.
        tokenizer: the tokenizer.
        cases: the cases (batched per task, so lengths in a batch stay alike).
        ev: the ``evaluate`` section.
        vocab_size: the model's output size (for the schema grammars).
    """
    compiler: SchemaCompiler | None = None
    for suffix, guided in variants(ev.schema_guided):
        for task in ("reply", "function_call"):
            group = [c for c in cases if c.task == task]
            # In a guided run a case without a schema answers freely: nothing constrains it.
            constrained = [c for c in group if guided and c.schema]
            free = [c for c in group if not (guided and c.schema)]
            grammars = None
            if constrained:
                compiler = compiler or SchemaCompiler(tokenizer, vocab_size)
                grammars = [
                    compiler.compile(bounded_schema(c.schema, ev.schema_max_string))
                    for c in constrained
                ]
            free_tokens = ev.max_new_tokens if task == "reply" else ev.max_new_tokens_json
            for name, model_of in models:
                label = name + suffix
                with model_of() as model:
                    for part, gram, tokens in (
                        (free, None, free_tokens),
                        (constrained, grammars, ev.max_new_tokens_json),
                    ):
                        if not part:
                            continue
                        answers = generate_batch(
                            model, tokenizer, [c.prompt for c in part], tokens,
                            ev.batch_size, gram, f"{label} {task}",
                        )
                        for case, answer in zip(part, answers, strict=True):
                            case.answers[label] = answer


def score_case(case: Case, label: str, ev) -> dict[str, Any]:
    """The metrics of one answer.

    Args:
        case: the case, answered.
        label: which answer (``base``, ``tuned``, ``base_guided``, ...).
        ev: the ``evaluate`` section (``metrics``, ``answer_pattern``).
    """
    answer = case.answers[label]
    scores: dict[str, Any] = {}
    if case.task == "function_call":
        result = M.function_call_accuracy(answer, case.calls or [], case.tools)
        scores["function_call"] = result.score
        scores["call_outcome"] = result.outcome
        scores["call_reason"] = result.reason
    else:
        if "rouge_l" in ev.metrics:
            scores["rouge_l"] = M.rouge_l(answer, case.reference)
        if "exact_match" in ev.metrics:
            scores["exact_match"] = M.exact_match(answer, case.reference, ev.answer_pattern)
    if case.schema:
        scores["schema_valid"] = float(M.schema_valid(answer, case.schema))
    return scores


def aggregate(cases: list[Case], labels: list[str]) -> dict[str, Any]:
    """``{metric: {label: mean}}`` over the cases that have the metric, with ``n``; the
    function-call counts (``parse_failures``, ``wrong_name``, ...) under ``function_call``."""
    out: dict[str, Any] = {}
    for metric in ("rouge_l", "exact_match", "schema_valid"):
        scored = [c for c in cases if metric in c.scores.get(labels[0], {})]
        if scored:
            out[metric] = {"n": len(scored)} | {
                label: sum(c.scores[label][metric] for c in scored) / len(scored)
                for label in labels
            }
    calls = [c for c in cases if c.task == "function_call"]
    if calls:
        out["function_call"] = {
            label: M.call_counts(
                M.CallResult(c.scores[label]["call_outcome"]) for c in calls
            )
            for label in labels
        } | {"n": len(calls)}
    return out


def write_examples(out: ArtifactWriter, cases: list[Case], tokenizer, labels: list[str]) -> None:
    """``examples.jsonl``: one line per case with its prompt (plain), reference, every answer
    and its scores.

    Args:
        out: the artifact writer.
        cases: the answered, scored cases.
        tokenizer: renders the prompt as plain text.
        labels: the answers' labels, in order.
    """
    with open(out.file("examples.jsonl"), "w", encoding="utf-8") as fh:
        for c in cases:
            row = {"id": c.id, "task": c.task, "prompt": plain(tokenizer, c.prompt),
                   "reference": c.reference}
            row |= {label: c.answers[label] for label in labels}
            row["scores"] = {label: c.scores[label] for label in labels}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def task_metrics(fmt, rows, tokenizer, models, ev, vocab_size: int, out) -> tuple[dict, list[Case]]:
    """Generates, scores and saves the task-metric answers; ``(report["metrics"], cases)``.

    Args:
        fmt: the format artifact (records, for function calls).
        rows: the eval split rows.
        tokenizer: the tokenizer.
        models: see :func:`answer_all`.
        ev: the ``evaluate`` section.
        vocab_size: the model's output size.
        out: receives ``examples.jsonl``.
    """
    schema = load_schema(ev.json_schema)
    reply_metrics = {"rouge_l", "exact_match"} & set(ev.metrics) or schema is not None
    n_replies = ev.max_generate if reply_metrics else 0
    # The report's samples come from the same answers.
    cases = reply_cases(rows, tokenizer, max(n_replies, ev.num_samples), schema)
    if "function_call" in ev.metrics:
        cases += call_cases(fmt, tokenizer, ev.max_generate)
    if not cases:
        return ({"function_call": {"n": 0, "note": "no eval record has a function call"},
                 "labels": []} if "function_call" in ev.metrics else {}), []
    answer_all(models, tokenizer, cases, ev, vocab_size)
    labels = [name + suffix for suffix, _ in variants(ev.schema_guided) for name, _ in models]
    scored = [c for c in cases if c.task == "function_call"] + [
        c for c in cases if c.task == "reply"
    ][:n_replies]
    for c in scored:
        c.scores = {label: score_case(c, label, ev) for label in labels}
    write_examples(out, scored, tokenizer, labels)
    metrics = aggregate(scored, labels) if scored else {}
    if "function_call" in ev.metrics and "function_call" not in metrics:
        # Said in the report rather than dropped silently: the metric was asked for.
        metrics["function_call"] = {
            "n": 0,
            "note": "no eval record has an assistant turn that is a function call",
        }
    if metrics:
        metrics["labels"] = labels
    return metrics, cases


# -------------------------------------------------------------------------------- report


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " …"


METRIC_NAMES = {
    "rouge_l": "ROUGE-L F1",
    "exact_match": "exact match",
    "schema_valid": "schema-valid JSON",
}


def metrics_table(m: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per task metric, one column per model (and decoding), plus the
    function-call outcome counts."""
    labels = m.get("labels") or []
    if not labels:
        note = (m.get("function_call") or {}).get("note")
        return ["", f"function_call: {note}."] if note else []
    lines = ["", "### Task metrics (greedy answers)", "",
             "| metric | n | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for key, title in METRIC_NAMES.items():
        if key in m:
            cells = " | ".join(f"{m[key][label]:.3f}" for label in labels)
            lines.append(f"| {title} | {m[key]['n']} | {cells} |")
    if m.get("function_call", {}).get("n") == 0:
        lines += ["", f"function_call: {m['function_call']['note']}."]
    elif "function_call" in m:
        fc = m["function_call"]
        lines.append(
            f"| function-call accuracy | {fc['n']} | "
            + " | ".join(f"{fc[label]['accuracy']:.3f}" for label in labels) + " |"
        )
        lines += ["", "| function calls | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        for key in ("correct", "wrong_args", "wrong_name", "parse_failures"):
            lines.append(f"| {key} | " + " | ".join(str(fc[label][key]) for label in labels) + " |")
    return lines


def harness_table(h: dict[str, Any] | None) -> list[str]:
    """Markdown lines: every lm-eval task metric, base and tuned."""
    if not h:
        return []
    lines = ["", "### lm-evaluation-harness", "", "| task | metric | base | tuned |", "|---|---|---|---|"]
    for task, scores in h["tuned"].items():
        for metric, value in scores.items():
            if metric.endswith("_stderr") or metric == "n_samples" or not isinstance(value, int | float):
                continue
            b = h["base"].get(task, {}).get(metric)
            lines.append(f"| {task} ({scores.get('n_samples', '?')}) | {metric} | {b:.3f} | {value:.3f} |")
    return lines


def judge_table(j: dict[str, Any] | None) -> list[str]:
    """Markdown lines: rubric means per model, pairwise win/tie/loss, unparseable counts."""
    if not j:
        return []
    lines = ["", f"### LLM judge ({j['judge'].get('model', '?')})", "", "| | base | tuned |", "|---|---|---|"]
    for criterion in [*j.get("rubric", {}), "overall"]:
        b, t = (j[side].get("mean", {}).get(criterion) if criterion != "overall" else j[side].get("overall")
                for side in ("base", "tuned"))
        lines.append(f"| {criterion} (1-5) | {_num(b)} | {_num(t)} |")
    lines.append(f"| unparseable judgments | {j['base'].get('unparseable', 0)} | {j['tuned'].get('unparseable', 0)} |")
    pw = j.get("pairwise")
    if pw:
        lines += [
            "",
            f"Pairwise, tuned vs base, both orders asked ({pw.get('decided', 0)} of {pw.get('n', 0)} decided, "
            f"{pw.get('unparseable', 0)} unparseable): win {_num(pw.get('win_rate'))}, tie "
            f"{_num(pw.get('tie_rate'))}, loss {_num(pw.get('loss_rate'))}.",
        ]
    return lines


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else "-"


def summary(r: dict[str, Any]) -> str:
    """Loss and perplexity base vs tuned, and sample answers side by side."""
    b, t = r["base"], r["tuned"]
    lines = [
        "## evaluate",
        f"{r['n_examples']} held-out examples; loss = mean token NLL (nats), ppl = exp(loss).",
        "",
        "| model | loss (completion) | ppl (completion) | loss (all tokens) | ppl (all tokens) |",
        "|---|---|---|---|---|",
        f"| base | {b['loss_completion']:.4f} | {b['ppl_completion']:.2f} | {b['loss_all']:.4f} | {b['ppl_all']:.2f} |",
        f"| tuned | {t['loss_completion']:.4f} | {t['ppl_completion']:.2f} | {t['loss_all']:.4f} | {t['ppl_all']:.2f} |",
        "",
        f"Δ loss (tuned − base): {r['delta_loss']:+.4f} — "
        + ("**improved**." if r["improved"] else "**not improved**."),
    ]
    lines += metrics_table(r.get("metrics") or {})
    lines += harness_table(r.get("harness"))
    lines += judge_table(r.get("judge"))
    if r["samples"]:
        lines += ["", "### Samples (greedy)", ""]
        for i, s in enumerate(r["samples"], 1):
            lines += [
                f"**{i}. Prompt:** {_cell(s['prompt'], 400)}",
                "",
                "| | answer |",
                "|---|---|",
                f"| reference | {_cell(s['reference'])} |",
                f"| base | {_cell(s['base'])} |",
                f"| tuned | {_cell(s['tuned'])} |",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------ run


def load_trained(cfg, trained: Artifact, tokenizer):
    """The tuned model, and a context manager giving the base to compare it with.

    An adapter (``adapter/``) goes onto the rebuilt base, so one model in memory serves both
    (PEFT's ``disable_adapter`` gives the base back); a fully trained model (``model/``, from
    train.adapter full or hft) loads beside a rebuilt base.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    # bf16 halves a real model's memory on a GPU; the tiny model is always built in float32.
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    base = load_base_model(cfg.model, tokenizer, dtype=dtype)
    if (trained.path / "model").is_dir():
        tuned = AutoModelForCausalLM.from_pretrained(trained.path / "model", dtype=dtype or "auto")
        base = base.to(device).eval()
        return tuned.to(device).eval(), lambda: contextlib.nullcontext(base)
    model = PeftModel.from_pretrained(base, trained.path / "adapter").to(device).eval()

    @contextlib.contextmanager
    def adapter_off():
        with model.disable_adapter():
            yield model

    return model, adapter_off


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Scores base and tuned model on the eval split and samples a few answers from each.

    Args:
        inputs: ``[format artifact, train artifact]`` (eval split; ``adapter/`` and ``tokenizer/``).
        cfg: the ``evaluate`` and ``model`` sections decide the output.
        out: receives ``report.md``, ``examples.jsonl`` (every generated answer and its
            scores) and the report (``report.json``).

    Raises:
        InputError: the eval split is empty.
        ConfigError: ``evaluate.json_schema`` is not a readable schema.
        NonFiniteError: the base or the tuned model's eval loss is NaN or infinite.
    """
    fmt, trained = inputs
    ev = cfg.evaluate
    rows = load_split(fmt, "eval")[: ev.max_examples]
    if not rows:
        raise InputError(
            f"evaluate: the eval split of format artifact {fmt.ref.short} is empty; raise "
            "format.eval_fraction or add data, then re-run format"
        )
    load_schema(ev.json_schema)  # a bad schema fails now, not after the models have run
    tokenizer = load_tokenizer(cfg.model, trained.path / "tokenizer")
    model, as_base = load_trained(cfg, trained, tokenizer)

    max_length = min(ev.max_length, getattr(model.config, "max_position_embeddings", ev.max_length))
    examples = [sft_example(r, tokenizer.eos_token) for r in rows]
    encoded = [encode(tokenizer, ex, max_length) for ex in examples]
    batches = [encoded[i : i + ev.batch_size] for i in range(0, len(encoded), ev.batch_size)]
    pad_id = tokenizer.pad_token_id  # load_tokenizer falls back to eos when a model has none

    with as_base() as base_model:
        base = score(base_model, batches, pad_id, "base")
    tuned = score(model, batches, pad_id, "tuned")

    models = [("base", as_base), ("tuned", lambda: contextlib.nullcontext(model))]
    metrics, cases = task_metrics(fmt, rows, tokenizer, models, ev, output_vocab_size(model), out)
    samples = [
        {
            "id": c.id,
            "prompt": plain(tokenizer, c.prompt),
            "reference": c.reference,
            "base": c.answers["base"],
            "tuned": c.answers["tuned"],
        }
        for c in [c for c in cases if c.task == "reply"][: ev.num_samples]
    ]

    if ev.harness is not None:
        with as_base() as base_model:
            harness_base = run_harness(base_model, tokenizer, ev.harness)
        harness = {"base": harness_base, "tuned": run_harness(model, tokenizer, ev.harness)}
    judged = None
    if ev.judge is not None:
        items = [
            {
                "id": c.id,
                "prompt": plain(tokenizer, c.prompt),
                "reference": c.reference,
                "tuned": c.answers["tuned"],
                "base": c.answers["base"],
            }
            for c in cases
            if c.task == "reply"
        ]
        judged = judge(ev.judge, items)

    delta = tuned["loss"] - base["loss"]
    report: dict[str, Any] = {
        "base": base,
        "tuned": tuned,
        "delta_loss": delta,
        "improved": delta < 0,
        "n_examples": len(rows),
        "max_length": max_length,
        "samples": samples,
        "metrics": metrics,
        "schema_guided": ev.schema_guided,
    }
    if ev.harness is not None:
        report["harness"] = harness
    if judged is not None:
        report["judge"] = judged
    out.file("report.md").write_text(summary(report))
    out.report.update(report)


def source_keys(cfg) -> list[str]:
    """Content hashes of the files evaluate reads from outside the store: the lm-eval task
    folders (YAMLs and their data) and a ``json_schema`` file, so editing one re-runs evaluate."""
    ev = cfg.evaluate
    files: list[Path] = []
    if ev.harness is not None:
        for folder in ev.harness.task_dirs:
            files += sorted(p for p in Path(folder).rglob("*") if p.is_file())
    if isinstance(ev.json_schema, str) and not ev.json_schema.strip().startswith(("{", "[")):
        path = Path(ev.json_schema).expanduser()
        files += [path] if path.is_file() else []
    return [f"{p.name}:{hash_bytes_of(p)}" for p in files]


def preflight(cfg) -> None:
    """Before the first stage: the judge's key variable is set, the lm-eval task folders exist
    and hold every task named (with their data files), and a json_schema file reads."""
    ev = cfg.evaluate
    checks = [lambda: load_schema(ev.json_schema)]
    if ev.judge is not None:
        checks.append(lambda: check_key_is_set(ev.judge.teacher, JUDGE_WHERE))
    if ev.harness is not None:
        checks.append(lambda: check_tasks(ev.harness))
    problems = []
    for check in checks:  # all of them: one refusal names every problem
        try:
            check()
        except (TunelineError, ValueError) as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))


def headline(report: dict[str, Any]) -> dict[str, float]:
    """Followed from run to run: eval loss base and tuned, each task metric of the tuned model,
    and the judge's pairwise win rate."""
    out = {"eval_loss_base": report["base"]["loss"], "eval_loss_tuned": report["tuned"]["loss"]}
    for name, scores in (report.get("metrics") or {}).items():
        if isinstance(scores, dict) and isinstance(scores.get("tuned"), int | float):
            out[f"{name}_tuned"] = scores["tuned"]
    fc = (report.get("metrics") or {}).get("function_call") or {}
    if isinstance(fc.get("tuned"), dict) and "accuracy" in fc["tuned"]:
        out["function_call_tuned"] = fc["tuned"]["accuracy"]
    win = ((report.get("judge") or {}).get("pairwise") or {}).get("win_rate")
    if isinstance(win, int | float):
        out["judge_win_rate"] = win
    return out


def highlights(report: dict[str, Any]) -> str:
    if "base" not in report or "tuned" not in report:
        return ""
    b, t = report["base"], report["tuned"]
    return f"eval loss {b['loss']:.3f} -> {t['loss']:.3f}, ppl {b['ppl']:.1f} -> {t['ppl']:.1f}"


STAGE = Stage(
    name="evaluate",
    version=3,  # 3: function-call prompts list the record's tools
    config=EvaluateConfig,
    run=run,
    summary=summary,
    inputs=("format", "train"),
    uses=("model",),
    records=False,
    highlights=highlights,
    headline=headline,
    source_keys=source_keys,
    preflight=preflight,
    description="Held-out evaluation.",
)
