"""export: the trained model as files people serve, each proven to match the trained model.

From the train artifact (``adapter/`` or ``model/``, ``tokenizer/``) it writes:

- ``adapter/``: the PEFT adapter, copied (when train made one);
- ``merged/``: base + adapter merged (PEFT ``merge_and_unload``; a fully trained model as is) in
  16-bit (``export.dtype``), with the tokenizer, its ``chat_template.jinja`` and a
  ``generation_config.json`` whose ``eos_token_id`` includes the template's end-of-turn token;
- ``gguf/model-<type>.gguf`` for each of ``export.gguf_types`` (``gguf_writer.py``, written from
  the float32 merged weights, so each file is rounded once);
- ``serving/``: an Ollama ``Modelfile``, ``vllm.sh`` and ``llama_cpp.sh`` (``serving.py``).

Then every format is loaded back and compared with the trained model on up to
``export.check_prompts`` eval-split prompts (``equivalence.py``); a format beyond its limits
(``export.tolerance``, ``export.min_top1``) fails the stage with the figures, so nothing that
does not match is ever published.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from tasks.export import equivalence, serving
from tasks.export.config import ExportConfig
from tasks.export.gguf_writer import write_gguf
from tuneline import progress
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import load_split
from tuneline.stage import Stage

__all__ = ["STAGE", "ExportConfig", "run", "summary"]

# The GGUF the Modelfile and llama_cpp.sh serve, in order of preference.
SERVED_GGUF = ("q8_0", "f16", "f32")


# ------------------------------------------------------------------------------ models


def load_reference(cfg, trained: Artifact, tokenizer):
    """The trained model in float32 on the CPU: base + adapter, or the fully trained model.

    Args:
        cfg: the ``model`` section rebuilds the base (the tiny Llama from its seed).
        trained: the train artifact.
        tokenizer: its tokenizer (the tiny model's vocabulary size).

    Raises:
        InputError: the artifact holds neither ``adapter/`` nor ``model/``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if (trained.path / "model").is_dir():
        return AutoModelForCausalLM.from_pretrained(
            trained.path / "model", dtype=torch.float32
        ).eval()
    if not (trained.path / "adapter").is_dir():
        raise InputError(
            f"export: train artifact {trained.ref.short} has neither adapter/ nor model/; re-run train"
        )
    from peft import PeftModel

    base = load_base_model(cfg.model, tokenizer, dtype=torch.float32)
    return PeftModel.from_pretrained(base, trained.path / "adapter").eval()


def merged_weights(model):
    """The plain transformers model: adapters folded into the base weights (float32)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_merged(model, tokenizer, dest: Path, dtype: str, eot: str | None) -> None:
    """Writes ``model`` in ``dtype`` (safetensors), the tokenizer with its chat template, and
    the generation config (eos: the tokenizer's eos and the end-of-turn token).

    Args:
        model: the merged float32 model (cast in place).
        tokenizer: the trained tokenizer.
        dest: the ``merged/`` folder.
        dtype: ``bfloat16`` or ``float16``.
        eot: the chat template's end-of-turn token, if any.
    """
    import torch

    model.to(getattr(torch, dtype))
    model.config.eos_token_id = tokenizer.eos_token_id
    gen = model.generation_config
    eos = [tokenizer.eos_token_id] + ([tokenizer.convert_tokens_to_ids(eot)] if eot else [])
    # generate() stops on any of these: the end-of-turn token is what a chat reply ends with.
    gen.eos_token_id = list(dict.fromkeys(i for i in eos if i is not None))
    gen.bos_token_id, gen.pad_token_id = tokenizer.bos_token_id, tokenizer.pad_token_id
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    if tokenizer.chat_template and not (dest / "chat_template.jinja").is_file():
        (dest / "chat_template.jinja").write_text(tokenizer.chat_template)


# ------------------------------------------------------------------------------ checks


def check_format(
    fmt: str, root: Path, ex: ExportConfig, reference, prompts, prompt_ids, base_factory
):
    """Loads one export back and compares it with the trained model's logits.

    Args:
        fmt: the format (``adapter``, ``merged``, a GGUF type).
        root: the export's folder.
        ex: the ``export`` section (the limits).
        reference: the trained model's logits (``equivalence.logits_of``).
        prompts: the prompts (text), for the GGUF tokenizer check.
        prompt_ids: their token ids under the trained tokenizer.
        base_factory: builds the float32 base (for ``adapter``).
    """
    model, gguf_tok = equivalence.load_export(fmt, root, base_factory)
    got = equivalence.logits_of(model, prompt_ids)
    worst, top1, n = equivalence.compare(reference, got, fmt)
    tok_match = (
        None if gguf_tok is None else equivalence.encode_prompts(gguf_tok, prompts) == prompt_ids
    )
    tolerance, min_top1 = ex.limits(fmt)
    check = equivalence.Check(fmt, worst, top1, n, tolerance, min_top1, tok_match)
    progress.logger().info(
        "export: %s max |Δlogit| %.3g (limit %g), top-1 %.3f (min %g)%s",
        fmt, worst, tolerance, top1, min_top1, "" if tok_match is None else f", tokenizer match {tok_match}",
    )  # fmt: skip
    return check


# ------------------------------------------------------------------------------- files


def file_list(root: Path, sub: str) -> list[dict[str, Any]]:
    """Every file under ``root/sub`` with its size and sha256, sorted by path.

    Args:
        root: the artifact folder.
        sub: a folder or file inside it.
    """
    target = root / sub
    paths = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    out = []
    for p in paths:
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out.append(
            {
                "path": str(p.relative_to(root)),
                "size": p.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        )
    return out


def write_serving(
    out: ArtifactWriter,
    tokenizer,
    ex: ExportConfig,
    context_length: int,
    eot: str | None,
    portable: tuple[str | None, str],
):
    """``serving/``: Modelfile and llama_cpp.sh (when a GGUF exists), vllm.sh, and the
    portable chat template (``chat_template.jinja``, what the GGUFs carry).

    Args:
        out: the artifact writer.
        tokenizer: the exported tokenizer.
        ex: the ``export`` section.
        context_length: the model's context window.
        eot: the chat template's end-of-turn token.
        portable: ``serving.portable_template``'s answer.

    Returns:
        The serving part of the report: files, commands, template note, stop tokens.
    """
    written: dict[str, str] = {}
    served = next((t for t in SERVED_GGUF if t in ex.gguf_types), None)
    stops = serving.stop_tokens(tokenizer)
    template, note = serving.ollama_template(tokenizer)
    if template is None:
        progress.logger().warning("export: Modelfile written without TEMPLATE: %s", note)
    if served:
        gguf_rel = f"gguf/model-{served}.gguf"
        text = serving.modelfile(f"../{gguf_rel}", template, stops, note, context_length)
        written["Modelfile"] = text
        template_file = "serving/chat_template.jinja" if portable[0] else None
        written["llama_cpp.sh"] = serving.llama_cpp_script(gguf_rel, template_file)
    written["vllm.sh"] = serving.vllm_script(ex.dtype, context_length, serving.renders_tools(tokenizer))
    if portable[0]:
        written["chat_template.jinja"] = portable[0]
    for name, text in written.items():
        path = out.file(f"serving/{name}")
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
    return {
        "files": sorted(written),
        "commands": serving.commands(written),
        "ollama_template": template is not None,
        "template_note": note,
        "portable_template_note": portable[1],
        "stop": stops,
        "end_of_turn": eot,
        "served_gguf": served,
    }


# --------------------------------------------------------------------------------- run


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Writes every format, checks each against the trained model, and reports.

    Args:
        inputs: ``[format artifact, train artifact]`` (eval prompts; weights and tokenizer).
        cfg: the ``export`` and ``model`` sections decide the output.
        out: receives ``adapter/``, ``merged/``, ``gguf/``, ``serving/``, ``report.md``.

    Raises:
        InputError: the eval split has no prompt, or the train artifact has no weights.
        ExportMismatch: a format is beyond its limits (nothing is published).
        NonFiniteError: the trained model or an export gives NaN or infinite logits.
    """
    import torch

    fmt, trained = inputs
    ex: ExportConfig = cfg.export
    log = progress.logger()
    if not progress.enabled():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load and save; the log lines say it all
    prompts = [r.prompt for r in load_split(fmt, "eval") if r.prompt][: ex.check_prompts]
    if not prompts:
        raise InputError(
            f"export: the eval split of format artifact {fmt.ref.short} has no prompt to check the exports "
            "with; raise format.eval_fraction or add data, then re-run format"
        )
    tokenizer = load_tokenizer(cfg.model, trained.path / "tokenizer")
    prompt_ids = equivalence.encode_prompts(tokenizer, prompts)
    eot = serving.end_of_turn_token(tokenizer)
    portable = serving.portable_template(tokenizer)
    model = load_reference(cfg, trained, tokenizer)
    reference = equivalence.logits_of(model, prompt_ids)
    equivalence.check_finite(reference, "the trained model")  # before any file is written
    formats: list[str] = []

    has_adapter = (trained.path / "adapter").is_dir() and not (trained.path / "model").is_dir()
    if has_adapter:
        shutil.copytree(trained.path / "adapter", out.path / "adapter")
        formats.append("adapter")
        log.info("export: adapter copied")

    merged = merged_weights(model)
    context_length = merged.config.max_position_embeddings
    for qtype in ex.gguf_types:
        path = out.file(f"gguf/model-{qtype}.gguf")
        written = write_gguf(
            merged,
            tokenizer,
            trained.path / "tokenizer",
            path,
            qtype,
            tokenizer.convert_tokens_to_ids(eot) if eot else None,
            portable[0],
        )
        log.info(
            "export: gguf %s written (%d tensors, %.1f MB)",
            qtype,
            written["tensors"],
            path.stat().st_size / 1e6,
        )
    save_merged(merged, tokenizer, out.path / "merged", ex.dtype, eot)
    log.info("export: merged (%s) written", ex.dtype)
    del model, merged
    formats += ["merged", *ex.gguf_types]

    def base_factory():
        return load_base_model(cfg.model, tokenizer, dtype=torch.float32)

    checks = [
        check_format(f, out.path, ex, reference, prompts, prompt_ids, base_factory) for f in formats
    ]
    failed = [c for c in checks if not c.passed]
    if failed:
        raise equivalence.ExportMismatch(
            f"export: {', '.join(c.format for c in failed)} do not match the trained model "
            f"(on {len(prompts)} eval prompts; nothing published):\n{equivalence.failures(checks)}\n"
            "A GGUF or merged model off by whole logits is a conversion bug; one slightly over its limit "
            "can be allowed with export.tolerance / export.min_top1."
        )

    served = write_serving(out, tokenizer, ex, context_length, eot, portable)
    report: dict[str, Any] = {
        "reference": "trained model (base + adapter, float32)"
        if has_adapter
        else "trained model (full weights, float32)",
        "dtype": ex.dtype,
        "check_prompts": len(prompts),
        "formats": {},
        "serving": served,
    }
    for c in checks:
        sub = {"adapter": "adapter", "merged": "merged"}.get(
            c.format, f"gguf/model-{c.format}.gguf"
        )
        files = file_list(out.path, sub)
        report["formats"][c.format] = {
            **c.as_dict(),
            "path": sub,
            "size": sum(f["size"] for f in files),
            "files": files,
        }
    report["serving"]["files_detail"] = file_list(out.path, "serving")
    out.file("report.md").write_text(summary(report))
    out.report.update(report)


# ------------------------------------------------------------------------------ report


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def summary(r: dict[str, Any]) -> str:
    """Each export's size and how closely it matches the trained model; serving commands."""
    lines = [
        "## export",
        f"Compared with the {r['reference']} on {r['check_prompts']} eval prompts, every position.",
        "",
        "| format | size | max \\|Δlogit\\| | top-1 agreement | tolerance | pass |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in r["formats"].items():
        lines.append(
            f"| {name} (`{f['path']}`) | {_size(f['size'])} | {f['max_abs_logit_diff']:.2e} | "
            f"{f['top1_agreement']:.3f} | ≤ {f['tolerance']:g}, top-1 ≥ {f['min_top1']:g} | "
            f"{'yes' if f['passed'] else '**no**'} |"
        )
    s = r["serving"]
    lines += ["", "### Serving (from the export folder)", ""]
    lines += [f"- {name}: `{cmd}`" for name, cmd in s["commands"].items()]
    lines += [
        "",
        f"Ollama TEMPLATE: {s['template_note']}. Stop tokens: {', '.join(f'`{t}`' for t in s['stop'])}.",
        f"GGUF and llama.cpp chat template: {s['portable_template_note']}.",
    ]
    return "\n".join(lines) + "\n"


def highlights(report: dict[str, Any]) -> str:
    formats = report.get("formats") or {}
    return ", ".join(f"{n} Δ{f['max_abs_logit_diff']:.1e}" for n, f in formats.items())


STAGE = Stage(
    name="export",
    version=2,  # 2: vllm.sh parses tool calls when the template lists tools
    config=ExportConfig,
    run=run,
    summary=summary,
    inputs=("format", "train"),
    uses=("model",),
    after=("evaluate",),
    records=False,
    highlights=highlights,
    description="Adapter, merged model, GGUF and serving files, checked against the trained model.",
)
