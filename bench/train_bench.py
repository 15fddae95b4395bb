"""The train stage's trainer side by side with plain TRL, in one process.

What runs (``--only`` takes comma-separated fnmatch patterns over these names; the ``extra``
ones run only when named):

- ``1b/trl_tutorial``: plain TRL from ``trl_baseline.py`` (its own ``run``): padded, batch 8,
  gradient checkpointing (the tutorial recipe).
- ``1b/trl_best``: plain TRL, ``packed`` (wrapped) + liger, no checkpointing, 8 x 2048 rows
  (``trl_baseline.py --batch 16``): the best plain-TRL 1B row of ``../shared/bench/README.md``.
- ``1b/tuneline``: the train stage's trainer (``tasks.train.sft.build_trainer`` with
  ``tasks.train.training_args`` and ``tasks.train.adapters.peft_config``): bfd packing
  (padding-free, contamination-free), liger on, no checkpointing, 8 packed rows of 2048 per
  step (the tokens per step of ``1b/trl_best``), ``train.attention: auto`` (flash_attention_2
  when flash-attn imports, else sdpa; printed).
- ``8b/trl_best``: plain TRL, packed + liger, no checkpointing, 4 x 2048 rows.
- ``8b/tuneline``: the stage's trainer on the 8B shape, 4 packed rows of 2048 per step.
- ``1b/dpo_trl``: TRL ``DPOTrainer`` with its defaults (LoRA as the baseline, batch 8,
  checkpointing on, no liger), ``max_length`` set to the stage's so both see the same tokens.
- ``1b/dpo_tuneline``: the stage's ``dpo`` method (``tasks/train/dpo.py``; skipped with a note
  when it does not import) with the GPU settings above.
- extra ``1b/tuneline_flex``: ``1b/tuneline`` with ``train.attention: flex_attention``.
- extra ``1b/tuneline_sdpa``: ``1b/tuneline`` with ``train.attention: sdpa`` forced.
- extra ``1b/tuneline_compile``: ``1b/tuneline`` plus ``torch_compile=True``.

Models are the Llama-3.2-1B / Llama-3-8B shapes of ``trl_baseline.py`` (random weights, bf16)
and the data its ``make_dataset`` (random token ids, long-tailed lengths, median ~300). For the
stage, each row becomes a ``tuneline.splits.SplitRow`` whose text is the ids written as words
(``t17 t4031 ...``) of a word-level tokenizer with ids equal to the model's, so the stage's
trainer tokenizes back exactly the baseline's token ids (first quarter prompt, rest completion).

Per variant: real (non-pad) tokens/s after warm-up steps, s/step, pad fraction (both counted
on the trainer's own dataloader, as ``trl_baseline.py`` does), peak GPU memory
(``max_memory_allocated``, reset before training) and MFU against 790 TFLOP/s with
6·N (checkpointing) or 4·N FLOPs per token, +2·N for DPO's reference forward.
Prints one JSON line per variant, a markdown table and the ratios against the targets.

usage: python bench/train_bench.py [--tiny] [--only PATTERNS] [--time-budget S]
                                   [--baseline ../shared/bench/trl_baseline.py] [--out DIR]
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the device machine runs from a copy without an install
    sys.path.insert(0, str(REPO))

PEAK_FLOPS = 790e12  # measured bf16 matmul ceiling of one H200 (see ../shared/bench/README.md)

VARIANTS: dict[str, dict] = {
    "1b/trl_tutorial": dict(model="1b", kind="trl", trl="padded", batch=8,
                            label="TRL padded, batch 8, ckpt (tutorial)"),
    "1b/trl_best": dict(model="1b", kind="trl", trl="packed_liger_nockpt", batch=16,
                        label="TRL packed (wrapped) + liger, no ckpt, 8x2048"),
    "1b/tuneline": dict(model="1b", kind="sft", batch=8, attention="auto",
                        label="tuneline bfd + liger, no ckpt, 8x2048"),
    "8b/trl_best": dict(model="8b", kind="trl", trl="packed_liger_nockpt", batch=8,
                        label="TRL packed (wrapped) + liger, no ckpt, 4x2048"),
    "8b/tuneline": dict(model="8b", kind="sft", batch=4, attention="auto",
                        label="tuneline bfd + liger, no ckpt, 4x2048"),
    "1b/dpo_trl": dict(model="1b", kind="dpo_trl", batch=8, label="TRL DPOTrainer defaults, batch 8"),
    "1b/dpo_tuneline": dict(model="1b", kind="dpo", batch=8,
                            label="tuneline dpo + liger, no ckpt, batch 8"),
    "1b/tuneline_flex": dict(model="1b", kind="sft", batch=8, attention="flex_attention", extra=True,
                             label="tuneline bfd + liger, no ckpt, flex_attention"),
    "1b/tuneline_sdpa": dict(model="1b", kind="sft", batch=8, attention="sdpa", extra=True,
                             label="tuneline bfd + liger, no ckpt, sdpa"),
    "1b/tuneline_compile": dict(model="1b", kind="sft", batch=8, attention="auto", compile=True, extra=True,
                                label="tuneline bfd + liger, no ckpt, torch.compile"),
}


# ------------------------------------------------------------------------------ helpers


def load_baseline(path: str):
    """``trl_baseline.py`` as a module: its shapes, data, meter and ``run``."""
    path = os.path.abspath(path)
    spec = importlib.util.spec_from_file_location("trl_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cuda_on(args) -> bool:
    import torch

    return torch.cuda.is_available() and not args.tiny


def liger_usable(args) -> bool:
    return cuda_on(args) and importlib.util.find_spec("liger_kernel") is not None


def without_liger(bl) -> None:
    """The baseline's liger variants run without liger where it cannot (CPU, not installed);
    their rows then say liger False."""
    sft_config = bl.SFTConfig

    def config(**kw):
        kw["use_liger_kernel"] = False
        return sft_config(**kw)

    bl.SFTConfig = config


def attention_available() -> str:
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def word_tokenizer(vocab: int):
    """Word-level tokenizer whose word ``t<i>`` is id ``i`` (0-2: pad, eos, unk, as the
    baseline's), so text written from ids tokenizes back to the same ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<pad>", "<eos>", "<unk>"])  # split off "t5<eos>" as two tokens
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.model_max_length = 1_000_000
    return fast


def words(ids) -> str:
    return " ".join(f"t{i}" for i in ids)


def sequences(bl, args, vocab: int) -> list[list[int]]:
    """The baseline's data: the same rows its ``run`` trains on."""
    ds, _ = bl.make_dataset(args.rows, vocab, args.max_len)
    return ds["input_ids"]


def sft_rows(seqs):
    """Chat split rows: the first quarter of each sequence the prompt, the rest the reply."""
    from tuneline.splits import SplitRow

    rows = []
    for i, ids in enumerate(seqs):
        k = max(1, len(ids) // 4)
        prompt, completion = words(ids[:k]) + " ", words(ids[k:])
        rows.append(SplitRow(id=f"r{i}", kind="chat", prompt=prompt, completion=completion,
                             text=prompt + completion, n_tokens=len(ids), truncated=False))
    return rows


def preference_rows(seqs):
    """Preference split rows: prompt and chosen from one sequence, the rejected reply the tail
    of another (same length distribution)."""
    from tuneline.splits import SplitRow

    rows, n = [], len(seqs)
    for i, a in enumerate(seqs):
        b = seqs[(i + n // 2) % n]
        k = max(1, len(a) // 4)
        prompt = words(a[:k]) + " "
        chosen, rejected = words(a[k:]), words(b[max(1, len(b) // 4):])
        rows.append(SplitRow(id=f"p{i}", kind="preference", prompt=prompt, completion=chosen,
                             rejected_completion=rejected, text=prompt + chosen, n_tokens=len(a),
                             truncated=False))
    return rows


def build_model(shape: dict, attention: str, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    gpu = cuda_on(args)
    with torch.device("cuda" if gpu else "cpu"):  # in place, as the baseline: fast for 8B
        model = LlamaForCausalLM(LlamaConfig(**shape, attn_implementation=attention))
    return model.to(torch.bfloat16 if gpu else torch.float32)


def count_tokens(trainer, batches: int = 20) -> tuple[float, float]:
    """(real tokens per step, pad fraction) over the first batches of the trainer's own
    dataloader: attention masks where the collator gives them, else every id is real
    (padding-free rows)."""
    dl = trainer.get_train_dataloader()
    real = total = seen = 0
    for b in dl:
        for key, ids in b.items():
            if not key.endswith("input_ids") or not hasattr(ids, "numel"):
                continue
            mask = b.get(key.replace("input_ids", "attention_mask"))
            total += ids.numel()
            real += int(mask.sum()) if mask is not None else ids.numel()
        seen += 1
        if seen >= batches:
            break
    return real / max(seen, 1), 1 - real / max(total, 1)


def measure(trainer, meter, args, n_params: int, flops_per_param: int) -> dict:
    import torch
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # as the stage's fit does: no printed log dicts

    gpu = cuda_on(args)
    real_per_step, pad = count_tokens(trainer)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    secs = meter.elapsed()
    steps = max(meter.steps, 1)
    tok_s = real_per_step * meter.steps / secs
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    return dict(
        params_M=round(n_params / 1e6, 1),
        steps=meter.steps,
        sec_per_step=round(secs / steps, 4),
        real_tokens_per_s=round(tok_s),
        pad_fraction=round(pad, 3),
        peak_gib=round(peak, 2),
        mfu_vs_790tflops=round(tok_s * flops_per_param * n_params / PEAK_FLOPS, 3) if gpu else None,
    )


def stage_config(spec: dict, args, method: str = "sft"):
    """The ``train`` and ``model`` sections the stage reads, with its GPU settings."""
    from tasks.train.config import TrainConfig
    from tuneline.sections import ModelConfig

    train = dict(
        method=method,
        adapter="lora",
        packing=True,
        batch_size=spec["tiny_batch"] if args.tiny else spec["batch"],
        max_length=args.max_len,
        max_steps=args.warmup + args.steps,
        checkpoint_steps=0,
        gradient_checkpointing=False,
        liger_kernel=liger_usable(args),
        attention=spec.get("attention", "auto"),
    )
    # A name makes the stage treat the model as pretrained: a pure LoRA adapter (no trained
    # embeddings, as in the baseline) and the usual 2e-4 rate.
    return SimpleNamespace(train=TrainConfig.model_validate(train),
                           model=ModelConfig(name_or_path=f"bench/random-llama-{spec['model']}"))


# ----------------------------------------------------------------------------- variants


def run_trl(name: str, spec: dict, bl, shape: dict, args) -> dict:
    """A plain-TRL variant through the baseline's own ``run``."""
    ns = SimpleNamespace(tiny=args.tiny, model=spec["model"], rows=args.rows, max_len=args.max_len,
                         warmup=args.warmup, steps=args.steps,
                         batch=spec["tiny_batch"] if args.tiny else spec["batch"])
    res = bl.run(spec["trl"], shape, ns)
    res["liger"] = "liger" in spec["trl"] and liger_usable(args)
    res["attention"] = "sdpa"
    res["ckpt"] = spec["trl"] != "packed_liger_nockpt"  # the baseline's own rule
    return res


def run_sft(name: str, spec: dict, bl, shape: dict, args) -> dict:
    """The stage's trainer: ``sft.build_trainer`` with ``training_args`` and ``peft_config``."""
    from tasks import train
    from tasks.train import adapters, sft

    cfg = stage_config(spec, args)
    attention = adapters.base_model_kwargs(cfg).get("attn_implementation") or "sdpa"
    print(f"# {name}: attention {attention} (train.attention={cfg.train.attention}; "
          f"flash_attn {'importable' if attention_available() != 'sdpa' else 'not importable'}), "
          f"liger {cfg.train.liger_kernel}", flush=True)
    tokenizer = word_tokenizer(shape["vocab_size"])
    rows = sft_rows(sequences(bl, args, shape["vocab_size"]))
    model = build_model(shape, attention, args)
    n_params = sum(p.numel() for p in model.parameters())
    targs = train.training_args(cfg, os.path.join(tempfile.gettempdir(), f"train_bench_{name.replace('/', '_')}"))
    targs.update(disable_tqdm=True)
    if spec.get("compile"):
        targs.update(torch_compile=True)
    meter = bl.Meter(args.warmup)
    trainer = sft.build_trainer(rows, cfg, model=model, tokenizer=tokenizer, args=targs,
                                peft_config=adapters.peft_config(cfg),
                                callbacks=[train.step_logger(), meter])
    ckpt = bool(trainer.args.gradient_checkpointing)
    res = dict(model=spec["model"], variant=name,
               **measure(trainer, meter, args, n_params, 6 if ckpt else 4),
               liger=cfg.train.liger_kernel, attention=attention, ckpt=ckpt,
               plan_gib=planned_gib(cfg, spec, args))
    del trainer, model
    return res


def planned_gib(cfg, spec: dict, args) -> float | None:
    """What `tuneline plan` predicts for this variant's peak (torch's allocated bytes), to set
    beside the measured peak: the planner's check on the stage's own settings."""
    if args.tiny:
        return None
    from tasks.train import plan as planner

    shape_name = {"1b": "llama-3.2-1b", "8b": "llama-3-8b"}[spec["model"]]
    setup = planner.setup_of(cfg, planner.shape(shape_name))
    return round(planner.estimate_memory(setup)["allocated"] / 2**30, 2)


def dpo_data(bl, shape, args):
    from tuneline.splits import preference_example

    rows = preference_rows(sequences(bl, args, shape["vocab_size"]))
    return rows, [preference_example(r, "<eos>") for r in rows]


def run_dpo_trl(name: str, spec: dict, bl, shape: dict, args) -> dict:
    """TRL ``DPOTrainer`` with its defaults, LoRA as the baseline, the stage's max_length."""
    import datasets
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    gpu = cuda_on(args)
    _, examples = dpo_data(bl, shape, args)
    model = build_model(shape, "sdpa", args)
    n_params = sum(p.numel() for p in model.parameters())
    config = DPOConfig(
        output_dir=os.path.join(tempfile.gettempdir(), "train_bench_dpo_trl"),
        max_steps=args.warmup + args.steps, per_device_train_batch_size=spec["tiny_batch"] if args.tiny else spec["batch"],
        max_length=args.max_len, bf16=gpu, use_cpu=not gpu, logging_steps=10_000, save_strategy="no",
        report_to=[], disable_tqdm=True, seed=0,
    )
    meter = bl.Meter(args.warmup)
    trainer = DPOTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(examples),
                         processing_class=word_tokenizer(shape["vocab_size"]),
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=bl.TARGETS, task_type="CAUSAL_LM"),
                         callbacks=[meter])
    ckpt = bool(trainer.args.gradient_checkpointing)
    res = dict(model=spec["model"], variant=name, **measure(trainer, meter, args, n_params, (6 if ckpt else 4) + 2),
               liger=bool(trainer.args.use_liger_kernel), attention="sdpa", ckpt=ckpt)
    del trainer, model
    return res


def run_dpo(name: str, spec: dict, bl, shape: dict, args) -> dict:
    """The stage's dpo method, when ``tasks/train/dpo.py`` imports."""
    try:
        from tasks.train import dpo
    except Exception as e:  # another worker may still be writing it
        return dict(model=spec["model"], variant=name, skipped=f"tasks.train.dpo does not import: {type(e).__name__}: {e}"[:300])
    from tasks import train
    from tasks.train import adapters

    cfg = stage_config(spec, args, method="dpo")
    attention = adapters.base_model_kwargs(cfg).get("attn_implementation") or "sdpa"
    rows, _ = dpo_data(bl, shape, args)
    model = build_model(shape, attention, args)
    n_params = sum(p.numel() for p in model.parameters())
    targs = train.training_args(cfg, os.path.join(tempfile.gettempdir(), "train_bench_dpo_tuneline"))
    targs.update(disable_tqdm=True)
    meter = bl.Meter(args.warmup)
    trainer = dpo.build_trainer(rows, cfg, model=model, tokenizer=word_tokenizer(shape["vocab_size"]), args=targs,
                                peft_config=adapters.peft_config(cfg), callbacks=[train.step_logger(), meter])
    ckpt = bool(trainer.args.gradient_checkpointing)
    res = dict(model=spec["model"], variant=name, **measure(trainer, meter, args, n_params, (6 if ckpt else 4) + 2),
               liger=cfg.train.liger_kernel, attention=attention, ckpt=ckpt)
    del trainer, model
    return res


RUNNERS = {"trl": run_trl, "sft": run_sft, "dpo_trl": run_dpo_trl, "dpo": run_dpo}


# -------------------------------------------------------------------------------- report


def fmt_int(v):
    return f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else "-"


def table(results: list[dict]) -> str:
    lines = ["| variant | what | tokens/s | s/step | pad | peak GiB | plan GiB | MFU | attention | liger | ckpt |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = VARIANTS.get(r["variant"], {}).get("label", "")
        if "real_tokens_per_s" not in r:
            why = r.get("error") or r.get("skipped") or "?"
            lines.append(f"| {r['variant']} | {label} | {why[:120]} | | | | | | | | |")
            continue
        mfu = r.get("mfu_vs_790tflops")
        peak = r.get("peak_gib")
        planned = "-" if r.get("plan_gib") is None else f"{r['plan_gib']:.1f}"
        lines.append(
            f"| {r['variant']} | {label} | {fmt_int(r['real_tokens_per_s'])} | {r['sec_per_step']:.3f} | "
            f"{r['pad_fraction']:.0%} | {'-' if peak is None or math.isnan(peak) else f'{peak:.1f}'} | "
            f"{planned} | "
            f"{'-' if mfu is None else f'{mfu:.2f}'} | {r.get('attention', '-')} | {r.get('liger', '-')} | "
            f"{r.get('ckpt', '-')} |"
        )
    return "\n".join(lines)


def ratios(results: list[dict]) -> list[str]:
    """The issue's targets, from whichever rows ran."""
    ok = {r["variant"]: r for r in results if r.get("real_tokens_per_s")}

    def tok(v):
        return ok[v]["real_tokens_per_s"] if v in ok else None

    def best_tuneline(model):
        rows = [r for v, r in ok.items() if v.startswith(f"{model}/tuneline")]
        return max(rows, key=lambda r: r["real_tokens_per_s"], default=None)

    out = []

    def ratio(label, num, den, target):
        if num is None or den is None:
            out.append(f"- {label}: not measured")
            return
        x = num["real_tokens_per_s"] / den
        out.append(f"- {label}: {x:.2f}x ({num['variant']}) target >= {target}x: {'met' if x >= target else 'MISSED'}")

    b1, b8 = best_tuneline("1b"), best_tuneline("8b")
    ratio("1B tuneline vs tutorial", b1, tok("1b/trl_tutorial"), 8)
    ratio("1B tuneline vs best plain TRL", b1, tok("1b/trl_best"), 1.3)
    ratio("8B tuneline vs best plain TRL", b8, tok("8b/trl_best"), 1.3)
    if b8 is not None and b8.get("mfu_vs_790tflops") is not None:
        mfu, t = b8["mfu_vs_790tflops"], b8["real_tokens_per_s"]
        out.append(f"- 8B LoRA MFU ({b8['variant']}): {mfu:.2f} target >= 0.5: {'met' if mfu >= 0.5 else 'MISSED'}; "
                   f"{t:,} tokens/s target >= 12,300: {'met' if t >= 12_300 else 'MISSED'}")
    else:
        out.append("- 8B LoRA MFU: not measured (needs the 8B tuneline row on a GPU)")
    if "1b/dpo_tuneline" in ok and "1b/dpo_trl" in ok:
        out.append(f"- DPO 1B tuneline vs TRL defaults: {tok('1b/dpo_tuneline') / tok('1b/dpo_trl'):.2f}x")
    else:
        out.append("- DPO 1B tuneline vs TRL defaults: not measured")
    return out


# ---------------------------------------------------------------------------------- main


def selected(only: str | None, extras: bool) -> list[str]:
    if not only:
        return [v for v, s in VARIANTS.items() if extras or not s.get("extra")]
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [v for v in VARIANTS if any(fnmatch.fnmatch(v, p) for p in pats)]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default=str(REPO.parent / "shared" / "bench" / "trl_baseline.py"),
                   help="path of trl_baseline.py (shapes, data, meter, plain-TRL run)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny Llama, a few steps, no liger")
    p.add_argument("--only", help="comma-separated fnmatch patterns of variants (e.g. '1b/*,8b/tuneline')")
    p.add_argument("--extras", action="store_true", help="also run the extra variants (flex, sdpa, compile)")
    p.add_argument("--time-budget", type=float, default=None, help="skip the variants left once this many s have passed")
    p.add_argument("--steps", type=int, default=None, help="measured steps per variant (default 10; 8B: 6; tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; 8B: 2; tiny 1)")
    p.add_argument("--rows", type=int, default=None, help="examples generated (default 1500; tiny 160)")
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--out", default=os.environ.get("OUT"), help="directory for train_bench.json")
    args = p.parse_args(argv)

    t_start = time.monotonic()
    if not os.path.exists(args.baseline):  # `make bench` on a checkout without ../shared
        print(f"# train_bench: skipped, no baseline at {os.path.abspath(args.baseline)}; "
              "pass --baseline PATH (../shared/bench/trl_baseline.py)", flush=True)
        return []
    bl = load_baseline(args.baseline)
    import datasets
    import torch

    datasets.disable_progress_bars()
    if not args.tiny and not torch.cuda.is_available():
        print("# train_bench: no CUDA, running --tiny (the 1B/8B shapes need a GPU)", flush=True)
        args.tiny = True
    if args.tiny:
        args.max_len = min(args.max_len, 256)
    names = selected(args.only, args.extras)
    if not liger_usable(args):
        without_liger(bl)
    print(f"# train_bench: torch {torch.__version__}, cuda {cuda_on(args)}, liger {liger_usable(args)}, "
          f"flash_attn {attention_available() == 'flash_attention_2'}, variants {','.join(names)}", flush=True)
    results = []
    for name in names:
        spec = dict(VARIANTS[name])
        spec.setdefault("tiny_batch", 4 if spec["kind"] == "trl" else 2)
        if args.time_budget is not None and time.monotonic() - t_start > args.time_budget:
            res = dict(model=spec["model"], variant=name, skipped=f"time budget {args.time_budget:.0f}s spent")
            print(json.dumps(res), flush=True)
            results.append(res)
            continue
        big = spec["model"] == "8b" and not args.tiny
        vargs = SimpleNamespace(**vars(args))
        vargs.steps = args.steps or (3 if args.tiny else 6 if big else 10)
        vargs.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 2 if big else 3)
        vargs.rows = args.rows or (160 if args.tiny else 1500)
        shape = bl.TINY if args.tiny else {"1b": bl.LLAMA_1B, "8b": bl.LLAMA_8B}[spec["model"]]
        t0 = time.monotonic()
        try:
            res = RUNNERS[spec["kind"]](name, spec, bl, shape, vargs)
        except Exception as e:  # one OOM or missing kernel must not lose the other rows
            res = dict(model=spec["model"], variant=name, error=f"{type(e).__name__}: {e}"[:400])
        res["variant"] = name
        res["wall_s"] = round(time.monotonic() - t0, 1)
        print(json.dumps(res), flush=True)
        results.append(res)
        free_memory()

    print()
    print(table(results))
    print()
    print("\n".join(ratios(results)))
    print(f"# total wall {time.monotonic() - t_start:.0f}s", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "train_bench.json"), "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
