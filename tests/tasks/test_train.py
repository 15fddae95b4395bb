"""train: a LoRA SFT run on a small domain corpus with the tiny Llama, checked by its outcomes."""

from __future__ import annotations

import json

import pytest
import torch

from tasks import train
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import SplitRow, load_split, sft_example


def run_train(store: ArtifactStore, fmt, cfg: PipelineConfig, key: str = "t" * 64):
    with store.writer("train", key, [fmt.ref], {}) as out:
        train.run([fmt], cfg, out)
        ref = out.commit()
    return store.open(ref)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run shared by the tests below: (store, cfg, format artifact, train artifact)."""
    root = str(tmp_path_factory.mktemp("train") / "artifacts")
    store = ArtifactStore(root)
    cfg = tiny_config(root)
    fmt = write_format_artifact(store, cfg)
    return store, cfg, fmt, run_train(store, fmt, cfg)


def test_training_lowers_the_loss(trained):
    _, _, _, art = trained
    m = art.report
    assert m["steps"] == 2 * 21  # 168 rows / batch 8, two epochs
    assert m["last_loss"] < m["first_loss"] - 0.5, (m["first_loss"], m["last_loss"])
    metrics = json.loads((art.path / "metrics.json").read_text())
    for k in (
        "train_loss",
        "steps",
        "epochs",
        "runtime_s",
        "samples_per_s",
        "tokens_per_s",
        "trainable_params",
        "total_params",
    ):
        assert metrics[k] > 0, k
    assert metrics["trained_tokens"] > 168 * 2 * 20  # every row seen twice, > 20 tokens each
    history = json.loads((art.path / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h][:3] == [1, 2, 4]
    assert m["method"] == "sft"
    md = train.STAGE.summary(m)
    assert "loss first" in md and "LoRA SFT of `tiny Llama`" in md


def test_trained_weights_are_exactly_what_is_saved(trained):
    from safetensors.torch import load_file

    _, _, _, art = trained
    m = art.report
    saved = load_file(art.path / "adapter" / "adapter_model.safetensors")
    lora = [n for n in saved if "lora_" in n]
    full = {n.split(".")[-2] for n in saved if "lora_" not in n}
    assert lora
    # The tiny model's tokenizer is new, so its embeddings and head train fully; the decoder
    # blocks stay frozen under their LoRA matrices.
    assert full == {"embed_tokens", "lm_head"}
    assert m["trainable_params"] == sum(t.numel() for t in saved.values())
    assert m["trainable_params"] < m["total_params"]


def test_pretrained_models_get_a_pure_lora_adapter_by_default():
    tiny = PipelineConfig()
    real = PipelineConfig.model_validate({"model": {"name_or_path": "some/model"}})
    assert set(train.lora_config(tiny).modules_to_save) == {"embed_tokens", "lm_head"}
    assert train.lora_config(real).modules_to_save is None
    pinned = PipelineConfig.model_validate({"train": {"lora": {"modules_to_save": []}}})
    assert train.lora_config(pinned).modules_to_save is None
    assert tiny.train.resolved_learning_rate(tiny.model) == 1e-2
    assert real.train.resolved_learning_rate(real.model) == 2e-4


def test_adapter_loads_onto_a_rebuilt_base_and_changes_it(trained):
    from peft import PeftModel

    _, cfg, fmt, art = trained
    tok = load_tokenizer(cfg.model, art.path / "tokenizer")
    assert tok.get_vocab() == load_tokenizer(cfg.model, fmt.path / "tokenizer").get_vocab()
    row = load_split(fmt, "train")[0]
    ids = tok(row.text, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, : len(tok(row.prompt)["input_ids"])] = -100  # scored on the reply, as trained
    base = load_base_model(cfg.model, tok).eval()
    with torch.no_grad():
        base_loss = base(ids, labels=labels).loss.item()
    tuned = PeftModel.from_pretrained(load_base_model(cfg.model, tok), art.path / "adapter").eval()
    with torch.no_grad():
        tuned_loss = tuned(ids, labels=labels).loss.item()
    assert tuned_loss < base_loss - 0.5, (base_loss, tuned_loss)


def test_loss_plot_is_a_png(trained):
    _, _, _, art = trained
    data = (art.path / "loss.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_curves_plot_loss_learning_rate_grad_norm_and_speed(trained):
    _, _, _, art = trained
    assert art.report["curves"] == ["loss", "learning_rate", "grad_norm", "tokens_per_s"]
    data = (art.path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    history = json.loads((art.path / "log_history.json").read_text())
    speeds = [h["tokens_per_s"] for h in history if "tokens_per_s" in h]
    assert len(speeds) == sum("loss" in h for h in history) - 1 and min(speeds) > 0
    lrs = [h["learning_rate"] for h in history if "learning_rate" in h]
    assert lrs[-1] < lrs[0]  # the schedule decays


def split_row(kind: str, prompt: str, completion: str) -> SplitRow:
    text = prompt + completion
    return SplitRow(
        id="x",
        kind=kind,
        prompt=prompt,
        completion=completion,
        text=text,
        n_tokens=1,
        truncated=False,
    )


def test_completion_ends_with_a_single_eos():
    row = split_row(
        "chat", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "hello<|im_end|>\n"
    )
    assert sft_example(row, "<|im_end|>") == {"prompt": row.prompt, "completion": "hello<|im_end|>"}
    assert (
        sft_example(split_row("text", "", "a doc\n"), "<|im_end|>")["completion"]
        == "a doc\n<|im_end|>"
    )


def test_packing_takes_fewer_steps_for_the_same_data(trained):
    store, cfg, fmt, plain = trained
    packed_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"packing": True})})
    packed = run_train(store, fmt, packed_cfg, key="p" * 64)
    p, u = packed.report, plain.report
    assert p["train_sequences"] < u["train_sequences"] / 2  # ~30-token rows, 128-token packs
    assert p["steps"] < u["steps"] / 2
    assert p["trained_tokens"] == pytest.approx(
        u["trained_tokens"], rel=0.01
    )  # same tokens, fewer rows
    assert p["last_loss"] < p["first_loss"]


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flex_attention"])
def test_packed_examples_do_not_attend_to_each_other(trained, attention):
    """The claim behind packing_strategy="bfd": a padding-free packed row scores each example
    exactly as if it were alone, on every attention path train.attention offers on this
    machine (sdpa: CPU and CUDA without flash-attn; flex_attention: the compiled block mask,
    about 30 s to compile on CPU; flash_attention_2 reads the same position ids on CUDA)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    _, cfg, fmt, _ = trained
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    model = load_base_model(cfg.model, tok, attn_implementation=attention).eval()
    assert model.config._attn_implementation == attention
    texts = [r.text for r in load_split(fmt, "train")[:3]]
    examples = [{"input_ids": tok(t)["input_ids"]} for t in texts]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(
        examples
    )
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        start = 0
        for ex in examples:
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]]), use_cache=False).logits[0]
            assert torch.allclose(packed[start : start + n], alone, atol=1e-4)
            start += n


def test_empty_train_split_is_a_clear_error(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    cfg = tiny_config(str(tmp_path / "artifacts"))
    fmt = write_format_artifact(store, cfg, empty_train=True)
    with pytest.raises(ValueError, match="train split of format artifact .* is empty"):
        run_train(store, fmt, cfg)
    assert store.list("train") == []  # nothing half-written is published
