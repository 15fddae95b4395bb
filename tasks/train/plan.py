"""plan: GPU memory and speed of the train stage, from the model's config alone (no weights).

``tuneline plan [CONFIG] --gpu-memory 80GiB`` counts the parameters of a Llama-family decoder
analytically, estimates the peak GPU memory of one training step as a breakdown (weights,
trainable copies, gradients, AdamW states, activations, logits, workspace, fixed overhead),
the tokens per second, and the largest micro-batch that fits.

The activation model re-derives Korthikanti et al. (2022, "Reducing Activation Recomputation
in Large Transformer Models"; per layer ``s·b·h·(34 + 5·a·s/h)`` bytes for a GPT block) for a
Hugging Face Llama block in bf16, counting what autograd keeps per token and layer:

- each RMSNorm: its fp32 upcast of the input (4h) and the bf16 normalised output (2h): 12h for two;
- attention: q after RoPE (2·q_dim), k and v (2·kv_dim each; 2·q_dim each when a mask makes
  transformers repeat them), the attention output (2·q_dim) and its contiguous copy that
  o_proj reads (2·q_dim). Flash/SDPA memory-efficient kernels keep no ``s×s`` scores, so the
  ``5·a·s/h`` term is dropped; eager attention adds its fp32 softmax and bf16 copy (6·a·S);
- gated MLP: gate output, SiLU output, up output and their product: 4 × 2·i = 8i;
- LoRA: each adapted linear's ``lora_A`` output (2r); dropout > 0 adds its output and mask (3·in);
  DoRA keeps the base and LoRA outputs for the magnitude's gradient (4·out).

For the Llama-3 shapes that is ``18h + 4kv_dim + 8i`` bytes per token and layer: 102 KiB for
Llama-3.2-1B, 188 KiB for Llama-3-8B, which matches the slope of the peaks measured on an H200
(``../shared/bench``; ``bench/plan_check.py`` prints estimate against measurement).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

GiB = 2**30

# -------------------------------------------------------------------------------- constants
# One formula for every case; each constant with the reason for its value.

BF16 = 2  # bytes: weights, activations and gradients of the bf16 model (Trainer bf16=True)
FP32 = 4  # bytes: PEFT keeps adapter weights in fp32 (autocast_adapter_dtype), so their grads and states too
ADAMW_STATES = (
    2  # exp_avg and exp_avg_sq, each in the dtype of its parameter (torch AdamW zeros_like)
)
# bitsandbytes NF4 with double quantisation: 4 bits a weight, one 8-bit absmax per 64-weight
# block, one fp32 constant per 256 absmax values.
NF4 = 0.5 + 1 / 64 + 4 / (64 * 256)
# peft.prepare_model_for_kbit_training upcasts every parameter that is not 4-bit (embeddings,
# head, norms) from bf16 to fp32.
QLORA_OTHER = FP32
# TRL's chunked LM head (SFTTrainer, add_fused_lm_head) scores 4096 tokens × 32768 vocab
# entries per bf16 tile and accumulates the hidden-state gradient in fp32.
HEAD_TOKEN_TILE, HEAD_VOCAB_TILE = 4096, 32768
# Full-vocab logits when nothing fuses the head: the bf16 logits the output keeps (2), their
# fp32 upcast kept by log-softmax (4) and the fp32 gradient (4).
LOGIT_BYTES = 2 + 4 + 4
# Outside torch.cuda.max_memory_allocated (what the bench measures), but on the card: the
# CUDA context with cuBLAS/cuDNN handles, and the caching allocator's fragmentation.
CUDA_CONTEXT = 0.5 * GiB
ALLOCATOR_SLACK = 0.05
# Tokens/s: achieved FLOP/s = peak × MFU. Peak: the measured bf16 dense-matmul ceiling of an
# H200. MFU 0.33: the median of the seven packed TRL+PEFT runs of the shared bench (0.28-0.52,
# same 4N/6N FLOP accounting as here).
PEAK_TFLOPS = 790.0
MFU = 0.33
MAX_BATCH = 64  # largest micro-batch the recommendation tries (powers of two)

# The shapes of ../shared/bench/trl_baseline.py (no hub is needed to plan for them).
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
    "llama-3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
}

BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTERS = ("lora", "dora", "qlora", "full", "hft")
ATTENTIONS = ("flash_attention_2", "sdpa", "eager")


class PlanError(ValueError):
    """A plan that cannot be made (unknown shape, unreadable config, bad memory size)."""


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Arch:
    """The shape of a Llama-family decoder: all the planner reads from a model config."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    name: str = ""

    @property
    def d(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.d

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.d

    def linears(self) -> dict[str, tuple[int, int]]:
        """``{name: (in_features, out_features)}`` of one decoder block's linear layers."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def params(self) -> dict[str, int]:
        """Parameter counts: ``embed``, ``blocks`` (linears + norms), ``block_linears``, ``norms``
        (final norm), ``head`` (0 when tied) and ``total``."""
        h, L = self.hidden_size, self.num_hidden_layers
        linear = sum(a * b for a, b in self.linears().values())
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        blocks = L * (linear + 2 * h)
        return dict(
            embed=embed,
            blocks=blocks,
            block_linears=L * linear,
            norms=h,
            head=head,
            total=embed + blocks + h + head,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "") -> Arch:
        text = d.get("text_config") if isinstance(d.get("text_config"), dict) else d
        try:
            heads = int(text["num_attention_heads"])
            return cls(
                hidden_size=int(text["hidden_size"]),
                intermediate_size=int(text["intermediate_size"]),
                num_hidden_layers=int(text["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(text.get("num_key_value_heads") or heads),
                vocab_size=int(text["vocab_size"]),
                tie_word_embeddings=bool(
                    text.get("tie_word_embeddings", d.get("tie_word_embeddings", False))
                ),
                head_dim=int(text["head_dim"]) if text.get("head_dim") else None,
                name=name,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(
                f"{name or 'the model config'} is not a Llama-family decoder config: "
                f"missing or bad {e} (needs hidden_size, intermediate_size, num_hidden_layers, "
                "num_attention_heads, vocab_size)"
            ) from None


def shape(name: str) -> Arch:
    """One of the bench's shapes (``SHAPES``)."""
    key = name.lower()
    if key not in SHAPES:
        raise PlanError(f"unknown shape {name!r}; known shapes: {', '.join(SHAPES)}")
    return Arch.from_dict(SHAPES[key], name=key)


def read_model_config(path: str | Path) -> Arch:
    """The shape in a ``config.json`` file (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise PlanError(f"cannot read the model config {p}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise PlanError(f"the model config {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PlanError(f"the model config {p} must hold a JSON object")
    return Arch.from_dict(data, name=str(p))


def arch_of(cfg) -> Arch:
    """The shape of ``cfg.model``: the tiny Llama, or the hub/local model's config (no weights)."""
    m = cfg.model
    if m.name_or_path is None:
        t = m.tiny
        # tuneline.models.load_base_model: vocab of the trained tokenizer, MHA, untied head
        return Arch(
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_attention_heads,
            vocab_size=t.vocab_size,
            tie_word_embeddings=False,
            name="tiny",
        )
    local = Path(m.name_or_path)
    if local.is_dir() and (local / "config.json").is_file():
        return read_model_config(local)
    try:
        from transformers import AutoConfig

        kwargs: dict[str, Any] = {"trust_remote_code": m.trust_remote_code}
        if m.revision:
            kwargs["revision"] = m.revision
        hf = AutoConfig.from_pretrained(m.name_or_path, **kwargs)
    except Exception as e:  # offline, unknown id, gated repo: all say the same to the user
        raise PlanError(
            f"cannot read the config of model {m.name_or_path!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); pass --model-config path/to/config.json "
            f"or --shape ({', '.join(SHAPES)})"
        ) from None
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    d = text.to_dict()
    d.setdefault("tie_word_embeddings", getattr(hf, "tie_word_embeddings", False))
    return Arch.from_dict(d, name=m.name_or_path)


# ------------------------------------------------------------------------------- the setup


@dataclass(frozen=True)
class Setup:
    """One training step as the planner sees it."""

    arch: Arch
    batch_size: int
    seq_len: int
    adapter: str = "lora"
    lora_r: int = 16
    target_modules: tuple[str, ...] | str = "all-linear"
    modules_to_save: tuple[str, ...] = ()
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = True
    liger_kernel: bool = False
    # TRL's SFTTrainer scores the LM head in chunks (add_fused_lm_head): no full-vocab logits
    fused_lm_head: bool = True
    attention: str = "sdpa"
    # a 4-D mask reaches the attention (sdpa/eager with padded rows or padding-free packing)
    attention_mask: bool = False
    # padding-free packing: the micro-batch is one row of batch_size × seq_len tokens
    packed_row: bool = False
    gradient_accumulation_steps: int = 1

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


def trl_fuses_lm_head() -> bool:
    """Whether the installed TRL's SFTTrainer scores the head in chunks (TRL >= 1.x does), read
    from its source rather than imported: planning stays fast and needs no GPU stack."""
    try:
        dist = importlib.metadata.distribution("trl")
        src = Path(str(dist.locate_file("trl/trainer/sft_trainer.py")))
        return "fused_lm_head=True" in src.read_text()
    except (importlib.metadata.PackageNotFoundError, OSError):
        return False


def resolve_attention(chosen: str) -> str:
    """``train.attention`` as the train stage resolves it on a CUDA machine."""
    if chosen != "auto":
        return chosen
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def setup_of(cfg, arch: Arch | None = None) -> Setup:
    """The setup the train stage would run for ``cfg`` on a GPU (new fields read with getattr,
    so older configs plan too). ``arch``: plan for this shape instead of ``cfg.model``'s (a
    pretrained model: no embeddings train unless ``lora.modules_to_save`` says so)."""
    t = cfg.train
    tiny = arch is None and cfg.model.name_or_path is None
    arch = arch or arch_of(cfg)
    lora = t.lora
    modules_to_save = lora.modules_to_save
    if modules_to_save is None:  # adapters.peft_config: the tiny model's new embeddings train
        modules_to_save = ["embed_tokens", "lm_head"] if tiny else []
    attention = resolve_attention(getattr(t, "attention", "auto"))
    ckpt = getattr(t, "gradient_checkpointing", None)
    return Setup(
        arch=arch,
        batch_size=t.batch_size,
        seq_len=t.max_length,
        adapter=getattr(t, "adapter", "lora"),
        lora_r=lora.r,
        target_modules=(
            lora.target_modules
            if isinstance(lora.target_modules, str)
            else tuple(lora.target_modules)
        ),
        modules_to_save=tuple(modules_to_save),
        lora_dropout=lora.dropout,
        gradient_checkpointing=True if ckpt is None else bool(ckpt),  # None: on with CUDA
        liger_kernel=bool(getattr(t, "liger_kernel", False)),
        fused_lm_head=trl_fuses_lm_head(),
        attention=attention,
        # flash-attention reads packed rows' boundaries from position ids; sdpa/eager get a mask
        attention_mask=attention != "flash_attention_2",
        packed_row=bool(t.packing),
        gradient_accumulation_steps=t.gradient_accumulation_steps,
    )


# ------------------------------------------------------------------------ parameter counts


def adapted(setup: Setup) -> dict[str, tuple[int, int]]:
    """The linear layers of one block the adapter adapts (``all-linear``: every one, not the head)."""
    linears = setup.arch.linears()
    if setup.target_modules == "all-linear":
        return linears
    return {n: linears[n] for n in setup.target_modules if n in linears}


def adapter_params(setup: Setup) -> int:
    """LoRA ``r·(in + out)`` per adapted linear (DoRA: plus a magnitude per output), all blocks;
    an ``lm_head`` target adds its own."""
    if setup.adapter not in ("lora", "dora", "qlora"):
        return 0
    r, dora = setup.lora_r, setup.adapter == "dora"
    per_block = sum(r * (i + o) + (o if dora else 0) for i, o in adapted(setup).values())
    n = setup.arch.num_hidden_layers * per_block
    if setup.target_modules != "all-linear" and "lm_head" in setup.target_modules:
        h, v = setup.arch.hidden_size, setup.arch.vocab_size
        n += r * (h + v) + (v if dora else 0)
    return n


def saved_module_params(setup: Setup) -> int:
    """Parameters of ``modules_to_save`` (PEFT trains a full copy of each)."""
    if setup.adapter not in ("lora", "dora", "qlora"):
        return 0
    p = setup.arch.params()
    sizes = {"embed_tokens": p["embed"], "lm_head": p["head"] or p["embed"]}
    return sum(sizes.get(m, 0) for m in setup.modules_to_save)


def trainable_params(setup: Setup) -> int:
    """Parameters with a gradient in one step (hft: half of the blocks plus everything outside)."""
    p = setup.arch.params()
    if setup.adapter == "full":
        return p["total"]
    if setup.adapter == "hft":
        return p["total"] - p["blocks"] // 2
    return adapter_params(setup) + saved_module_params(setup)


# ---------------------------------------------------------------------------------- memory


def activation_bytes_per_token(setup: Setup) -> float:
    """Bytes autograd keeps per token for one decoder layer (see the module docstring)."""
    a = setup.arch
    h, i = a.hidden_size, a.intermediate_size
    repeat_kv = (
        setup.attention_mask and setup.attention != "flash_attention_2" and a.kv_dim != a.q_dim
    )
    kv = a.q_dim if repeat_kv else a.kv_dim
    norms = 2 * (FP32 * h + BF16 * h)
    attention = BF16 * (a.q_dim + 2 * kv + a.q_dim + a.q_dim)
    mlp = 4 * BF16 * i
    total = norms + attention + mlp
    if setup.adapter in ("lora", "dora", "qlora"):
        for fan_in, fan_out in adapted(setup).values():
            total += BF16 * setup.lora_r
            if setup.lora_dropout > 0:
                total += (BF16 + 1) * fan_in
            if setup.adapter == "dora":
                total += 2 * BF16 * fan_out
    if setup.attention == "eager":
        total += (FP32 + BF16) * a.num_attention_heads * attention_span(setup)
    return total


def attention_span(setup: Setup) -> int:
    """Keys each query sees the scores of: the packed row's length, or one padded row's."""
    return setup.tokens if setup.packed_row else setup.seq_len


def mask_bytes(setup: Setup) -> tuple[float, float]:
    """(bool mask built once, additive bf16 bias kept per layer): SDPA turns a boolean mask into
    a bias that its memory-efficient kernel keeps for the backward."""
    if not setup.attention_mask or setup.attention == "flash_attention_2":
        return 0.0, 0.0
    rows = 1 if setup.packed_row else setup.batch_size
    cells = rows * attention_span(setup) ** 2
    return float(cells), float(BF16 * cells) if setup.attention == "sdpa" else 0.0


def estimate_memory(setup: Setup) -> dict[str, float]:
    """Peak GPU memory of one training step, in bytes, by component.

    ``allocated`` is comparable to ``torch.cuda.max_memory_allocated``; ``total`` adds what the
    card needs besides (CUDA context, allocator slack) and is what must fit.
    """
    if setup.adapter not in ADAPTERS:
        raise PlanError(f"unknown adapter {setup.adapter!r}; known: {', '.join(ADAPTERS)}")
    a, T, L = setup.arch, setup.tokens, setup.arch.num_hidden_layers
    p = a.params()
    full = setup.adapter in ("full", "hft")

    if setup.adapter == "qlora":
        weights = NF4 * p["block_linears"] + QLORA_OTHER * (p["total"] - p["block_linears"])
        copy_bytes = QLORA_OTHER
    else:
        weights = BF16 * p["total"]
        copy_bytes = BF16
    if full:
        trainable = 0.0
        grads = BF16 * trainable_params(setup)
        # hft: one optimizer over every weight; a frozen half's moments wait for its next round
        optimizer = ADAMW_STATES * BF16 * p["total"]
    else:
        lora, saved = adapter_params(setup), saved_module_params(setup)
        trainable = FP32 * lora + copy_bytes * saved
        grads = trainable
        optimizer = ADAMW_STATES * trainable

    per_token = activation_bytes_per_token(setup)
    mask_once, mask_per_layer = mask_bytes(setup)
    one_layer = T * per_token + mask_per_layer
    if setup.gradient_checkpointing:
        # every layer's bf16 input, plus one layer recomputed in full during its backward
        activations = L * BF16 * a.hidden_size * T + one_layer + mask_once
    else:
        activations = L * one_layer + mask_once

    materialised = not (setup.liger_kernel or setup.fused_lm_head)
    if materialised:
        logits = LOGIT_BYTES * T * a.vocab_size
        head = 0.0
    else:
        logits = 0.0
        # the gathered bf16 hidden states, their fp32 gradient and its bf16 cast, one tile
        head = (BF16 + FP32 + BF16) * T * a.hidden_size + BF16 * min(T, HEAD_TOKEN_TILE) * min(
            a.vocab_size, HEAD_VOCAB_TILE
        )
    # Backward through an MLP: gradients of the down_proj input and of the gate and up outputs
    # (3 × 2i a token) on top of what is kept. qlora also dequantises its largest weight.
    layer_backward = 3 * BF16 * a.intermediate_size * T
    if setup.adapter == "qlora":
        layer_backward += BF16 * max(x * y for x, y in a.linears().values())
    # The head's backward and a layer's backward do not overlap: the larger one counts.
    workspace = max(head, layer_backward)

    allocated = weights + trainable + grads + optimizer + activations + logits + workspace
    overhead = CUDA_CONTEXT + ALLOCATOR_SLACK * allocated
    return dict(
        weights=weights,
        trainable=trainable,
        gradients=grads,
        optimizer=optimizer,
        activations=activations,
        logits=logits,
        workspace=workspace,
        allocated=allocated,
        overhead=overhead,
        total=allocated + overhead,
    )


# ------------------------------------------------------------------------------------ speed


def flops_per_token(setup: Setup) -> float:
    """Training FLOPs a token: forward 2N, activation gradients 2N, weight gradients 2N for what
    trains in full (LoRA's own are negligible), recomputed forward 2N with checkpointing."""
    n = setup.arch.params()["total"]
    f = 4.0 * n
    if setup.adapter == "full":
        f += 2.0 * n
    elif setup.adapter == "hft":
        f += 2.0 * trainable_params(setup)
    if setup.gradient_checkpointing:
        f += 2.0 * n
    return f


def estimate_speed(
    setup: Setup, peak_tflops: float = PEAK_TFLOPS, mfu: float = MFU
) -> dict[str, float]:
    """Tokens per second (every position of the micro-batch; with packing, trained tokens) and
    seconds per optimizer step."""
    tps = peak_tflops * 1e12 * mfu / flops_per_token(setup)
    return dict(
        tokens_per_s=tps,
        step_s=setup.tokens * setup.gradient_accumulation_steps / tps,
        flops_per_token=flops_per_token(setup),
    )


# ---------------------------------------------------------------------------- recommending

_UNITS = {
    "": GiB,
    "b": 1,
    "k": 2**10,
    "m": 2**20,
    "g": GiB,
    "t": 2**40,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": GiB,
    "tib": 2**40,
}


def parse_memory(text: str) -> float:
    """Bytes in ``80GiB``, ``141GB``, ``24 GiB``, ``80G`` (binary) or ``80`` (GiB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise PlanError(
            f"cannot read the GPU memory {text!r}: give a size such as 80GiB, 141GB or '24 GiB'"
        )
    return float(m.group(1)) * _UNITS[unit]


def _fits(setup: Setup, gpu: float) -> bool:
    return estimate_memory(setup)["total"] <= gpu


def recommend(setup: Setup, gpu: float) -> dict[str, Any]:
    """The largest power-of-two micro-batch (up to ``MAX_BATCH``) that fits without
    checkpointing, else with it, else with qlora (for lora/dora); else a shorter ``max_length``.
    ``gradient_accumulation_steps`` keeps the configured effective batch."""
    effective = setup.batch_size * setup.gradient_accumulation_steps
    rec: dict[str, Any] = {"fits_as_written": _fits(setup, gpu)}
    tries = [(setup.adapter, False), (setup.adapter, True)]
    if setup.adapter in ("lora", "dora"):
        tries.append(("qlora", True))
    batches = [2**k for k in range(int(math.log2(MAX_BATCH)) + 1)]
    for adapter, ckpt in tries:
        trial = replace(setup, adapter=adapter, gradient_checkpointing=ckpt)
        fitting = [b for b in batches if _fits(replace(trial, batch_size=b), gpu)]
        if fitting:
            b = fitting[-1]
            rec.update(
                adapter=adapter,
                batch_size=b,
                gradient_checkpointing=ckpt,
                gradient_accumulation_steps=max(1, math.ceil(effective / b)),
            )
            rec["advice"] = (
                f"{'adapter qlora, ' if adapter != setup.adapter else ''}batch_size {b}, "
                f"gradient_checkpointing {'on' if ckpt else 'off'}, "
                f"gradient_accumulation_steps {rec['gradient_accumulation_steps']}"
            )
            return rec
    last = tries[-1][0]
    length = setup.seq_len
    while length > 16:
        length //= 2
        trial = replace(
            setup, adapter=last, batch_size=1, seq_len=length, gradient_checkpointing=True
        )
        if _fits(trial, gpu):
            rec.update(
                adapter=last,
                max_length=length,
                batch_size=1,
                gradient_checkpointing=True,
                gradient_accumulation_steps=effective,
            )
            rec["advice"] = (
                f"nothing fits at max_length {setup.seq_len}: {'adapter qlora, ' if last != setup.adapter else ''}"
                f"max_length {length}, batch_size 1, gradient_checkpointing on"
            )
            return rec
    rec["advice"] = "does not fit on this GPU at any batch size or length: a bigger GPU, or FSDP"
    return rec


# ------------------------------------------------------------------------------- the plan


def plan(
    setup: Setup, gpu_memory: float, peak_tflops: float = PEAK_TFLOPS, mfu: float = MFU
) -> dict[str, Any]:
    """Everything ``tuneline plan`` prints, JSON-ready (bytes as numbers)."""
    s = asdict(setup)
    s["arch"] = asdict(setup.arch)
    return dict(
        setup=s,
        params=dict(
            setup.arch.params(), adapter=adapter_params(setup), trainable=trainable_params(setup)
        ),
        memory=estimate_memory(setup),
        speed=estimate_speed(setup, peak_tflops, mfu),
        gpu_memory=gpu_memory,
        recommendation=recommend(setup, gpu_memory),
        assumptions=dict(
            peak_tflops=peak_tflops,
            mfu=mfu,
            logits="full fp32"
            if not (setup.liger_kernel or setup.fused_lm_head)
            else "chunked (no full-vocab logits)",
        ),
    )
