"""GGUF files for Llama-family models, written with the ``gguf`` library's ``GGUFWriter``.

What llama.cpp's ``convert_hf_to_gguf.py`` does for a Llama checkpoint, cut to what our models
need: the ``llama.*`` hyper-parameters, tensors renamed HF -> GGUF, the Q and K projection rows
permuted from HF's rotate-half layout to llama.cpp's interleaved RoPE layout (``permute``,
which transformers' GGUF loader undoes on load), 1-D tensors (norms) kept in float32 as
llama.cpp keeps them, the other weights in the requested type (f32, f16 or q8_0), and the
byte-level BPE tokenizer (``tokenizer.ggml.model = "gpt2"``) with its chat template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from tuneline.errors import InputError

__all__ = ["GGUF_TYPES", "LLAMA_ARCHITECTURES", "gguf_name", "permute", "write_gguf"]

GGUF_TYPES = ("f32", "f16", "q8_0")
# model_type values whose weights have the Llama layout (what this converter maps).
LLAMA_ARCHITECTURES = ("llama", "mistral")
# GGUF token types (gguf.TokenType): NORMAL 1, CONTROL 3, UNUSED 5.
NORMAL, CONTROL, UNUSED = 1, 3, 5
# llama.cpp's name for the GPT-2 pre-tokenizer regex; transformers' GGUF loader has no override
# for it, so it keeps GPT2Tokenizer's own split, the one ByteLevel(use_regex=True) uses.
PRE_TOKENIZER = "gpt-2"

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name for an HF Llama parameter name (None: not stored, e.g. rotary buffers).

    Args:
        hf_name: a ``state_dict`` key such as ``model.layers.0.self_attn.q_proj.weight``.
    """
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    m = _LAYER.match(hf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    return None


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Q/K rows from HF's rotate-half RoPE order to llama.cpp's interleaved order (as
    ``convert_hf_to_gguf.py``'s ``LlamaModel.permute``).

    Args:
        weights: a q_proj or k_proj weight, ``[heads * head_dim, hidden]``.
        n_head: attention heads.
        n_head_kv: key/value heads (for k_proj under grouped-query attention).
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tokenizer_vocab(tokenizer_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Tokens (by id, padded to the embedding rows), token types and merges from ``tokenizer.json``.

    Args:
        tokenizer_dir: a saved fast tokenizer (``tokenizer.json``).
        n_vocab: the model's embedding rows (the token list must be this long).

    Raises:
        InputError: not a byte-level BPE tokenizer, or more tokens than embedding rows.
    """
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise InputError(
            f"export: {path} is missing; GGUF export needs a fast tokenizer (tokenizer.json)"
        )
    spec = json.loads(path.read_text())
    model = spec["model"]
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise InputError(
            f"export: {path} is not a byte-level BPE tokenizer (model {model.get('type')!r}); the GGUF "
            "writer handles GPT-2 style vocabularies only: drop GGUF from export.gguf_types for this model"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    special = set()
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["content"])
    if max(vocab.values()) >= n_vocab:
        raise InputError(
            f"export: the tokenizer in {tokenizer_dir} has ids up to {max(vocab.values())} but the model has "
            f"{n_vocab} embedding rows; export the tokenizer that was trained with this model"
        )
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        # Rows the tokenizer never produces still need a name: llama.cpp calls them [PADn].
        tok = by_id.get(i, f"[PAD{i}]")
        tokens.append(tok)
        types.append(UNUSED if i not in by_id else CONTROL if tok in special else NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def _tensor(array: np.ndarray, qtype: str):
    """``(data, raw_dtype)`` for ``GGUFWriter.add_tensor``: 1-D tensors stay float32, and a row
    q8_0 cannot cut into 32-value blocks falls back to f16 (as llama.cpp does)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if array.ndim == 1 or qtype == "f32":
        return array.astype(np.float32), None
    if qtype == "q8_0" and array.shape[-1] % 32 == 0:
        return quantize(
            array.astype(np.float32), GGMLQuantizationType.Q8_0
        ), GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


def write_gguf(
    model,
    tokenizer,
    tokenizer_dir: Path,
    path: Path,
    qtype: str,
    eot_token_id: int | None = None,
    chat_template: str | None = None,
) -> dict[str, Any]:
    """Writes ``model`` (a Llama-layout causal LM) and its tokenizer as one GGUF file.

    Args:
        model: the merged model (any dtype; weights are read as float32).
        tokenizer: its tokenizer (bos/eos/pad ids, chat template).
        tokenizer_dir: where that tokenizer is saved (``tokenizer.json``).
        path: the file to write.
        qtype: ``f32``, ``f16`` or ``q8_0``.
        eot_token_id: the chat template's end-of-turn token (``tokenizer.ggml.eot_token_id``).
        chat_template: ``tokenizer.chat_template`` (default: the tokenizer's own).

    Returns:
        What was written: tensor count and the types used.

    Raises:
        InputError: the model is not Llama-shaped, or its tokenizer is not byte-level BPE.
    """
    import gguf

    if qtype not in GGUF_TYPES:
        raise InputError(f"export: unknown GGUF type {qtype!r}; known: {', '.join(GGUF_TYPES)}")
    c = model.config
    if c.model_type not in LLAMA_ARCHITECTURES:
        raise InputError(
            f"export: GGUF export handles Llama-family models ({', '.join(LLAMA_ARCHITECTURES)}), not "
            f"{c.model_type!r}; set export.gguf_types: [] or convert with llama.cpp's convert_hf_to_gguf.py"
        )
    n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta") or getattr(
        c, "rope_theta", 10000.0
    )
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    if "lm_head.weight" not in state or getattr(c, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: llama.cpp reuses token_embd
    vocab = tokenizer_vocab(tokenizer_dir, state["model.embed_tokens.weight"].shape[0])

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(getattr(c, "_name_or_path", "") or "tuneline export")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(rope))
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    w.add_vocab_size(len(vocab["tokens"]))
    w.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[qtype]
    )
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    if not vocab["merges"]:
        # A vocabulary of single bytes and specials has no merges; an empty array does not
        # survive the file, and transformers' GGUF loader then derives merges from scores.
        w.add_token_scores([0.0] * len(vocab["tokens"]))
    for add, token_id in (
        (w.add_bos_token_id, tokenizer.bos_token_id),
        (w.add_eos_token_id, tokenizer.eos_token_id),
        (w.add_pad_token_id, tokenizer.pad_token_id),
        (w.add_eot_token_id, eot_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    # Our tokenizers add no BOS on encode; llama.cpp must not add one either.
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    chat_template = chat_template or tokenizer.chat_template
    if chat_template:
        w.add_chat_template(chat_template)

    types: dict[str, int] = {}
    for hf_name, array in state.items():
        name = gguf_name(hf_name)
        if name is None:
            continue
        if name.endswith("attn_q.weight"):
            array = permute(array, c.num_attention_heads, c.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            array = permute(array, c.num_attention_heads, n_kv)
        data, raw = _tensor(array, qtype)
        kind = raw.name.lower() if raw is not None else str(data.dtype).replace("float", "f")
        types[kind] = types.get(kind, 0) + 1
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": sum(types.values()), "tensor_types": types}
