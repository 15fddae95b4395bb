"""`tuneline plan`'s estimates against the peaks and rates measured on one H200 by
../shared/bench/trl_baseline.py (TRL SFTTrainer + PEFT LoRA r=16 alpha=32 on the 7 block
linears, bf16, sdpa; table in ../shared/bench/README.md).

Each variant as trl_baseline.py runs it: packed variants use batch 8 // 2 = 4 rows of 2048 tokens
("wrapped" packing: no attention mask, so sdpa keeps k/v un-repeated); "batch 8" is --batch 16;
"padded" is 8 rows padded to the longest (the peak is a batch holding a 2048-token row, with a
padding mask). TRL 1.16 scores the LM head in chunks with or without liger, so no variant holds
full-vocab logits. Measured = torch.cuda.max_memory_allocated, so it is compared with the
estimate's `allocated` (no CUDA context, no allocator slack).

usage: python bench/plan_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.train.plan import BLOCK_LINEARS, GiB, Setup, estimate_memory, estimate_speed, shape  # noqa: E402

# (label, shape, batch, checkpointing, liger, padded, measured peak GiB, measured tokens/s)
RUNS = [
    ("1B padded, batch 8, ckpt", "llama-3.2-1b", 8, True, False, True, 6.5, 6477),
    ("1B packed 4x2048, ckpt", "llama-3.2-1b", 4, True, False, False, 4.8, 29414),
    ("1B packed + liger, ckpt", "llama-3.2-1b", 4, True, True, False, 4.8, 31791),
    ("1B packed + liger, no ckpt, batch 4", "llama-3.2-1b", 4, False, True, False, 15.6, 46994),
    ("1B packed + liger, no ckpt, batch 8", "llama-3.2-1b", 8, False, True, False, 28.6, 53338),
    ("8B packed, ckpt", "llama-3-8b", 4, True, False, False, 20.3, 6151),
    ("8B packed + liger, ckpt", "llama-3-8b", 4, True, True, False, 19.8, 8573),
    ("8B packed + liger, no ckpt", "llama-3-8b", 4, False, True, False, 62.6, 9808),
]


def bench_setup(name: str, batch: int, ckpt: bool, liger: bool, padded: bool) -> Setup:
    return Setup(
        arch=shape(name),
        batch_size=batch,
        seq_len=2048,
        adapter="lora",
        lora_r=16,
        target_modules=BLOCK_LINEARS,
        gradient_checkpointing=ckpt,
        liger_kernel=liger,
        fused_lm_head=True,
        attention="sdpa",
        attention_mask=padded,
        packed_row=False,
    )


def main() -> None:
    print(
        f"{'variant':38} {'est GiB':>8} {'meas GiB':>8} {'ratio':>6}   {'est tok/s':>9} {'meas tok/s':>10} {'ratio':>6}"
    )
    for label, name, batch, ckpt, liger, padded, peak, tps in RUNS:
        s = bench_setup(name, batch, ckpt, liger, padded)
        est = estimate_memory(s)["allocated"] / GiB
        rate = estimate_speed(s)["tokens_per_s"]
        note = "  (measured counts non-pad tokens only: 61% pad)" if padded else ""
        print(
            f"{label:38} {est:8.2f} {peak:8.1f} {est / peak:6.2f}   {rate:9,.0f} {tps:10,} {rate / tps:6.2f}{note}"
        )


if __name__ == "__main__":
    main()
