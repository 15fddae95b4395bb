"""format: renders records with the model's chat template into train/eval splits.

This is where the data meets the model. The stage fixes the tokenizer for the rest of the
pipeline (trained on the corpus for the offline tiny model, loaded from the base model
otherwise) and saves it under ``tokenizer/``, so train and evaluate tokenize exactly as the
splits were counted here. Each record becomes one prompt/completion row, rendered with the chat
template (``splits/train.jsonl.gz``, ``splits/eval.jsonl.gz``); the split is a salted hash of
the record id, so the same record lands on the same side on every run and adding data never
moves old records across. Long examples are counted, not cut: the trainer truncates at its own
``max_length``. The kept records also go out in the common schema (with ``meta.split``) and as
Alpaca / ShareGPT / preference files for users of other tools. The split needs every kept id
before a row can be placed, so the rendered rows wait in a scratch file (not in memory) and
everything is written as it is read back: memory does not grow with the data beyond the ids
and token counts.

Rows of the split files are ``tuneline.splits.SplitRow`` (train, evaluate and export read
them through ``tuneline.splits.read_split``)::

    {"id", "kind": "text"|"chat"|"preference", "prompt", "completion",
     "rejected_completion" (preference only), "text" (= prompt + completion),
     "n_tokens" (tokens of text), "truncated" (n_tokens > format.max_length)}

Every row is validated through ``SplitRow`` before it is written: one that does not fit is a
bug in ``render`` and fails the stage.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from jinja2 import TemplateError
from pydantic import Field

from tuneline import shapes
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.models import (
    CHATML_TEMPLATE,
    chat_tools,
    load_tokenizer,
    renders_tools,
    train_tokenizer,
)
from tuneline.progress import track
from tuneline.records import Record, load_jsonl_gz
from tuneline.scratch import scratch_dir
from tuneline.sections import Section
from tuneline.splits import SPLITS, SplitRow, method_counts_from_kinds
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


class BadTools(RenderError):
    """A record whose tool specs (``meta.tools``) cannot be given to the chat template."""

    reason = "bad_tools"


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
    info["renders_tools"] = renders_tools(tok)
    info["vocab_size"] = len(tok)
    return tok, info


# ------------------------------------------------------------------------------ rendering


def _messages(record: Record) -> list[dict[str, str]]:
    return [m.model_dump() for m in record.messages or []]


def _tools(record: Record) -> list[dict[str, Any]] | None:
    try:
        return chat_tools(record.meta.get("tools"))
    except ValueError as e:
        raise BadTools(str(e)) from None


def _apply_template(tok, messages: list[dict[str, str]], add_generation_prompt: bool, tools=None) -> str:
    # The record's tools go to the template, which lists them where the model expects them
    # (ChatML: in the system turn); a model never shown a tool cannot learn to call it.
    try:
        return tok.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, tools=tools
        )
    except TemplateError as e:  # the template's own checks, e.g. "roles must alternate"
        raise RenderError(f"the chat template refused the record: {e}") from e


def _reply_after(tok, prompt_messages: list[dict[str, str]], reply: str, prompt: str, tools=None) -> str:
    """The rendering of ``reply`` as the next assistant turn: full conversation minus the prompt."""
    full = _apply_template(tok, [*prompt_messages, {"role": "assistant", "content": reply}], False, tools)
    # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix property,
    # and with it any prompt/completion loss mask: refuse rather than train on a wrong mask.
    if not full.startswith(prompt):
        raise RenderError(
            "the chat template renders the prompt differently inside the full conversation, "
            "so the completion cannot be split off; set format.chat_template=chatml"
        )
    return full[len(prompt) :]


def render(record: Record, tok, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The fields of one ``SplitRow`` for ``record``, all but ``n_tokens``/``truncated``.

    Args:
        record: a kept record of any kind.
        tok: the tokenizer with its chat template set.
        tools: the record's tools already read (``_tools``); None reads them here.

    Raises:
        RenderError: the chat does not end with an assistant turn, or the template fails.
    """
    row: dict[str, Any] = {"id": record.id, "kind": record.kind}
    if tools is None and record.kind != "text":
        tools = _tools(record)
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
        row["prompt"] = _apply_template(tok, context, True, tools)
        row["completion"] = _reply_after(tok, context, messages[-1]["content"], row["prompt"], tools)
    else:  # preference
        context = _messages(record)
        row["prompt"] = _apply_template(tok, context, True, tools)
        row["completion"] = _reply_after(tok, context, record.chosen, row["prompt"], tools)
        row["rejected_completion"] = _reply_after(tok, context, record.rejected, row["prompt"], tools)
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


class JsonListWriter:
    """Writes a JSON list one item at a time, byte for byte what
    ``json.dumps(items, ensure_ascii=False, indent=1)`` gives for the whole list.

    Lets the exports grow with the data on disk instead of in memory. Indenting an item's own
    ``indent=1`` dump by one more space is exact because JSON escapes newlines inside strings:
    every raw newline in the dump is a structural one.

    Args:
        fh: a text file open for writing, positioned at the start.
    """

    def __init__(self, fh: IO[str]):
        self.fh = fh
        self.count = 0
        fh.write("[")

    def add(self, item: Any) -> None:
        body = json.dumps(item, ensure_ascii=False, indent=1).replace("\n", "\n ")
        self.fh.write(("\n " if self.count == 0 else ",\n ") + body)
        self.count += 1

    def close(self) -> None:
        self.fh.write("\n]" if self.count else "]")


class ExportWriter:
    """Writes ``exports/`` (alpaca.json, sharegpt.json, preference.jsonl) record by record.

    Each row is its shape's ``dump`` (``tuneline.shapes``), the inverse of what ingest parses.
    Use as a context manager around the ``add`` calls; ``counts`` is for the report.

    Args:
        out: the artifact the files go into.
    """

    def __init__(self, out: ArtifactWriter):
        self.out = out
        self.not_alpaca = 0
        self.n_preference = 0
        self._files = ExitStack()

    def __enter__(self) -> ExportWriter:
        def text_file(name: str) -> IO[str]:
            return self._files.enter_context(open(self.out.file(name), "w", encoding="utf-8"))

        self.alpaca = JsonListWriter(text_file("exports/alpaca.json"))
        self.sharegpt = JsonListWriter(text_file("exports/sharegpt.json"))
        self.preference = text_file("exports/preference.jsonl")
        return self

    def add(self, record: Record) -> None:
        if record.kind == "chat":
            row = shapes.alpaca.dump(record)
            if row is None:
                self.not_alpaca += 1
            else:
                self.alpaca.add(row)
            self.sharegpt.add(shapes.sharegpt.dump(record))
        elif record.kind == "preference":
            self.preference.write(
                json.dumps(shapes.preference.dump(record), ensure_ascii=False) + "\n"
            )
            self.n_preference += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:  # a half-written list is discarded with the artifact anyway
                self.alpaca.close()
                self.sharegpt.close()
        finally:
            self._files.close()

    def counts(self) -> dict[str, int]:
        return {
            "alpaca": self.alpaca.count,
            "alpaca_not_expressible": self.not_alpaca,  # multi-turn or tool chats
            "sharegpt": self.sharegpt.count,
            "preference": self.n_preference,
        }


# --------------------------------------------------------------------------------- report


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
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


class SplitStats:
    """What the report needs of one split, gathered as its rows go by (not the rows)."""

    def __init__(self) -> None:
        # 8 bytes a row: the percentiles need every length, but not the rows they came from.
        self.n_tokens = array("q")
        self.kinds: Counter[str] = Counter()
        self.truncated = 0

    def add(self, kind: str, n_tokens: int, truncated: bool) -> None:
        self.n_tokens.append(n_tokens)
        self.kinds[kind] += 1
        self.truncated += truncated


def split_report(stats: dict[str, SplitStats], cfg) -> dict[str, Any]:
    """Counts per split and kind, rows each training method can use, token-length stats and
    truncation.

    Args:
        stats: the ``SplitStats`` of each split in ``SPLITS``.
        cfg: ``format.max_length`` is reported with the truncation counts.
    """
    n_rows = sum(len(stats[s].n_tokens) for s in SPLITS)
    n_truncated = sum(stats[s].truncated for s in SPLITS)
    splits = {}
    for s in SPLITS:
        kinds = stats[s].kinds
        splits[s] = {
            "records": len(stats[s].n_tokens),
            "by_kind": {k: kinds[k] for k in ("chat", "preference", "text") if kinds[k]},
            "truncated": stats[s].truncated,
        }
    return {
        "max_length": cfg.format.max_length,
        "splits": splits,
        # How many rows each training method can use (tuneline.splits.METHOD_ROWS): a
        # preference method on a split without preference rows shows 0 here, before train.
        "rows_per_method": {s: method_counts_from_kinds(stats[s].kinds) for s in SPLITS},
        "tokens": {s: length_stats(stats[s].n_tokens) for s in SPLITS},
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
    per_method = report.get("rows_per_method")  # absent from reports of older runs
    if per_method:
        lines.append("")
        lines.append(
            "Train rows per method: "
            + ", ".join(f"{m} {n}" for m, n in per_method["train"].items())
            + " (kto makes two examples of each)."
        )
    n_tools = report.get("records_with_tools", 0)
    if n_tools:
        shown = "listed in each prompt" if t.get("renders_tools") else (
            "NOT shown to the model: its chat template ignores tools (format.chat_template=chatml renders them)"
        )
        lines += ["", f"{n_tools} records carry tools, {shown}."]
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


class JsonlGzWriter:
    """An open split file that takes one row at a time: the bytes ``dump_jsonl_gz`` writes
    for the same rows (same gzip header, mtime 0, one write per line), so a split written
    while rows stream by is the file the whole list would have given.

    Args:
        path: the file to create.
        compresslevel: gzip level (9, ``dump_jsonl_gz``'s, for files in the artifact).
    """

    def __init__(self, path: Path, compresslevel: int = 9):
        self._fh = open(path, "wb")
        try:
            self._gz = gzip.GzipFile(
                fileobj=self._fh, mode="wb", mtime=0, compresslevel=compresslevel
            )
        except BaseException:
            self._fh.close()
            raise

    def write(self, row: Any) -> None:
        self._gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._fh.close()

    def __enter__(self) -> JsonlGzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def render_all(
    inputs: list[Artifact], tok, fmt: FormatConfig, out: ArtifactWriter, spill: Path
) -> tuple[list[str], int]:
    """Pass 1: renders every record, rejects the unrenderable, and spills the kept ones.

    Each line of ``spill`` is ``[record, row]`` (both as JSON) for one kept record, in input
    order. The rows go to disk, not memory, because the split needs every kept id before the
    first row can be placed.

    Args:
        inputs: ``[augment artifact]``.
        tok: the tokenizer with its chat template set.
        fmt: the ``format`` section (``max_length``).
        out: receives the rejected records.
        spill: the file to create.

    Returns:
        The kept ids, in order, and how many of the kept records carry tools.
    """
    ids: list[str] = []
    with_tools = 0
    # Level 1: the file is read back once and deleted; speed matters more than its size.
    with JsonlGzWriter(spill, compresslevel=1) as fh:
        for record in track(inputs[0].records(), "format: rendering"):
            try:
                tools = _tools(record) if record.kind != "text" else None
                fields = render(record, tok, tools)
            except RenderError as e:
                out.reject(record, e.reason, error=str(e))
                continue
            n_tokens = count_tokens(tok, fields["text"])
            # Not caught: a rendered row that does not fit the schema train and evaluate read is
            # a bug here, not a bad record to reject.
            row = SplitRow.model_validate(
                {**fields, "n_tokens": n_tokens, "truncated": n_tokens > fmt.max_length}
            )
            fh.write([record.model_dump(mode="json", exclude_none=True), row.to_json()])
            ids.append(record.id)
            with_tools += tools is not None  # LLaMA-Factory's "[]" reads as no tools
    return ids, with_tools


def read_spill(spill: Path) -> Iterator[tuple[Record, dict[str, Any]]]:
    """The ``(record, row)`` pairs ``render_all`` spilled, in the same order.

    The row stays the dict it was written as: it was validated before it was spilled, and
    writing that dict back gives the split file the exact bytes ``SplitRow.to_json`` would.
    """
    with open(spill, "rb") as fh:
        for record, row in load_jsonl_gz(fh):
            yield Record.model_validate(record), row


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Fixes the tokenizer, renders and splits the records, writes splits, records and exports.

    Memory does not grow with the data beyond the ids and token counts: the rendered rows wait
    for the split in a scratch file, and the splits, records and exports are written as that
    file is read back.

    Args:
        inputs: ``[augment artifact]``.
        cfg: the ``format`` and ``model`` sections decide the output.
        out: receives ``tokenizer/``, ``splits/*.jsonl.gz``, ``exports/``, the kept records
            (with ``meta.split``) and the rejected ones (``no_assistant_turn``, ``render_error``).
    """
    fmt = cfg.format
    tok, tok_info = build_tokenizer(inputs, cfg)
    tok.save_pretrained(str(out.file("tokenizer/tokenizer_config.json").parent))

    with scratch_dir("format") as scratch:
        spill = scratch / "rendered.jsonl.gz"
        ids, with_tools = render_all(inputs, tok, fmt, out, spill)
        if with_tools and not tok_info["renders_tools"]:
            logging.getLogger("tuneline").warning(
                "format: %d records carry tools, but the model's chat template ignores them, so "
                "the model is never shown the functions it is asked to call; set "
                "format.chat_template=chatml to render them", with_tools,
            )
        if not ids:
            why = dict(out.reasons) or "the input is empty"
            raise InputError(
                f"format: none of the input records could be rendered ({why}); check the rejected/ "
                f"files of {inputs[0].ref.stage}/{inputs[0].ref.short} and of the stages before it"
            )
        n_kept = len(ids)
        split_of = assign_splits(ids, fmt.split_seed, fmt.eval_fraction)
        del ids  # split_of holds them too; no need to keep two copies through the second pass

        stats = {s: SplitStats() for s in SPLITS}
        # The report shows the first chat row of train, else of eval, else the first row.
        first_chat: dict[str, dict[str, Any]] = {}
        first_row: dict[str, Any] | None = None
        with ExitStack() as files:
            split_files = {
                s: files.enter_context(JsonlGzWriter(out.file(f"splits/{s}.jsonl.gz")))
                for s in SPLITS
            }
            exports = files.enter_context(ExportWriter(out))
            for record, row in track(read_spill(spill), "format: writing splits", n_kept):
                split = split_of[record.id]
                split_files[split].write(row)
                stats[split].add(row["kind"], row["n_tokens"], row["truncated"])
                shown = {"kind": row["kind"], "n_tokens": row["n_tokens"], "text": row["text"]}
                if first_row is None:
                    first_row = shown
                if row["kind"] == "chat" and split not in first_chat:
                    first_chat[split] = shown
                record = record.model_copy(update={"meta": {**record.meta, "split": split}})
                out.write(record)
                exports.add(record)

    report = split_report(stats, cfg)
    report["tokenizer"] = tok_info
    report["records_with_tools"] = with_tools
    report["exports"] = exports.counts()
    report["example"] = next((first_chat[s] for s in SPLITS if s in first_chat), first_row)
    out.report.update(report)


def check_lengths_fit_model(cfg) -> None:
    """format.max_length must fit the tiny model's positions."""
    cfg.model.check_fits("format.max_length", cfg.format.max_length)


STAGE = Stage(
    name="format",
    version=2,  # 2: a record's tools are rendered into its prompt
    config=FormatConfig,
    run=run,
    summary=summary,
    inputs=("augment",),
    uses=("model",),
    check=check_lengths_fit_model,
    description="Templates and train/eval split.",
)
