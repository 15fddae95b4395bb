"""`tuneline plan`: parameter counts against real (meta-device) models, peak memory against the
peaks measured on an H200 (../shared/bench), and the CLI as a user meets it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tasks.train import plan
from tasks.train.plan import BLOCK_LINEARS, Arch, GiB, PlanError, Setup

# ------------------------------------------------------------------------- parameter counts


def _meta_model(arch: Arch):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, total", [("llama-3.2-1b", 1_235_814_400), ("llama-3-8b", 8_030_261_248)]
)
def test_the_bench_shapes_count_like_the_real_models(name, total):
    arch = plan.shape(name)
    assert arch.params()["total"] == total == _count(_meta_model(arch))


def test_a_small_gqa_untied_model_counts_like_the_real_one():
    arch = Arch(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=300,
    )
    assert arch.params()["total"] == _count(_meta_model(arch))


SMALL = Arch(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,
    vocab_size=300,
    tie_word_embeddings=True,
)


@pytest.mark.parametrize(
    "adapter, targets",
    [
        ("lora", "all-linear"),
        ("dora", "all-linear"),
        ("lora", ("q_proj", "v_proj")),
        ("dora", ("down_proj",)),
    ],
)
def test_adapter_params_match_peft(adapter, targets):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=SMALL.hidden_size,
            intermediate_size=SMALL.intermediate_size,
            num_hidden_layers=SMALL.num_hidden_layers,
            num_attention_heads=SMALL.num_attention_heads,
            num_key_value_heads=SMALL.num_key_value_heads,
            vocab_size=SMALL.vocab_size,
            tie_word_embeddings=True,
        )
    )
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=targets if isinstance(targets, str) else list(targets),
            use_dora=adapter == "dora",
            task_type="CAUSAL_LM",
        ),
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    setup = Setup(
        arch=SMALL, batch_size=1, seq_len=16, adapter=adapter, lora_r=4, target_modules=targets
    )
    assert plan.adapter_params(setup) == trainable


def test_lora_params_of_the_1b_shape_match_peft_on_meta():
    from peft import LoraConfig, get_peft_model

    arch = plan.shape("llama-3.2-1b")
    peft_model = get_peft_model(
        _meta_model(arch), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert (
        plan.adapter_params(Setup(arch=arch, batch_size=1, seq_len=16)) == trainable == 11_272_192
    )


# ------------------------------------------------------------- memory against measured peaks

# ../shared/bench/README.md, one H200, torch.cuda.max_memory_allocated; settings from
# trl_baseline.py: LoRA r=16 alpha=32 on the 7 block linears, bf16, sdpa, 2048-token rows,
# packed = "wrapped" (no mask), packed batch = --batch // 2, TRL's chunked LM head throughout.
# (shape, micro-batch, checkpointing, liger, padded rows, measured peak GiB)
MEASURED = [
    ("llama-3.2-1b", 8, True, False, True, 6.5),  # padded, batch 8, ckpt (tutorial default)
    ("llama-3.2-1b", 4, True, False, False, 4.8),  # packed, ckpt
    ("llama-3.2-1b", 4, True, True, False, 4.8),  # packed + liger, ckpt
    ("llama-3.2-1b", 4, False, True, False, 15.6),  # packed + liger, no ckpt, batch 4
    ("llama-3.2-1b", 8, False, True, False, 28.6),  # packed + liger, no ckpt, batch 8
    ("llama-3-8b", 4, True, False, False, 20.3),  # packed, ckpt
    ("llama-3-8b", 4, True, True, False, 19.8),  # packed + liger, ckpt
    ("llama-3-8b", 4, False, True, False, 62.6),  # packed + liger, no ckpt
]


@pytest.mark.parametrize("name, batch, ckpt, liger, padded, measured", MEASURED)
def test_peak_memory_is_within_20_percent_of_the_h200_measurement(
    name, batch, ckpt, liger, padded, measured
):
    setup = Setup(
        arch=plan.shape(name),
        batch_size=batch,
        seq_len=2048,
        lora_r=16,
        target_modules=BLOCK_LINEARS,
        gradient_checkpointing=ckpt,
        liger_kernel=liger,
        fused_lm_head=True,
        attention="sdpa",
        attention_mask=padded,
    )
    estimate = plan.estimate_memory(setup)["allocated"] / GiB
    assert 0.8 <= estimate / measured <= 1.2, (
        f"estimate {estimate:.2f} GiB, measured {measured} GiB"
    )


def test_memory_orders_as_expected():
    base = Setup(
        arch=plan.shape("llama-3-8b"),
        batch_size=4,
        seq_len=2048,
        gradient_checkpointing=False,
        fused_lm_head=False,
    )
    mem = plan.estimate_memory
    assert (
        mem(base)["logits"] > 0
        and mem(Setup(**{**base.__dict__, "liger_kernel": True}))["logits"] == 0
    )
    ckpt = Setup(**{**base.__dict__, "gradient_checkpointing": True})
    assert mem(ckpt)["activations"] < mem(base)["activations"] / 10
    qlora, full, hft = (Setup(**{**ckpt.__dict__, "adapter": a}) for a in ("qlora", "full", "hft"))
    assert mem(qlora)["weights"] < mem(ckpt)["weights"] / 2
    assert (
        mem(hft)["gradients"] < mem(full)["gradients"]
        and mem(hft)["optimizer"] == mem(full)["optimizer"]
    )
    assert mem(full)["total"] > mem(ckpt)["total"] + 40 * GiB


def test_speed_uses_4n_for_lora_6n_for_full_and_2n_more_with_checkpointing():
    arch = plan.shape("llama-3.2-1b")
    n = arch.params()["total"]
    lora = Setup(arch=arch, batch_size=1, seq_len=2048, gradient_checkpointing=False)
    assert plan.flops_per_token(lora) == 4 * n
    assert plan.flops_per_token(Setup(**{**lora.__dict__, "adapter": "full"})) == 6 * n
    assert plan.flops_per_token(Setup(**{**lora.__dict__, "gradient_checkpointing": True})) == 6 * n


@pytest.mark.parametrize(
    "text, size",
    [
        ("80GiB", 80 * GiB),
        ("141GB", 141e9),
        ("24 GiB", 24 * GiB),
        ("80G", 80 * GiB),
        ("40", 40 * GiB),
        ("512MiB", 512 * 2**20),
        ("1.5 TB", 1.5e12),
    ],
)
def test_memory_sizes_parse(text, size):
    assert plan.parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "80 parsecs", "-4GiB", "0GB"])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(PlanError, match="cannot read the GPU memory"):
        plan.parse_memory(text)


def test_plan_is_not_a_training_method():
    from tasks.train.config import METHODS

    assert "plan" not in METHODS
    assert not hasattr(plan, "CONFIG") and not hasattr(plan, "build_trainer")


# ------------------------------------------------------------------------------------- CLI


def _cli(*args: str):
    from tuneline.cli import app

    return CliRunner().invoke(
        app, ["plan", *args], env={"COLUMNS": "200", "TUNELINE_PROGRESS": "0"}
    )


def test_plan_runs_on_the_demo_config():
    res = _cli()
    assert res.exit_code == 0, res.output
    assert "peak GPU memory" in res.output and "tiny" in res.output and "recommended" in res.output


def test_8b_on_24gib_needs_checkpointing_or_qlora():
    res = _cli(
        "--shape", "llama-3-8b", "--gpu-memory", "24GiB", "--json", "-s", "train.max_length=2048"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    rec = out["recommendation"]
    assert out["params"]["total"] == 8_030_261_248
    assert rec["gradient_checkpointing"] or rec.get("adapter") == "qlora", rec
    assert out["memory"]["total"] > 0 and out["speed"]["tokens_per_s"] > 0


def test_a_model_config_file_plans(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(plan.SHAPES["llama-3.2-1b"]))
    res = _cli("--model-config", str(cfg), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["params"]["total"] == 1_235_814_400


@pytest.mark.parametrize(
    "args, words",
    [
        (["--gpu-memory", "lots"], ["cannot read the GPU memory 'lots'"]),
        (["--shape", "llama-9b"], ["unknown shape 'llama-9b'", "llama-3-8b"]),
        (["--model-config", "/no/such/config.json"], ["cannot read the model config"]),
        (["--model-config", "BAD"], ["not valid JSON"]),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, args, words):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    res = _cli(*[str(bad) if a == "BAD" else a for a in args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for w in words:
        assert w in res.output, res.output


def test_a_gpu_config_is_planned_on_a_machine_without_one():
    """qlora and liger need CUDA to run, not to be planned: plan skips the device checks."""
    res = _cli(
        "--shape", "llama-3-8b", "--json", "-s", "train.adapter=qlora", "-s", "train.liger_kernel=true"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["setup"]["adapter"] == "qlora"
    # 4-bit weights: an 8B base in well under its 16 GB of bf16 weights
    assert out["memory"]["weights"] < 8 * 2**30
