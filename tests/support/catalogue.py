"""A made-up shop catalogue for the train and evaluate tests, in the format stage's layout.

The answers follow fixed patterns that a tiny model picks up in a few dozen steps, so a test
can demand that training clearly lowers the loss.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.models import train_tokenizer
from tuneline.records import dump_jsonl_gz

ADJECTIVES = ["red", "blue", "tall", "small", "round", "wooden", "silver", "soft"]
NOUNS = ["lamp", "kettle", "chair", "desk", "clock", "mug", "shelf", "vase"]
CITIES = ["Lyon", "Osaka", "Porto", "Quito", "Tartu"]
MAX_LENGTH = 128


def catalogue_chats() -> list[list[dict[str, str]]]:
    """192 single-turn chats: 64 products x 3 questions."""
    chats = []
    for adj in ADJECTIVES:
        for noun in NOUNS:
            p = f"{adj} {noun}"
            h = int(hashlib.sha256(p.encode()).hexdigest(), 16)
            qa = [
                (f"How much does the {p} cost?", f"The {p} costs {10 + h % 90} dollars."),
                (f"Where is the {p} made?", f"The {p} is made in {CITIES[h % len(CITIES)]}."),
                (f"Is the {p} in stock?", f"Yes, we have {h % 7 + 1} of the {p} in stock."),
            ]
            chats += [
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in qa
            ]
    return chats


def tiny_config(
    root: str, train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None
) -> PipelineConfig:
    """A tiny Llama (hidden 64, 2 layers, 512-token BPE) that trains in seconds on 2 cores."""
    return PipelineConfig.model_validate(
        {
            "run": {"artifact_root": root},
            "model": {
                "tiny": {
                    "vocab_size": 512,
                    "hidden_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "intermediate_size": 128,
                    "max_position_embeddings": 256,
                }
            },
            "format": {"max_length": MAX_LENGTH},
            "train": {
                "lora": {"r": 4, "alpha": 8},
                "learning_rate": 1e-2,
                "epochs": 2,
                "batch_size": 8,
                "max_length": MAX_LENGTH,
                "logging_steps": 2,
                **(train or {}),
            },
            "evaluate": {
                "max_examples": 64,
                "num_samples": 2,
                "max_new_tokens": 12,
                "batch_size": 8,
                **(evaluate or {}),
            },
        }
    )


def render_row(tok, chat: list[dict[str, str]], i: int) -> dict[str, Any]:
    """A split row in the format stage's layout."""
    prompt = tok.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(chat, tokenize=False)
    assert full.startswith(prompt)
    n = len(tok(full, add_special_tokens=False)["input_ids"])
    return {
        "id": f"r{i:04d}",
        "kind": "chat",
        "prompt": prompt,
        "completion": full[len(prompt) :],
        "text": full,
        "n_tokens": n,
        "truncated": n > MAX_LENGTH,
    }


def write_format_artifact(
    store: ArtifactStore,
    cfg: PipelineConfig,
    key: str = "f" * 64,
    empty_train: bool = False,
    empty_eval: bool = False,
) -> Artifact:
    """A format artifact: tokenizer/ trained on the catalogue, splits/{train,eval}.jsonl.gz
    (every 8th chat held out: 168 train rows, 24 eval rows)."""
    chats = catalogue_chats()
    tok = train_tokenizer((m["content"] for c in chats for m in c), cfg.model.tiny.vocab_size)
    rows = [render_row(tok, c, i) for i, c in enumerate(chats)]
    splits = {
        "train": [] if empty_train else [r for i, r in enumerate(rows) if i % 8],
        "eval": [] if empty_eval else rows[::8],
    }
    with store.writer("format", key, [], {}) as out:
        tok.save_pretrained(out.file("tokenizer/x").parent)
        for name, split_rows in splits.items():
            with open(out.file(f"splits/{name}.jsonl.gz"), "wb") as fh:
                dump_jsonl_gz(split_rows, fh)
        ref = out.commit()
    return store.open(ref)
