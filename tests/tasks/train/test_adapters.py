"""train.adapter: what trains (lora, dora, qlora, full, hft), checked by what was saved and how
the weights moved."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tasks import evaluate, train
from tasks.train import adapters
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore
from tuneline.config import ConfigError, PipelineConfig, load_config
from tuneline.models import load_base_model, load_tokenizer


def run_stage(stage, store: ArtifactStore, inputs, cfg, key: str):
    with store.writer(stage.STAGE.name, key, [i.ref for i in inputs], {}) as out:
        stage.run(inputs, cfg, out)
        ref = out.commit()
    return store.open(ref)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("adapters") / "artifacts")
    store = ArtifactStore(root)
    return store, root, write_format_artifact(store, tiny_config(root))


def base_weights(cfg, fmt) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    return {n: p.detach().clone() for n, p in load_base_model(cfg.model, tok).named_parameters()}


def test_dora_trains_a_magnitude_per_adapted_layer(setup):
    store, root, fmt = setup
    cfg = tiny_config(root, train={"adapter": "dora", "max_steps": 12})
    art = run_stage(train, store, [fmt], cfg, "d" * 64)
    config = json.loads((art.path / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    saved = load_file(art.path / "adapter" / "adapter_model.safetensors")
    magnitudes = [n for n in saved if "lora_magnitude_vector" in n]
    lora_a = [n for n in saved if "lora_A" in n]
    assert magnitudes and len(magnitudes) == len(lora_a)  # one magnitude per adapted linear
    assert art.report["adapter"] == "dora" and "DoRA SFT" in train.summary(art.report)
    assert art.report["last_loss"] < art.report["first_loss"] - 0.5


def test_full_fine_tuning_saves_the_whole_model_and_evaluate_reads_it(setup):
    store, root, fmt = setup
    cfg = tiny_config(root, train={"adapter": "full", "max_steps": 12, "learning_rate": 3e-3})
    art = run_stage(train, store, [fmt], cfg, "u" * 64)
    assert not (art.path / "adapter").exists()
    saved = load_file(art.path / "model" / "model.safetensors")
    base = base_weights(cfg, fmt)
    assert set(saved) == set(base)  # every weight is in the artifact
    moved = [n for n in base if not torch.equal(saved[n], base[n])]
    assert len(moved) == len(base)  # ... and every one of them trained (no frozen layer)
    m = art.report
    assert m["trainable_params"] == m["total_params"]
    assert m["last_loss"] < m["first_loss"] - 0.5

    ev = run_stage(evaluate, store, [fmt, art], cfg, "e" * 64)
    assert ev.report["tuned"]["loss"] < ev.report["base"]["loss"] - 0.5


def test_hft_halves_split_every_block_parameter_once():
    cfg = tiny_config("/tmp/unused")
    from tuneline.models import train_tokenizer

    tok = train_tokenizer(["a b c"], 300)
    model = load_base_model(cfg.model, tok)
    a, b = adapters.hft_halves(model)
    blocks = [n for n, _ in model.named_parameters() if ".layers." in n]
    assert sorted(a + b) == sorted(blocks) and not set(a) & set(b)
    # Each half holds attention of some blocks and MLP of the others, at every depth.
    assert any("layers.0.self_attn" in n for n in a) and any("layers.0.mlp" in n for n in b)
    assert any("layers.1.mlp" in n for n in a) and any("layers.1.self_attn" in n for n in b)


def test_hft_trains_one_half_per_round(setup, monkeypatch):
    """Two rounds of 3 steps: round 0 trains half A and leaves half B exactly as it was, round
    1 trains half B and leaves half A where round 0 left it."""
    store, root, fmt = setup
    cfg = tiny_config(
        root, train={"adapter": "hft", "max_steps": 6, "hft": {"round_steps": 3}, "learning_rate": 3e-3}
    )
    base = base_weights(cfg, fmt)
    after_round_0: dict[str, torch.Tensor] = {}
    make_callback = adapters.hft_callback

    def watched(cfg, model):
        callback = make_callback(cfg, model)
        begin = callback.on_step_begin

        def on_step_begin(args, state, control, **kwargs):
            if state.global_step == 3:  # the weights round 0 left
                after_round_0.update({n: p.detach().clone() for n, p in model.named_parameters()})
            return begin(args, state, control, **kwargs)

        callback.on_step_begin = on_step_begin
        return callback

    monkeypatch.setattr(adapters, "hft_callback", watched)
    art = run_stage(train, store, [fmt], cfg, "h" * 64)
    final = load_file(art.path / "model" / "model.safetensors")
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    half_a, half_b = adapters.hft_halves(load_base_model(cfg.model, tok))

    def moved(before, after, names):
        return {n for n in names if not torch.equal(after[n], before[n])}

    assert moved(base, after_round_0, half_a) == set(half_a)
    assert moved(base, after_round_0, half_b) == set()
    name = "model.embed_tokens.weight"  # outside the blocks: trains in every round
    assert not torch.equal(after_round_0[name], base[name])
    assert not torch.equal(final[name], after_round_0[name])
    assert moved(after_round_0, final, half_b) == set(half_b)
    assert moved(after_round_0, final, half_a) == set()
    assert art.report["adapter"] == "hft" and art.report["steps"] == 6


def test_qlora_without_cuda_fails_at_config_validation():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the GPU run checks qlora itself")
    with pytest.raises(ValueError, match="qlora.*needs a CUDA GPU"):
        PipelineConfig.model_validate({"train": {"adapter": "qlora"}})
    with pytest.raises(ConfigError, match="qlora"):
        load_config(None, ["train.adapter=qlora"])


def test_an_unknown_adapter_lists_the_known_ones():
    with pytest.raises(ValueError, match="'lora', 'dora', 'qlora', 'full' or 'hft'"):
        PipelineConfig.model_validate({"train": {"adapter": "ia3"}})


def test_lora_dora_qlora_build_peft_configs_and_full_hft_none():
    for adapter, dora in (("lora", False), ("dora", True)):
        cfg = PipelineConfig.model_validate({"train": {"adapter": adapter}})
        assert adapters.peft_config(cfg).use_dora is dora
    for adapter in ("full", "hft"):
        cfg = PipelineConfig.model_validate({"train": {"adapter": adapter}})
        assert adapters.peft_config(cfg) is None


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"liger_kernel": True}, "liger_kernel needs a CUDA GPU"),
        ({"attention": "flash_attention_2"}, "flash_attention_2 needs a CUDA GPU"),
    ],
)
def test_gpu_only_settings_fail_at_config_validation_without_cuda(setting, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=message):
        PipelineConfig.model_validate({"train": setting})
