"""Helpers for the evaluate tests: run a stage, build an untrained adapter, or a format artifact
with tool-call records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import train
from tuneline.models import load_base_model, load_tokenizer


def run_stage(store, mod, inputs, cfg, key):
    """Runs ``mod``'s stage on ``inputs`` into ``store`` under ``key``; the artifact."""
    with store.writer(mod.STAGE.name, key, [a.ref for a in inputs], {}) as out:
        mod.STAGE.run(inputs, mod.STAGE.slice(cfg), out)
        ref = out.commit()
    return store.open(ref)


def fresh_adapter_artifact(store, cfg, fmt, key: str = "0" * 64):
    """A "train" artifact whose adapter was never trained (LoRA B = 0: exactly the base)."""
    from peft import get_peft_model

    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    with store.writer("train", key, [fmt.ref], {}) as out:
        get_peft_model(load_base_model(cfg.model, tok), train.lora_config(cfg)).save_pretrained(
            out.file("adapter")
        )
        tok.save_pretrained(out.file("tokenizer"))
        ref = out.commit()
    return store.open(ref)


def toolcall_rows(n: int) -> list[dict]:
    """The first ``n`` rows of the public ShareGPT tool-call demo that have a call and tools."""
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "instruction" / "sharegpt_toolcall_demo.json"
    if not path.exists():
        pytest.skip(f"public test data not found at {path}")
    rows = [
        r for r in json.loads(path.read_text())
        if json.loads(r.get("tools") or "[]")
        and any(t["from"] == "function_call" for t in r["conversations"])
    ]
    return rows[:n]


def write_toolcall_format_artifact(store, cfg, n: int = 8, key: str = "c" * 64):
    """A format artifact with the catalogue's splits and ``n`` tool-call chats as eval records
    (``meta.split`` = eval, ``meta.tools``), as format writes its kept records."""
    from tests.support.catalogue import catalogue_chats, render_row
    from tuneline.models import train_tokenizer
    from tuneline.records import Record, dump_jsonl_gz
    from tuneline.shapes.sharegpt import parse

    chats = catalogue_chats()
    rows = toolcall_rows(n)
    texts = [m["content"] for c in chats for m in c] + [
        t["value"] for r in rows for t in r["conversations"]
    ]
    tok = train_tokenizer(texts, cfg.model.tiny.vocab_size)
    split_rows = [render_row(tok, c, i) for i, c in enumerate(chats)]
    with store.writer("format", key, [], {}) as out:
        tok.save_pretrained(Path(out.file("tokenizer/x")).parent)
        for name, part in (("train", split_rows[1::8]), ("eval", split_rows[::8])):
            with open(out.file(f"splits/{name}.jsonl.gz"), "wb") as fh:
                dump_jsonl_gz(part, fh)
        for i, row in enumerate(rows):
            chat = parse(row)
            meta = {**chat["meta"], "split": "eval"}
            out.write(Record(id=f"tc{i:03d}", kind="chat", messages=chat["messages"], meta=meta))
        ref = out.commit()
    return store.open(ref)



def write_seen_format_artifact(store, fmt, n: int = 16, key: str = "s" * 64):
    """``fmt`` with its eval split replaced by its first ``n`` train rows: questions the tuned
    model was trained on, so it can answer them word for word."""
    import shutil

    from tuneline.records import dump_jsonl_gz
    from tuneline.splits import load_split

    seen = [r.to_json() for r in load_split(fmt, "train")[:n]]
    with store.writer("format", key, [], {}) as out:
        shutil.copytree(fmt.path / "tokenizer", out.file("tokenizer"))
        shutil.copy(fmt.path / "splits" / "train.jsonl.gz", out.file("splits/train.jsonl.gz"))
        with open(out.file("splits/eval.jsonl.gz"), "wb") as fh:
            dump_jsonl_gz(seen, fh)
        ref = out.commit()
    return store.open(ref)
