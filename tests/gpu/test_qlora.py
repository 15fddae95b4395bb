"""GPU-only checks, skipped without CUDA: run them when a GPU is lent (`pytest tests/gpu`)."""

from __future__ import annotations

import pytest
import torch

from tasks import train
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_qlora_trains_lora_on_4bit_weights(tmp_path):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit

    from tasks.train import adapters
    from tuneline.models import load_base_model, load_tokenizer

    root = str(tmp_path / "art")
    store = ArtifactStore(root)
    cfg = tiny_config(root, train={"adapter": "qlora", "max_steps": 12})
    fmt = write_format_artifact(store, cfg)
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    base = load_base_model(cfg.model, tok, **adapters.base_model_kwargs(cfg))
    assert any(isinstance(m, Linear4bit) for m in base.modules())  # the base really is 4-bit

    with store.writer("train", "q" * 64, [fmt.ref], {}) as out:
        train.run([fmt], cfg, out)
        art = store.open(out.commit())
    assert art.report["adapter"] == "qlora" and art.report["device"].startswith("cuda")
    assert art.report["last_loss"] < art.report["first_loss"] - 0.5
    assert (art.path / "adapter" / "adapter_model.safetensors").exists()
