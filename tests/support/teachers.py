"""Teachers for tests: a tiny local transformers model, and the key the test HTTP server wants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

KEY_ENV = "TUNELINE_TEST_TEACHER_KEY"
KEY = "sk-test-7f3a9c1e5b2d4f60-do-not-leak"

ALPACA = Path(__file__).resolve().parents[2].parent / "shared/data/instruction/alpaca_en_demo.json"


def tiny_teacher(path: Path) -> str:
    """A random-weight tiny Llama + BPE tokenizer saved under ``path`` like any local model
    directory; skips the test when the public sample data is missing.

    Args:
        path: an empty directory (a ``tmp_path_factory.mktemp``).
    """
    from tuneline.models import load_base_model, train_tokenizer
    from tuneline.sections import ModelConfig, TinyModelConfig

    if not ALPACA.exists():
        pytest.skip(f"public test data not found at {ALPACA}")
    texts = [r["instruction"] + " " + r["output"] for r in json.loads(ALPACA.read_text())[:300]]
    tok = train_tokenizer(texts, vocab_size=512)
    tiny = TinyModelConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128
    )
    model = load_base_model(ModelConfig(tiny=tiny), tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
