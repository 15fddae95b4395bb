"""evaluate: base vs tuned held-out loss on a small domain corpus with the tiny Llama."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tasks import evaluate
from tests.support.catalogue import tiny_config, write_format_artifact
from tests.tasks.evaluate.support import fresh_adapter_artifact, run_stage
from tuneline.artifacts import ArtifactStore
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import load_split, sft_example


@pytest.fixture(scope="module")
def setup(trained_setup):
    """(store, cfg, format artifact, train artifact, evaluate artifact)."""
    store, cfg, fmt, trained = trained_setup
    return store, cfg, fmt, trained, run_stage(store, evaluate, [fmt, trained], cfg, "e" * 64)


def test_tuned_model_beats_base_on_held_out_rows(setup):
    *_, art = setup
    r = json.loads((art.path / "report.json").read_text())
    base, tuned = r["base"], r["tuned"]
    assert r["n_examples"] == 24  # every 8th of 192 rows is held out
    assert tuned["loss"] < base["loss"] - 0.3, (base["loss"], tuned["loss"])
    assert tuned["ppl"] < base["ppl"] and tuned["ppl"] == pytest.approx(math.exp(tuned["loss"]))
    assert r["delta_loss"] == pytest.approx(tuned["loss"] - base["loss"]) and r["improved"] is True
    # The headline loss is the completion's; the whole text (prompt included) is reported too.
    assert tuned["loss"] == tuned["loss_completion"]
    assert 0 < tuned["tokens_completion"] < tuned["tokens_all"]
    assert tuned["loss_all"] < base["loss_all"]


def test_report_md_and_samples(setup):
    _, cfg, _, _, art = setup
    samples = art.report["samples"]
    assert len(samples) == cfg.evaluate.num_samples
    for s in samples:
        assert s["prompt"].startswith("user") and "?" in s["prompt"]
        assert "<|im_start|>" not in s["prompt"] and "<|im_end|>" not in s["reference"]
        assert s["reference"].startswith(("The ", "Yes, we have"))
        assert isinstance(s["base"], str) and isinstance(s["tuned"], str)
    md = (art.path / "report.md").read_text()
    assert md == evaluate.STAGE.summary(art.report)
    assert "| tuned |" in md and samples[0]["reference"] in md


def test_an_untrained_adapter_scores_exactly_as_the_base(setup):
    """The tuned numbers come from the adapter: a zero (fresh) LoRA gives the base loss."""
    store, _, fmt, _, _ = setup
    cfg = tiny_config(store.root, evaluate={"max_examples": 5, "num_samples": 0})
    fresh = fresh_adapter_artifact(store, cfg, fmt)
    r = run_stage(store, evaluate, [fmt, fresh], cfg, "z" * 64).report
    assert r["n_examples"] == 5 and r["samples"] == []
    assert r["tuned"]["loss"] == pytest.approx(r["base"]["loss"], abs=1e-5)
    assert r["improved"] is False


def test_score_is_the_models_own_loss_and_ignores_batching(setup):
    _, cfg, fmt, _, _ = setup
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    model = load_base_model(cfg.model, tok).eval()
    rows = load_split(fmt, "eval")[:3]
    enc = [evaluate.encode(tok, sft_example(r, tok.eos_token), 128) for r in rows]
    one_batch = evaluate.score(model, [enc], tok.pad_token_id, "t")
    one_each = evaluate.score(model, [[e] for e in enc], tok.pad_token_id, "t")
    for k in ("loss_all", "loss_completion", "tokens_all", "tokens_completion"):
        assert one_batch[k] == pytest.approx(one_each[k], rel=1e-5), k
    ids = torch.tensor([enc[0][0]])
    single = evaluate.score(model, [[enc[0]]], tok.pad_token_id, "t")
    with torch.no_grad():
        assert single["loss_all"] == pytest.approx(model(ids, labels=ids).loss.item(), rel=1e-5)
    # The completion starts after the prompt's tokens: the reply plus its end-of-turn token.
    ids0, start = enc[0]
    assert tok.decode(ids0[start:]).startswith("The ") and tok.decode(ids0[start:]).endswith(
        "<|im_end|>"
    )


def test_empty_eval_split_is_a_clear_error(tmp_path):
    root = str(tmp_path / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root)
    fmt = write_format_artifact(store, cfg, empty_eval=True)
    with pytest.raises(ValueError, match="eval split of format artifact .* is empty"):
        run_stage(store, evaluate, [fmt, fresh_adapter_artifact(store, cfg, fmt)], cfg, "e" * 64)
