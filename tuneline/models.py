"""Base models and tokenizers: one code path for hub ids, local paths and the offline tiny Llama.

With ``model.name_or_path`` set, tokenizer and weights load with ``from_pretrained`` (a hub id
or a local directory; ``trust_remote_code`` only when the config says so). Without it, the
tokenizer is a byte-level BPE trained on the corpus and the model is a small Llama built from
``model.tiny`` with seeded random weights, so the demo and the tests run with no download.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tuneline.sections import ModelConfig

# ChatML, with {% generation %} markers around assistant replies so TRL's
# assistant_only_loss can mask everything the model should not learn to write. With ``tools``
# (``apply_chat_template(..., tools=chat_tools(...))``) the system turn lists their JSON schemas
# inside <tools></tools> and says how to call one, as Hermes/Qwen ChatML templates do; without
# tools it renders exactly plain ChatML (the serving files' Ollama template relies on that).
CHATML_TEMPLATE = (
    "{% set tool_system = tools and messages and messages[0]['role'] == 'system' %}"
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if tool_system %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call one of these functions. Their JSON schemas:\n<tools>' }}"
    "{% for tool in tools %}{{ '\n' }}{{ (tool['function'] if tool['function'] is defined else tool) | tojson }}{% endfor %}"
    "{{ '\n</tools>\n\nTo call one, reply with only a JSON object: "
    "{\"name\": <function name>, \"arguments\": <object of its arguments>}<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tool_system and loop.first) %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """A record's ``meta.tools`` as chat-template tools: ``[{"type": "function", "function":
    spec}]`` (transformers' convention, which model templates such as Llama 3.1's and Qwen's read).

    Args:
        tools: a JSON string (LLaMA-Factory) or list of specs, each bare ``{name, description,
            parameters}`` or OpenAI-wrapped ``{"type": "function", "function": {...}}``; None
            or empty for a record without tools.

    Raises:
        ValueError: the tools are not JSON, or a spec has no string ``name``.
    """
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise ValueError(f"the record's tools are not JSON ({e})") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise ValueError(f"the record's tools are a JSON {type(tools).__name__}, not a list of function specs")
    out = []
    for n, tool in enumerate(tools):
        spec = tool.get("function") if isinstance(tool, dict) and "function" in tool else tool
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError(f"tool {n} of the record has no string 'name': {json.dumps(tool)[:120]}")
        out.append({"type": "function", "function": spec})
    return out or None


_PROBE_TOOLS = [{"type": "function", "function": {"name": "zq7_probe_tool", "parameters": {"type": "object"}}}]


def renders_tools(tokenizer) -> bool:
    """Whether ``tokenizer``'s chat template shows the model the tools it is given (many
    templates ignore the ``tools`` argument), found by rendering a probe."""
    from jinja2 import TemplateError

    if not tokenizer.chat_template:
        return False
    probe = [{"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(
            probe, tools=_PROBE_TOOLS, tokenize=False, add_generation_prompt=True
        )
    except TemplateError:
        return False
    return "zq7_probe_tool" in text


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.model_max_length = 1_000_000
    return fast


def load_tokenizer(model: ModelConfig, path: str | Path | None = None):
    """The tokenizer saved in an artifact (``path``), else the base model's own."""
    from transformers import AutoTokenizer

    src = str(path) if path is not None else model.name_or_path
    if src is None:
        raise ValueError("the tiny model's tokenizer is trained by the format stage; pass its path")
    kwargs = {"trust_remote_code": model.trust_remote_code}
    if path is None and model.revision:
        kwargs["revision"] = model.revision
    tok = AutoTokenizer.from_pretrained(src, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(model: ModelConfig, tokenizer, dtype=None, **kwargs):
    """The base causal LM: from_pretrained for a hub id/path, else the seeded tiny Llama.

    Args:
        model: the ``model`` section.
        tokenizer: the tokenizer (the tiny model's vocabulary is its size).
        dtype: weight dtype (None: the checkpoint's, float32 for the tiny model).
        kwargs: more ``from_pretrained`` arguments (``quantization_config``,
            ``attn_implementation``); the tiny model takes ``attn_implementation`` only.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    extra = kwargs
    if model.name_or_path:
        kwargs = {"trust_remote_code": model.trust_remote_code, **extra}
        if model.revision:
            kwargs["revision"] = model.revision
        if dtype is not None:
            kwargs["dtype"] = dtype
        return AutoModelForCausalLM.from_pretrained(model.name_or_path, **kwargs)
    t = model.tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_attention_heads,
        max_position_embeddings=t.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=t.initializer_range,
    )
    if extra.get("attn_implementation"):
        config._attn_implementation = extra["attn_implementation"]
    # Same seed, same weights: evaluate rebuilds exactly the base that train started from.
    with torch.random.fork_rng():
        torch.manual_seed(t.seed)
        tiny = LlamaForCausalLM(config)
    if extra.get("quantization_config") is None:
        return tiny
    # Quantized weights (qlora) come only through from_pretrained: save the seeded weights and
    # load them back quantized, the same path a hub model takes.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tuneline-tiny-") as tmp:
        tiny.save_pretrained(tmp)
        return AutoModelForCausalLM.from_pretrained(tmp, **extra)
