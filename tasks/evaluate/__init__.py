"""evaluate: held-out loss and perplexity of the base model against base + adapter.

Both models score the same eval-split rows (``tuneline.splits.SplitRow``), tokenized exactly
as train's SFT method tokenized its rows (``tuneline.splits.sft_example``, TRL's
prompt/completion masking), so the numbers compare like with like: ``loss_completion`` is the
mean token NLL of the replies (what was trained, and the headline ``loss``), ``loss_all`` that
of the whole rendered text. The base is rebuilt the way
train built it (same hub id or path; same seed for the tiny Llama) and the tuned model is that
base with the train artifact's adapter, so one model in memory serves both (PEFT's
``disable_adapter`` gives the base back); a fully trained model (``model/``) loads beside it. A few greedy answers from both show what changed.
Writes ``report.json`` (through the report) and ``report.md``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.models import load_base_model, load_tokenizer
from tuneline.progress import track
from tuneline.sections import Section
from tuneline.splits import load_split, sft_example
from tuneline.stage import Stage

# ------------------------------------------------------------------------------ evaluate


class EvaluateConfig(Section):
    max_examples: int = Field(default=200, ge=1, description="Eval-split examples scored.")
    num_samples: int = Field(default=3, ge=0, description="Prompts to generate sample answers for.")
    max_new_tokens: int = Field(default=48, ge=1, description="Length of each sample answer.")
    max_length: int = Field(
        default=512, ge=16, description="Longest scored sequence in tokens; longer examples are cut at the end."
    )
    batch_size: int = Field(default=8, ge=1, description="Examples per forward pass when scoring.")




# ------------------------------------------------------------------------------- scoring


def encode(tokenizer, example: dict[str, str], max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion (cut at ``max_length``) and where the completion starts.

    Tokenized as TRL's SFTTrainer does it: the prompt and the whole text separately, the
    completion starting where the two diverge (a merge across the boundary moves it left).
    """
    from trl.data_utils import common_prefix_length

    prompt_ids = tokenizer(example["prompt"])["input_ids"]
    ids = tokenizer(example["prompt"] + example["completion"])["input_ids"]
    return ids[:max_length], common_prefix_length(prompt_ids, ids)


def score(
    model, batches: list[list[tuple[list[int], int]]], pad_id: int, label: str
) -> dict[str, float]:
    """Mean token NLL over all tokens and over completion tokens, with perplexities.

    Sums per-token NLLs across batches before dividing, so the result does not depend on how
    the examples were batched or padded.

    Args:
        model: a causal LM in eval mode.
        batches: lists of ``(ids, completion_start)`` from :func:`encode`.
        pad_id: the padding token id (padding is masked out).
        label: names the progress bar.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    nll = {"all": 0.0, "completion": 0.0}
    count = {"all": 0, "completion": 0}
    for batch in track(batches, f"evaluate: scoring {label}"):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        in_completion = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (ids, start) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            in_completion[i, start : len(ids)] = True
        input_ids, attention = input_ids.to(device), attention.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        # Position t predicts token t+1: the first token of each row is never scored.
        token_nll = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none"
        ).cpu()
        scored = attention[:, 1:].bool().cpu()
        for name, mask in (("all", scored), ("completion", scored & in_completion[:, 1:])):
            nll[name] += token_nll[mask].sum().item()
            count[name] += int(mask.sum())
    out: dict[str, float] = {}
    for name in ("all", "completion"):
        loss = nll[name] / count[name] if count[name] else float("nan")
        out[f"loss_{name}"] = loss
        out[f"ppl_{name}"] = math.exp(loss) if count[name] else float("nan")
        out[f"tokens_{name}"] = count[name]
    # The headline numbers are the completion's: the prompt is given, never written by the model.
    out["loss"], out["ppl"] = out["loss_completion"], out["ppl_completion"]
    return out


def generate(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The greedy answer to ``prompt`` (special tokens dropped)."""
    import torch

    enc = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        ids = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def plain(tokenizer, text: str) -> str:
    """``text`` without template markers, for the human-readable report."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# -------------------------------------------------------------------------------- report


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " …"


def summary(r: dict[str, Any]) -> str:
    """Loss and perplexity base vs tuned, and sample answers side by side."""
    b, t = r["base"], r["tuned"]
    lines = [
        "## evaluate",
        f"{r['n_examples']} held-out examples; loss = mean token NLL (nats), ppl = exp(loss).",
        "",
        "| model | loss (completion) | ppl (completion) | loss (all tokens) | ppl (all tokens) |",
        "|---|---|---|---|---|",
        f"| base | {b['loss_completion']:.4f} | {b['ppl_completion']:.2f} | {b['loss_all']:.4f} | {b['ppl_all']:.2f} |",
        f"| tuned | {t['loss_completion']:.4f} | {t['ppl_completion']:.2f} | {t['loss_all']:.4f} | {t['ppl_all']:.2f} |",
        "",
        f"Δ loss (tuned − base): {r['delta_loss']:+.4f} — "
        + ("**improved**." if r["improved"] else "**not improved**."),
    ]
    if r["samples"]:
        lines += ["", "### Samples (greedy)", ""]
        for i, s in enumerate(r["samples"], 1):
            lines += [
                f"**{i}. Prompt:** {_cell(s['prompt'], 400)}",
                "",
                "| | answer |",
                "|---|---|",
                f"| reference | {_cell(s['reference'])} |",
                f"| base | {_cell(s['base'])} |",
                f"| tuned | {_cell(s['tuned'])} |",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------ run


def load_trained(cfg, trained: Artifact, tokenizer):
    """The tuned model, and a context manager giving the base to compare it with.

    An adapter (``adapter/``) goes onto the rebuilt base, so one model in memory serves both
    (PEFT's ``disable_adapter`` gives the base back); a fully trained model (``model/``, from
    train.adapter full or hft) loads beside a rebuilt base.
    """
    import contextlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    # bf16 halves a real model's memory on a GPU; the tiny model is always built in float32.
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    base = load_base_model(cfg.model, tokenizer, dtype=dtype)
    if (trained.path / "model").is_dir():
        tuned = AutoModelForCausalLM.from_pretrained(trained.path / "model", dtype=dtype or "auto")
        base = base.to(device).eval()
        return tuned.to(device).eval(), lambda: contextlib.nullcontext(base)
    model = PeftModel.from_pretrained(base, trained.path / "adapter").to(device).eval()

    @contextlib.contextmanager
    def adapter_off():
        with model.disable_adapter():
            yield model

    return model, adapter_off


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Scores base and tuned model on the eval split and samples a few answers from each.

    Args:
        inputs: ``[format artifact, train artifact]`` (eval split; ``adapter/`` and ``tokenizer/``).
        cfg: the ``evaluate`` and ``model`` sections decide the output.
        out: receives ``report.md`` and the report (``report.json``).

    Raises:
        InputError: the eval split is empty.
    """
    fmt, trained = inputs
    ev = cfg.evaluate
    rows = load_split(fmt, "eval")[: ev.max_examples]
    if not rows:
        raise InputError(
            f"evaluate: the eval split of format artifact {fmt.ref.short} is empty; raise "
            "format.eval_fraction or add data, then re-run format"
        )
    tokenizer = load_tokenizer(cfg.model, trained.path / "tokenizer")
    model, as_base = load_trained(cfg, trained, tokenizer)

    max_length = min(ev.max_length, getattr(model.config, "max_position_embeddings", ev.max_length))
    examples = [sft_example(r, tokenizer.eos_token) for r in rows]
    encoded = [encode(tokenizer, ex, max_length) for ex in examples]
    batches = [encoded[i : i + ev.batch_size] for i in range(0, len(encoded), ev.batch_size)]
    pad_id = tokenizer.pad_token_id  # load_tokenizer falls back to eos when a model has none

    with as_base() as base_model:
        base = score(base_model, batches, pad_id, "base")
    tuned = score(model, batches, pad_id, "tuned")

    samples = []
    for row in [r for r in rows if r.prompt][: ev.num_samples]:
        with as_base() as base_model:
            base_answer = generate(base_model, tokenizer, row.prompt, ev.max_new_tokens)
        samples.append(
            {
                "id": row.id,
                "prompt": plain(tokenizer, row.prompt),
                "reference": plain(tokenizer, row.completion),
                "base": base_answer,
                "tuned": generate(model, tokenizer, row.prompt, ev.max_new_tokens),
            }
        )

    delta = tuned["loss"] - base["loss"]
    report: dict[str, Any] = {
        "base": base,
        "tuned": tuned,
        "delta_loss": delta,
        "improved": delta < 0,
        "n_examples": len(rows),
        "max_length": max_length,
        "samples": samples,
    }
    out.file("report.md").write_text(summary(report))
    out.report.update(report)


def highlights(report: dict[str, Any]) -> str:
    if "base" not in report or "tuned" not in report:
        return ""
    b, t = report["base"], report["tuned"]
    return f"eval loss {b['loss']:.3f} -> {t['loss']:.3f}, ppl {b['ppl']:.1f} -> {t['ppl']:.1f}"


STAGE = Stage(
    name="evaluate",
    version=1,
    config=EvaluateConfig,
    run=run,
    summary=summary,
    inputs=("format", "train"),
    uses=("model",),
    records=False,
    highlights=highlights,
    description="Held-out evaluation.",
)
