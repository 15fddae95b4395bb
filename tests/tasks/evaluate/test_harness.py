"""evaluate.harness: lm-evaluation-harness on the tiny Llama, over a local 10-question task."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval==0.4.13)")

from tasks import train  # noqa: E402
from tasks.evaluate import load_trained  # noqa: E402
from tasks.evaluate.harness import HarnessConfig, run_harness  # noqa: E402
from tests.support.catalogue import tiny_config, write_format_artifact  # noqa: E402
from tuneline.artifacts import ArtifactStore  # noqa: E402
from tuneline.errors import InputError  # noqa: E402
from tuneline.models import load_base_model, load_tokenizer  # noqa: E402

TASK_DIR = Path(__file__).resolve().parents[2] / "support" / "lm_eval_tasks"
TASK = "tuneline_catalogue_made_in"
N_QUESTIONS = len((TASK_DIR / "catalogue_made_in.jsonl").read_text().splitlines())


def settings(**kw) -> HarnessConfig:
    return HarnessConfig(**{"tasks": [TASK], "task_dirs": [TASK_DIR], "batch_size": 16, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(cfg, tokenizer, train artifact) on the catalogue, with a LoRA adapter that changes the
    model (random A and B, not trained: a training run costs ~20 s of 2 shared cores, and the
    harness only needs the adapter to move the scores)."""
    from peft import get_peft_model

    root = str(tmp_path_factory.mktemp("harness") / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root)
    fmt = write_format_artifact(store, cfg)
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    lora = train.lora_config(cfg)
    lora.init_lora_weights = False  # B random too: the adapter is not a no-op
    with store.writer("train", "t" * 64, [fmt.ref], {}) as out:
        get_peft_model(load_base_model(cfg.model, tok), lora).save_pretrained(out.file("adapter"))
        tok.save_pretrained(out.file("tokenizer"))
        art = store.open(out.commit())
    return cfg, load_tokenizer(cfg.model, art.path / "tokenizer"), art


@pytest.fixture(scope="module")
def in_memory(trained):
    """Harness results of the tuned model and of its base (adapter disabled), in memory."""
    cfg, tok, art = trained
    model, as_base = load_trained(cfg, art, tok)
    with as_base() as base:
        base_result = run_harness(base, tok, settings())
    return {"base": base_result, "tuned": run_harness(model, tok, settings())}


def test_base_and_tuned_score_the_local_task(in_memory):
    for label, result in in_memory.items():
        assert set(result) == {TASK}, label
        row = result[TASK]
        assert row["n_samples"] == N_QUESTIONS == 10, label
        for metric in ("acc", "acc_norm"):
            assert 0.0 <= row[metric] <= 1.0, (label, metric, row)
            # An accuracy over 10 questions is a multiple of 1/10.
            assert round(row[metric] * 10, 6) == int(round(row[metric] * 10)), row
        assert row["acc_stderr"] is not None and row["acc_stderr"] >= 0
        json.dumps(result, allow_nan=False)  # JSON-safe as it stands


def test_adapter_off_is_the_rebuilt_base(trained, in_memory):
    """The base seen through disable_adapter scores exactly like a freshly built tiny base."""
    cfg, tok, _ = trained
    fresh = run_harness(load_base_model(cfg.model, tok).eval(), tok, settings())
    assert fresh == in_memory["base"]


def test_model_folder_with_adapter_matches_in_memory(trained, in_memory, tmp_path):
    """The folder route (HFLM loads base + peft=adapter dir) gives the in-memory tuned result."""
    cfg, tok, art = trained
    load_base_model(cfg.model, tok).save_pretrained(tmp_path / "base")
    result = run_harness(tmp_path / "base", tok, settings(), peft=art.path / "adapter")
    assert result[TASK]["acc"] == in_memory["tuned"][TASK]["acc"]
    assert result[TASK]["acc_norm"] == in_memory["tuned"][TASK]["acc_norm"]


def test_limit_caps_the_examples(trained):
    cfg, tok, _ = trained
    result = run_harness(load_base_model(cfg.model, tok).eval(), tok, settings(limit=4))
    assert result[TASK]["n_samples"] == 4


def test_unknown_task_names_it_and_the_folders_searched(trained):
    _, tok, _ = trained
    with pytest.raises(InputError) as e:
        run_harness(None, tok, settings(tasks=["no_such_task"]))
    msg = str(e.value)
    assert "'no_such_task'" in msg and str(TASK_DIR) in msg and TASK in msg


def test_missing_data_file_names_the_task_and_file(trained, tmp_path):
    _, tok, _ = trained
    yaml = (TASK_DIR / "catalogue_made_in.yaml").read_text()
    (tmp_path / "broken.yaml").write_text(
        yaml.replace(TASK, "broken_task").replace("catalogue_made_in.jsonl", "gone.jsonl")
    )
    with pytest.raises(InputError) as e:
        run_harness(None, tok, settings(tasks=["broken_task"], task_dirs=[tmp_path]))
    assert "'broken_task'" in str(e.value) and "gone.jsonl" in str(e.value)


def test_missing_task_folder_is_an_input_error(trained, tmp_path):
    _, tok, _ = trained
    with pytest.raises(InputError, match="not a folder"):
        run_harness(None, tok, settings(task_dirs=[tmp_path / "nope"]))


def test_folder_route_puts_the_adapter_on(trained, tmp_path):
    """HFLM given a base folder and peft= computes the tuned model's logits, not the base's
    (on this task both score 2/10, so the accuracies alone cannot tell them apart)."""
    import torch

    from tasks.evaluate.harness import harness_lm

    cfg, tok, art = trained
    load_base_model(cfg.model, tok).save_pretrained(tmp_path / "base")
    lm = harness_lm(tmp_path / "base", tok, settings(), peft=art.path / "adapter")
    tuned, as_base = load_trained(cfg, art, tok)
    ids = torch.tensor([tok("Where is the red lamp made?")["input_ids"]])
    with torch.no_grad():
        got = lm.model(ids).logits
        want = tuned(ids).logits
        with as_base() as base:
            base_logits = base(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, base_logits, atol=1e-3)


def test_offline_switches_are_on_inside_and_restored_after(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    from tasks.evaluate.harness import offline

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
        assert datasets.config.HF_DATASETS_OFFLINE is True
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ
    assert datasets.config.HF_DATASETS_OFFLINE is False
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False
