"""Batched greedy generation for evaluate, optionally constrained to a JSON schema.

Schema-guided decoding masks, at every step, the tokens that would leave the schema's
grammar (xgrammar's logits processor in transformers' ``generate``), so the output is JSON
that fits the schema whenever the model stops within ``max_new_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from tuneline.progress import track


def output_vocab_size(model) -> int:
    """Rows of the model's output layer (may exceed ``len(tokenizer)`` by padding)."""
    return int(model.get_output_embeddings().weight.shape[0])


class SchemaCompiler:
    """Compiles JSON schemas to xgrammar grammars for one tokenizer, each schema once.

    Args:
        tokenizer: the tokenizer generation uses.
        vocab_size: the model's output size (:func:`output_vocab_size`).
    """

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        stop = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop)
        self._compiler = xgr.GrammarCompiler(info)
        self._cache: dict[str, Any] = {}

    def compile(self, schema: dict[str, Any]):
        """The compiled grammar of ``schema``.

        Whitespace is fixed (``any_whitespace=False``): with free whitespace an untrained
        model can emit spaces until it runs out of tokens, never closing the JSON.
        """
        key = json.dumps(schema, sort_keys=True)
        if key not in self._cache:
            self._cache[key] = self._compiler.compile_json_schema(
                key, any_whitespace=False, strict_mode=True
            )
        return self._cache[key]


def generate_batch(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    grammars: list[Any] | None = None,
    label: str = "",
) -> list[str]:
    """Greedy answers to ``prompts`` (special tokens dropped), in order.

    Prompts are left-padded so every row's answer starts at the same position.

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (``pad_token`` set).
        prompts: the rendered prompts (chat template with the generation prompt).
        max_new_tokens: the most tokens per answer.
        batch_size: prompts per ``generate`` call.
        grammars: one compiled grammar per prompt (:class:`SchemaCompiler`) to constrain each
            answer, or None for free generation.
        label: names the progress bar.
    """
    import torch

    device = next(model.parameters()).device
    answers: list[str] = []
    starts = list(range(0, len(prompts), batch_size))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in track(starts, f"evaluate: generating {label}".strip()):
            chunk = prompts[start : start + batch_size]
            # The prompts are rendered already (template markers and bos included).
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(device)
            processors = None
            if grammars is not None:
                from transformers import LogitsProcessorList
                from xgrammar.contrib.hf import LogitsProcessor

                # One processor per generate call: its matchers keep per-row state.
                processors = LogitsProcessorList(
                    [LogitsProcessor(list(grammars[start : start + batch_size]))]
                )
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    logits_processor=processors,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def bounded_schema(schema: Any, max_string: int = 48, max_items: int = 4, max_number: float = 1e9) -> Any:
    """``schema`` with every string, array and number given an upper size, for decoding only.

    An untrained (or weak) model under a grammar can write one string or number forever and
    never close the JSON; with these caps every output ends within a known length. Every value
    the bounded schema allows also fits ``schema``, so validity is checked against the original.
    Caps already in the schema are kept.

    Args:
        schema: a JSON schema (dicts and lists walked recursively).
        max_string: most characters of a string without ``enum``/``const``/``pattern``/
            ``format`` (no control characters, no escapes).
        max_items: ``maxItems`` for arrays.
        max_number: ``-max_number <= x <= max_number`` for numbers and integers.
    """
    if isinstance(schema, list):
        return [bounded_schema(s, max_string, max_items, max_number) for s in schema]
    if not isinstance(schema, dict):
        return schema
    def sub(v: Any) -> Any:
        return bounded_schema(v, max_string, max_items, max_number)

    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k in ("properties", "patternProperties", "$defs", "definitions") and isinstance(v, dict):
            out[k] = {name: sub(s) for name, s in v.items()}  # names, not keywords
        elif k in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems", "not"):
            out[k] = sub(v)
        else:
            out[k] = v  # enum, const, required, ...: values, not schemas
    kinds = out.get("type")
    kinds = {k for k in kinds if isinstance(k, str)} if isinstance(kinds, list) else {kinds}
    free = not any(k in out for k in ("enum", "const", "pattern", "format"))
    if "string" in kinds and free:
        # A pattern rather than maxLength: xgrammar 0.2.8's maxLength grammar lets raw control
        # characters into the string, which JSON forbids; this one leaves them (and escapes) out.
        low = int(out.get("minLength", 0))
        high = max(low, min(int(out.get("maxLength", max_string)), max_string))
        out["pattern"] = f'^[^\\x00-\\x1f"\\\\]{{{low},{high}}}$'
    if "array" in kinds:
        out.setdefault("maxItems", max_items)
    if kinds & {"number", "integer"} and free:
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -max_number if "integer" not in kinds else -int(max_number)
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = max_number if "integer" not in kinds else int(max_number)
    return out
