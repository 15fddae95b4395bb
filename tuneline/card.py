"""The model card: what a trained model is, which data made it, how it scored, which files ship.

A card is markdown in the Hugging Face model-card layout: YAML front matter (``base_model``,
``library_name``, ``tags``, ``pipeline_tag``, ``model-index`` with the eval results) and the
sections people look for (Model details, Training data, Training procedure, Evaluation, Files,
How to use). Its data lineage comes from the artifacts themselves: ``lineage(art)``
walks the manifests' ``inputs`` back from the train artifact to ingest, so every stage's key
and record counts (and PII and dedup figures) are those of the artifacts that were really
used, not of a config that may have changed since. The ``card`` stage (``tasks/card.py``)
writes it after export.
"""

from __future__ import annotations

from typing import Any

import yaml

from tuneline.artifacts import Artifact

TINY = "tiny Llama"  # what the card calls the offline tiny model


def lineage(art: Artifact) -> list[Artifact]:
    """``art`` and every artifact it was made from, sources first (ingest ... train). Each
    artifact appears once even if two stages read it."""
    seen: dict[str, Artifact] = {}

    def visit(a: Artifact) -> None:
        if f"{a.ref.stage}/{a.ref.key}" in seen:
            return
        for parent in a.parents():
            visit(parent)
        seen[f"{a.ref.stage}/{a.ref.key}"] = a

    visit(art)
    return list(seen.values())


def _what_happened(art: Artifact) -> str:
    """One line of what a stage did, from its report: PII removed, duplicates dropped, ..."""
    r, stage = art.report, art.ref.stage
    if stage == "pii" and "entities_removed_total" in r:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted((r.get("entities_removed") or {}).items()))
        return f"{r['entities_removed_total']} PII entities replaced ({kinds}); residual {r.get('residual_total', 0)}"
    if stage == "dedup" and "exact_duplicates" in r:
        return (
            f"{r['exact_duplicates']} exact and {r.get('near_duplicates', 0)} near duplicates dropped "
            f"(MinHash, threshold {r.get('threshold')})"
        )
    if stage == "format" and isinstance(r.get("splits"), dict):
        parts = []
        for name, split in r["splits"].items():
            n = split.get("records") if isinstance(split, dict) else split
            parts.append(f"{name} {n}")
        return "split: " + ", ".join(parts)
    if stage == "train" and "train_rows" in r:
        return f"{r['train_rows']} rows, {r.get('steps')} steps, loss {r.get('first_loss', 0):.3f} → {r.get('last_loss', 0):.3f}"
    reasons = r.get("rejected_by_reason") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))


def _front_matter(base: str, train: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    adapter = train.get("adapter", "lora")
    meta: dict[str, Any] = {
        # The offline tiny model has no hub id to point at.
        **({"base_model": base} if base != TINY else {}),
        "library_name": "peft" if adapter in ("lora", "dora", "qlora") else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["tuneline", str(train.get("method", "sft")), str(adapter), "trl"],
    }
    if evaluation and "tuned" in evaluation:
        results = [
            {"type": "loss", "name": "eval loss (completion tokens)", "value": round(evaluation["tuned"]["loss"], 4)},
            {"type": "perplexity", "name": "eval perplexity", "value": round(evaluation["tuned"]["ppl"], 3)},
        ]
        for name, scores in (evaluation.get("metrics") or {}).items():
            if isinstance(scores, dict) and isinstance(scores.get("tuned"), int | float):
                results.append({"type": name, "name": name, "value": round(scores["tuned"], 4)})
        meta["model-index"] = [
            {
                "name": f"{base} ({train.get('method', 'sft')}, tuneline)",
                "results": [{"task": {"type": "text-generation"}, "dataset": {"name": "held-out eval split", "type": "custom"}, "metrics": results}],
            }
        ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(
    chain: list[Artifact],
    *,
    base: str,
    train_config: dict[str, Any],
    evaluation: dict[str, Any] | None,
    files: list[dict[str, Any]],
    usage: list[str] | None = None,
) -> str:
    """The card as markdown.

    Args:
        chain: ``lineage(train artifact)``: every artifact from ingest to train.
        base: the base model (hub id, path, or "tiny Llama").
        train_config: the ``train`` section the model was trained with.
        evaluation: evaluate's report for this model, or None when it was not evaluated.
        files: the shipped files, each ``{"path", "size", "sha256"}``.
        usage: serving commands (shell lines), if any.
    """
    train = next((a.report for a in chain if a.ref.stage == "train"), {})
    lines = [_front_matter(base, train, evaluation)]
    method, adapter = str(train.get("method", "sft")).upper(), train.get("adapter", "lora")
    lines += [
        f"# {base}: {method} fine-tune ({adapter})",
        "",
        "Made by tuneline from the artifacts listed below; every key is the "
        "content address of an artifact in the store, so this card names exactly which data made "
        "this model.",
        "",
        "## Model details",
        "",
        f"- Base model: `{base}`",
        f"- Method: {method}; trained: {adapter} ({train.get('trainable_params', 0):,} of "
        f"{train.get('total_params', 0):,} parameters)",
        f"- Steps: {train.get('steps')} ({train.get('epochs', 0):.2f} epochs over {train.get('train_rows')} rows), "
        f"final training loss {train.get('last_loss', float('nan')):.4f}",
        "",
        "## Training data (lineage)",
        "",
        "| stage | artifact | records in → kept | rejected | what happened |",
        "|---|---|---|---|---|",
    ]
    for art in chain:
        counts = art.manifest.get("counts", {})
        kept, rejected = counts.get("data", 0), counts.get("rejected", 0)
        if kept or rejected:  # a records stage: what came in, what it kept
            rin = art.report.get("records_in", kept + rejected)
            records, dropped = f"{rin} → {kept}", str(rejected)
        else:  # format writes splits, train a model: no records of their own
            records, dropped = "", ""
        if art.ref.stage == "format":
            records = f"{art.report.get('records_in', kept)} → {kept}"
        lines.append(
            f"| {art.ref.stage} | `{art.ref.key[:12]}` | {records} | {dropped} | {_what_happened(art)} |"
        )
    lines += [
        "",
        "## Training procedure",
        "",
        "```yaml",
        yaml.safe_dump({"train": train_config}, sort_keys=False).rstrip(),
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation and "base" in evaluation:
        b, t = evaluation["base"], evaluation["tuned"]
        lines += [
            "| metric | base | tuned |",
            "|---|---|---|",
            f"| eval loss | {b['loss']:.4f} | {t['loss']:.4f} |",
            f"| eval perplexity | {b['ppl']:.2f} | {t['ppl']:.2f} |",
        ]
        for name, scores in (evaluation.get("metrics") or {}).items():
            if isinstance(scores, dict) and isinstance(scores.get("base"), int | float):
                lines.append(f"| {name} | {scores['base']:.4f} | {scores['tuned']:.4f} |")
        lines.append(f"\nOn {evaluation.get('n_examples', '?')} held-out examples.")
    else:
        lines.append("Not evaluated in this run.")
    lines += ["", "## Files", "", "| file | size | sha256 |", "|---|---|---|"]
    lines += [f"| `{f['path']}` | {f['size']:,} | `{f['sha256']}` |" for f in files]
    if usage:
        lines += ["", "## How to use", "", "```bash", *usage, "```"]
    return "\n".join(lines) + "\n"
