"""What trains (``train.adapter``): a PEFT adapter on the base, or the base's own weights.

- ``lora``: low-rank matrices beside every targeted linear layer (PEFT ``LoraConfig``).
- ``dora``: LoRA plus a trained magnitude per output (PEFT ``use_dora``), closer to full
  fine-tuning at LoRA's memory.
- ``qlora``: LoRA on a base held in 4-bit NF4 (bitsandbytes), for bases too large for bf16.
  Needs CUDA; a config asking for it on a machine without fails before any stage runs.
- ``full``: every weight trains; the artifact holds the whole model (``model/``).
- ``hft``: half fine-tuning (Hui et al. 2024, "HFT: Half Fine-Tuning for Large Language
  Models"): full fine-tuning in rounds, each training one half of the decoder's parameter
  groups while the other half keeps its weights, which the paper shows forgets less of what
  the base knew. ``HalfFineTuning`` says which half is which.

The adapter kinds save ``adapter/`` (PEFT ``save_pretrained``, megabytes); ``full`` and ``hft``
save ``model/`` (``save_pretrained``, safetensors). Evaluate and export read either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_DEVICE_CHECKS: ContextVar[bool] = ContextVar("device_checks", default=True)
FULL_WEIGHTS = ("full", "hft")  # adapters that train (and save) the model's own weights
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def trains_full_weights(cfg) -> bool:
    return cfg.train.adapter in FULL_WEIGHTS


def peft_config(cfg):
    """PEFT LoRA config from ``train.lora`` for lora/dora/qlora; None when the model's own
    weights train (full, hft). ``all-linear`` targets every linear layer but the head."""
    from peft import LoraConfig

    if trains_full_weights(cfg):
        return None
    lora = cfg.train.lora
    modules_to_save = lora.modules_to_save
    if modules_to_save is None:
        # A tokenizer trained from scratch means embeddings nobody has trained: an adapter on
        # top of random embeddings can barely move the loss, so those train fully.
        modules_to_save = ["embed_tokens", "lm_head"] if cfg.model.name_or_path is None else []
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=modules_to_save or None,
        use_dora=cfg.train.adapter == "dora",
        task_type="CAUSAL_LM",
    )


@contextmanager
def no_device_checks() -> Iterator[None]:
    """Configs validated in this block skip ``check_runs_here``: `tuneline plan` plans a GPU
    config on a laptop."""
    token = _DEVICE_CHECKS.set(False)
    try:
        yield
    finally:
        _DEVICE_CHECKS.reset(token)


def check_runs_here(cfg) -> None:
    """What needs CUDA or an optional package says so at config validation, not an hour in.

    Raises:
        ValueError: ``train.adapter`` is qlora on a machine without CUDA or bitsandbytes;
            ``train.liger_kernel`` without CUDA or liger-kernel; ``train.attention`` is
            flash_attention_2 without CUDA or flash-attn.
    """
    import importlib.util

    import torch

    if not _DEVICE_CHECKS.get():
        return
    t = cfg.train
    if t.liger_kernel and not (torch.cuda.is_available() and importlib.util.find_spec("liger_kernel")):
        raise ValueError(
            "train.liger_kernel needs a CUDA GPU and `pip install liger-kernel` (Triton kernels); "
            "set it to false here"
        )
    if t.attention == "flash_attention_2" and not (
        torch.cuda.is_available() and importlib.util.find_spec("flash_attn")
    ):
        raise ValueError(
            "train.attention flash_attention_2 needs a CUDA GPU and `pip install flash-attn`; use "
            "auto (flash-attn when present, else sdpa)"
        )
    if t.adapter != "qlora":
        return

    if not torch.cuda.is_available():
        raise ValueError(
            "train.adapter is qlora, which holds the base in 4-bit NF4 with bitsandbytes and needs "
            "a CUDA GPU; this machine has none. Use adapter: lora (or dora) here, or run the train "
            "stage on a GPU worker"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            "train.adapter is qlora, which needs bitsandbytes: pip install 'tuneline[gpu]' "
            "(or pip install bitsandbytes)"
        )


def base_model_kwargs(cfg) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments: 4-bit weights for qlora, the attention kernel."""
    import torch

    kwargs: dict[str, Any] = {}
    if cfg.train.adapter == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # the QLoRA paper's data type for normal-ish weights
            bnb_4bit_use_double_quant=True,  # quantises the quantisation constants: ~0.4 bit/param
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    attention = attention_implementation(cfg)
    if attention is not None:
        kwargs["attn_implementation"] = attention
    return kwargs


def attention_implementation(cfg) -> str | None:
    """``train.attention`` resolved for this device (None: transformers' default, sdpa).

    auto: flash_attention_2 on CUDA when flash-attn is installed (varlen kernels read packed
    rows' boundaries from position ids); otherwise sdpa, where transformers builds a
    block-diagonal mask from the restarting position ids of a packed row.
    """
    import importlib.util

    import torch

    chosen = cfg.train.attention
    if chosen != "auto":
        return chosen
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def prepare(model, cfg):
    """The base made ready to train: k-bit preparation for qlora; nothing else to do for the
    others (PEFT wraps lora/dora in the trainer; full and hft train the model as it is)."""
    if cfg.train.adapter == "qlora":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.train.gradient_checkpointing)
        )
    return model


# ----------------------------------------------------------------------- half fine-tuning


def hft_halves(model) -> tuple[list[str], list[str]]:
    """The two halves of the decoder's parameter groups, as parameter names.

    A group is one block's attention or one block's MLP (norms go with their sub-layer).
    Half A is the attention of even blocks and the MLP of odd ones, half B the rest, so each
    round trains half of every kind of layer at every depth of the network. Parameters
    outside the blocks (embeddings, final norm, head) train in every round: they are shared
    by both halves.
    """
    a, b = [], []
    for name, _ in model.named_parameters():
        m = _LAYER.search(name)
        if m is None:
            continue
        layer = int(m.group(1))
        attention = ".self_attn." in name or "input_layernorm" in name
        (a if (layer % 2 == 0) == attention else b).append(name)
    return a, b


def hft_callback(cfg, model):
    """A trainer callback that trains half A in rounds 0, 2, 4... and half B in rounds 1, 3...

    A round is ``train.hft.round_steps`` optimizer steps (default: a quarter of the run). The
    frozen half keeps its weights exactly: its gradients are dropped before each optimizer
    step, so AdamW neither moves it nor decays it, and its moments wait for its next round.
    """
    from transformers import TrainerCallback

    half_a, half_b = hft_halves(model)
    if not half_a or not half_b:
        raise ValueError(
            "train.adapter is hft, but the model's decoder blocks were not found (parameters "
            "named *.layers.<n>.self_attn/mlp.*); use adapter: full for this architecture"
        )
    params = dict(model.named_parameters())

    class HalfFineTuning(TrainerCallback):
        round_steps = 1

        def on_train_begin(self, args, state, control, **kwargs):
            self.round_steps = cfg.train.hft.round_steps or max(1, state.max_steps // 4)

        def frozen(self, step: int) -> list[str]:
            return half_b if (step // self.round_steps) % 2 == 0 else half_a

        def on_step_begin(self, args, state, control, **kwargs):
            frozen = set(self.frozen(state.global_step))
            for name in half_a + half_b:
                # No weight gradients for the frozen half: the backward pass skips them.
                params[name].requires_grad_(name not in frozen)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            for name in self.frozen(state.global_step):
                params[name].grad = None

    return HalfFineTuning()
