"""format: renders records with the model's chat template into train/eval splits.

This is where the data meets the model. The stage fixes the tokenizer for the rest of the
pipeline (trained on the corpus for the offline tiny model, loaded from the base model
otherwise) and saves it under ``tokenizer/``, so train and evaluate tokenize exactly as the
splits were counted here. Each record becomes one prompt/completion row, rendered with the chat
template (``splits/train.jsonl.gz``, ``splits/eval.jsonl.gz``); the split is a salted hash of
the record id, so the same record lands on the same side on every run and adding data never
moves old records across. Long examples are counted, not cut: the trainer truncates at its own
``max_length``. The kept records also go out in the common schema (with ``meta.split``) and as
Alpaca / ShareGPT / preference files for users of other tools.

Rows of the split files are ``tuneline.splits.SplitRow`` (train, evaluate and export read
them through ``tuneline.splits.read_split``)::

    {"id", "kind": "text"|"chat"|"preference", "prompt", "completion",
     "rejected_completion" (preference only), "text" (= prompt + completion),
     "n_tokens" (tokens of text), "truncated" (n_tokens > format.max_length)}

Every row is validated through ``SplitRow`` before it is written: one that does not fit is a
bug in ``render`` and fails the stage.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Literal

import numpy as np
from jinja2 import TemplateError
from pydantic import Field

from tuneline import shapes
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.models import CHATML_TEMPLATE, load_tokenizer, train_tokenizer
from tuneline.progress import track
from tuneline.records import Record, dump_jsonl_gz
from tuneline.sections import Section
from tuneline.splits import SPLITS, SplitRow
from tuneline.stage import Stage

# -------------------------------------------------------------------------------- format


class FormatConfig(Section):
    chat_template: Literal["auto", "chatml"] = Field(
        default="auto", description="auto: the tokenizer's own template (ChatML if it has none)."
    )
    eval_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of records held out for eval (by id hash).")
    max_length: int = Field(default=512, ge=16, description="Token budget per example; longer ones are truncated and counted.")
    split_seed: int = Field(default=0, description="Salt of the id hash that splits train/eval.")



class RenderError(ValueError):
    """A record the chat template cannot turn into a prompt/completion pair."""

    reason = "render_error"


class NoAssistantTurn(RenderError):
    """A chat that ends on a user (or tool) turn: there is no reply to learn."""

    reason = "no_assistant_turn"


# ------------------------------------------------------------------------------ tokenizer


def build_tokenizer(inputs: list[Artifact], cfg) -> tuple[Any, dict[str, Any]]:
    """The tokenizer every later stage uses, and a description of it for the report.

    Args:
        inputs: the augment artifact; its strings train the BPE of the offline tiny model.
        cfg: ``model.name_or_path`` (load) or ``model.tiny.vocab_size`` (train), and
            ``format.chat_template``.
    """
    if cfg.model.name_or_path is None:
        texts = (s for r in inputs[0].records() for s in r.strings())
        tok = train_tokenizer(track(texts, "format: training tokenizer"), cfg.model.tiny.vocab_size)
        info = {"origin": "trained", "source": f"{inputs[0].ref.stage}/{inputs[0].ref.short}"}
    else:
        tok = load_tokenizer(cfg.model)
        info = {"origin": "loaded", "source": cfg.model.name_or_path}
    # Base (non-instruct) models often ship without a template; ChatML is the common default.
    if cfg.format.chat_template == "chatml" or not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    info["chat_template"] = "chatml" if tok.chat_template == CHATML_TEMPLATE else "model's own"
    info["vocab_size"] = len(tok)
    return tok, info


# ------------------------------------------------------------------------------ rendering


def _messages(record: Record) -> list[dict[str, str]]:
    return [m.model_dump() for m in record.messages or []]


def _apply_template(tok, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return tok.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except TemplateError as e:  # the template's own checks, e.g. "roles must alternate"
        raise RenderError(f"the chat template refused the record: {e}") from e


def _reply_after(tok, prompt_messages: list[dict[str, str]], reply: str, prompt: str) -> str:
    """The rendering of ``reply`` as the next assistant turn: full conversation minus the prompt."""
    full = _apply_template(tok, [*prompt_messages, {"role": "assistant", "content": reply}], False)
    # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix property,
    # and with it any prompt/completion loss mask: refuse rather than train on a wrong mask.
    if not full.startswith(prompt):
        raise RenderError(
            "the chat template renders the prompt differently inside the full conversation, "
            "so the completion cannot be split off; set format.chat_template=chatml"
        )
    return full[len(prompt) :]


def render(record: Record, tok) -> dict[str, Any]:
    """The fields of one ``SplitRow`` for ``record``, all but ``n_tokens``/``truncated``.

    Args:
        record: a kept record of any kind.
        tok: the tokenizer with its chat template set.

    Raises:
        RenderError: the chat does not end with an assistant turn, or the template fails.
    """
    row: dict[str, Any] = {"id": record.id, "kind": record.kind}
    if record.kind == "text":
        # The eos teaches a base model where a document stops.
        row["prompt"], row["completion"] = "", record.text + (tok.eos_token or "")
    elif record.kind == "chat":
        messages = _messages(record)
        if messages[-1]["role"] != "assistant":
            raise NoAssistantTurn(
                f"the chat ends with a {messages[-1]['role']} turn, not an assistant reply"
            )
        context = messages[:-1]
        row["prompt"] = _apply_template(tok, context, True)
        row["completion"] = _reply_after(tok, context, messages[-1]["content"], row["prompt"])
    else:  # preference
        context = _messages(record)
        row["prompt"] = _apply_template(tok, context, True)
        row["completion"] = _reply_after(tok, context, record.chosen, row["prompt"])
        row["rejected_completion"] = _reply_after(tok, context, record.rejected, row["prompt"])
    row["text"] = row["prompt"] + row["completion"]
    return row


def count_tokens(tok, text: str) -> int:
    # The text is already fully rendered (template markers included), so add nothing.
    return len(tok(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------------------- split


def hash_fraction(seed: int, record_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, id): the record's place in the split."""
    digest = hashlib.sha256(f"{seed}\x1f{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(ids: list[str], seed: int, eval_fraction: float) -> dict[str, str]:
    """``{id: "train"|"eval"}``: eval when the id's hash fraction is below ``eval_fraction``.

    With two or more records each side gets at least one, moving the record nearest the
    threshold (deterministically), so train and evaluate never start on an empty split.
    A single record goes to train: there is nothing to learn from otherwise.
    """
    frac = {i: hash_fraction(seed, i) for i in ids}
    split = {i: "eval" if f < eval_fraction else "train" for i, f in frac.items()}
    ranked = sorted(frac, key=lambda i: (frac[i], i))
    if len(ranked) == 1:
        split[ranked[0]] = "train"
    elif len(ranked) >= 2:
        if "eval" not in split.values():
            split[ranked[0]] = "eval"
        if "train" not in split.values():
            split[ranked[-1]] = "train"
    return split


# -------------------------------------------------------------------------------- exports


def write_exports(kept: list[Record], out: ArtifactWriter) -> dict[str, int]:
    """Writes ``exports/`` (alpaca.json, sharegpt.json, preference.jsonl); returns their counts.

    Each row is its shape's ``dump`` (``tuneline.shapes``), the inverse of what ingest parses.
    """
    alpaca, not_alpaca = [], 0
    sharegpt, preference = [], []
    for r in kept:
        if r.kind == "chat":
            row = shapes.alpaca.dump(r)
            if row is None:
                not_alpaca += 1
            else:
                alpaca.append(row)
            sharegpt.append(shapes.sharegpt.dump(r))
        elif r.kind == "preference":
            preference.append(shapes.preference.dump(r))
    out.file("exports/alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False, indent=1))
    out.file("exports/sharegpt.json").write_text(json.dumps(sharegpt, ensure_ascii=False, indent=1))
    with open(out.file("exports/preference.jsonl"), "w", encoding="utf-8") as fh:
        for row in preference:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "alpaca": len(alpaca),
        "alpaca_not_expressible": not_alpaca,  # multi-turn or tool chats
        "sharegpt": len(sharegpt),
        "preference": len(preference),
    }


# --------------------------------------------------------------------------------- report


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    a = np.asarray(lengths)
    return {
        "min": int(a.min()),
        "mean": round(float(a.mean()), 1),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": int(a.max()),
    }


def split_report(rows: dict[str, list[SplitRow]], cfg) -> dict[str, Any]:
    """Counts per split and kind, token-length stats and truncation, from the split rows."""
    n_rows = sum(len(rows[s]) for s in SPLITS)
    n_truncated = sum(r.truncated for s in SPLITS for r in rows[s])
    splits = {}
    for s in SPLITS:
        kinds = Counter(r.kind for r in rows[s])
        splits[s] = {
            "records": len(rows[s]),
            "by_kind": {k: kinds[k] for k in ("chat", "preference", "text") if kinds[k]},
            "truncated": sum(r.truncated for r in rows[s]),
        }
    return {
        "max_length": cfg.format.max_length,
        "splits": splits,
        "tokens": {s: length_stats([r.n_tokens for r in rows[s]]) for s in SPLITS},
        "truncated": {"count": n_truncated, "share": round(n_truncated / max(n_rows, 1), 4)},
    }


def summary(report: dict[str, Any]) -> str:
    """Split sizes, token lengths, truncation and one rendered example."""
    t = report["tokenizer"]
    example = report.get("example")
    lines = [
        "## format",
        f"Tokenizer: {t['origin']} from `{t['source']}`, {t['vocab_size']} tokens,"
        + f" template: {t['chat_template']}.",
        "",
        "| split | records | by kind | tokens min / p50 / p95 / max | truncated |",
        "|---|---|---|---|---|",
    ]
    for s in SPLITS:
        st, tk = report["splits"][s], report["tokens"][s]
        kinds = ", ".join(f"{k}: {n}" for k, n in st["by_kind"].items()) or "-"
        lengths = f"{tk['min']} / {tk['p50']:g} / {tk['p95']:g} / {tk['max']}"
        lines.append(f"| {s} | {st['records']} | {kinds} | {lengths} | {st['truncated']} |")
    tr = report["truncated"]
    lines.append("")
    lines.append(
        f"{tr['count']} examples ({tr['share']:.1%}) exceed format.max_length="
        f"{report['max_length']} tokens; the trainer truncates them."
    )
    if example is not None:
        shown = (
            example["text"] if len(example["text"]) <= 1500 else example["text"][:1500] + "\n[...]"
        )
        lines += [
            "",
            f"Example ({example['kind']}, {example['n_tokens']} tokens):",
            "",
            "```",
            shown,
            "```",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Fixes the tokenizer, renders and splits the records, writes splits, records and exports.

    Args:
        inputs: ``[augment artifact]``.
        cfg: the ``format`` and ``model`` sections decide the output.
        out: receives ``tokenizer/``, ``splits/*.jsonl.gz``, ``exports/``, the kept records
            (with ``meta.split``) and the rejected ones (``no_assistant_turn``, ``render_error``).
    """
    fmt = cfg.format
    tok, tok_info = build_tokenizer(inputs, cfg)
    tok.save_pretrained(str(out.file("tokenizer/tokenizer_config.json").parent))

    # Rendered rows stay in memory: the split needs every kept id before any row is written.
    kept: list[tuple[Record, SplitRow]] = []
    for record in track(inputs[0].records(), "format: rendering"):
        try:
            fields = render(record, tok)
        except RenderError as e:
            out.reject(record, e.reason, error=str(e))
            continue
        n_tokens = count_tokens(tok, fields["text"])
        # Not caught: a rendered row that does not fit the schema train and evaluate read is
        # a bug here, not a bad record to reject.
        row = SplitRow.model_validate(
            {**fields, "n_tokens": n_tokens, "truncated": n_tokens > fmt.max_length}
        )
        kept.append((record, row))
    if not kept:
        why = dict(out.reasons) or "the input is empty"
        raise InputError(
            f"format: none of the input records could be rendered ({why}); check the rejected/ "
            f"files of {inputs[0].ref.stage}/{inputs[0].ref.short} and of the stages before it"
        )

    split_of = assign_splits([r.id for r, _ in kept], fmt.split_seed, fmt.eval_fraction)
    rows: dict[str, list[SplitRow]] = {s: [] for s in SPLITS}
    records: list[Record] = []
    for record, row in kept:
        split = split_of[record.id]
        rows[split].append(row)
        record = record.model_copy(update={"meta": {**record.meta, "split": split}})
        records.append(record)
        out.write(record)
    for s in SPLITS:
        with open(out.file(f"splits/{s}.jsonl.gz"), "wb") as fh:
            dump_jsonl_gz((r.to_json() for r in rows[s]), fh)

    report = split_report(rows, cfg)
    report["tokenizer"] = tok_info
    report["exports"] = write_exports(records, out)
    example = next((r for s in SPLITS for r in rows[s] if r.kind == "chat"), kept[0][1])
    report["example"] = {"kind": example.kind, "n_tokens": example.n_tokens, "text": example.text}
    out.report.update(report)


def check_lengths_fit_model(cfg) -> None:
    """format.max_length must fit the tiny model's positions."""
    cfg.model.check_fits("format.max_length", cfg.format.max_length)


STAGE = Stage(
    name="format",
    version=1,
    config=FormatConfig,
    run=run,
    summary=summary,
    inputs=("augment",),
    uses=("model",),
    check=check_lengths_fit_model,
    description="Templates and train/eval split.",
)
