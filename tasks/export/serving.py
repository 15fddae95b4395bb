"""Serving files for the exports: an Ollama Modelfile, and the vLLM and llama.cpp commands.

The chat template travels with every format (the tokenizer in ``merged/``, the GGUF metadata),
but Ollama does not run Jinja: its ``TEMPLATE`` is a Go text/template. ``ollama_template``
translates the one template family we can translate exactly, ChatML (what our tokenizers use),
and only after checking that the tokenizer's template renders a probe conversation exactly as
ChatML does; for any other template the Modelfile is written without ``TEMPLATE`` and the reason
is recorded, so nobody serves a model with a silently different prompt format.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from tuneline.models import renders_tools

__all__ = [
    "CHATML_GO_TEMPLATE",
    "PROBE",
    "chatml",
    "commands",
    "end_of_turn_token",
    "llama_cpp_script",
    "modelfile",
    "ollama_template",
    "portable_template",
    "renders_tools",
    "stop_tokens",
    "vllm_script",
]

# Ollama's Go template for ChatML, over .Messages: every turn as <|im_start|>role\ncontent<|im_end|>\n,
# then the generation prompt (Ollama renders it with the user's turn last).
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)

# A conversation that exercises every role and the generation prompt.
PROBE = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Where is the red lamp made?"},
    {"role": "assistant", "content": "The red lamp is made in Lyon."},
    {"role": "user", "content": "And the blue mug?"},
]
_SENTINEL = "Zq7Sentinel"


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """``messages`` rendered as ChatML (what ``CHATML_GO_TEMPLATE`` renders).

    Args:
        messages: ``{"role", "content"}`` dicts.
        add_generation_prompt: end with the assistant's opening.
    """
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant reply (``<|im_end|>``
    for ChatML), found by rendering one; None when no special token follows the reply.

    Args:
        tokenizer: a tokenizer with a chat template.
    """
    if not tokenizer.chat_template:
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}],
        tokenize=False,
    )
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL) :]
    # Longest first, so a token that is a prefix of another (<|im_end|> / <|im_end|>x) cannot win.
    for token in sorted(tokenizer.all_special_tokens, key=len, reverse=True):
        if tail.startswith(token):
            return token
    return None


def stop_tokens(tokenizer) -> list[str]:
    """What ends a reply: the template's end-of-turn token and the eos token, without repeats.

    Args:
        tokenizer: the exported tokenizer.
    """
    found = [end_of_turn_token(tokenizer), tokenizer.eos_token]
    return list(dict.fromkeys(t for t in found if t))


def ollama_template(tokenizer) -> tuple[str | None, str]:
    """The Go ``TEMPLATE`` for ``tokenizer``'s chat template, or None and why not.

    Args:
        tokenizer: the exported tokenizer.

    Returns:
        ``(template, note)``: the template when the tokenizer's template renders ``PROBE`` (with
        and without the generation prompt) exactly as ChatML; else None, and the note says why.
    """
    if not tokenizer.chat_template:
        return None, "the tokenizer has no chat template"
    for gen in (True, False):
        want = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=gen)
        if want != chatml(PROBE, gen):
            return None, (
                "the chat template is not ChatML (it renders a probe conversation differently), and only "
                "ChatML is translated to Ollama's Go template; Ollama will use the GGUF's "
                "tokenizer.chat_template if it recognises it, else write a TEMPLATE by hand"
            )
    note = "ChatML: translated to Ollama's Go template and checked on a probe conversation"
    if renders_tools(tokenizer):
        # Ollama serialises .Tools with Go's encoding/json (other key order and spacing), so a
        # Go rendering of the tool list would not be the prompt the model was trained on.
        note += (
            "; it does not list tools (the Jinja template does): serve tool calling with "
            "vllm.sh or llama_cpp.sh"
        )
    return CHATML_GO_TEMPLATE, note


# transformers' {% generation %} markers (for assistant-only loss) render nothing, but Jinja
# engines other than transformers' (jinja2 in llama-cpp-python, minijinja) refuse the unknown tag.
_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def portable_template(tokenizer) -> tuple[str | None, str]:
    """The chat template without transformers-only ``{% generation %}`` markers, for the GGUF
    metadata and llama.cpp: kept only if it renders ``PROBE`` exactly as the original does.

    Args:
        tokenizer: the exported tokenizer.

    Returns:
        ``(template, note)``: the template to ship (None without one) and what was done.
    """
    original = tokenizer.chat_template
    if not original:
        return None, "no chat template"
    stripped = _GENERATION_TAG.sub("", original)
    if stripped == original:
        return original, "the tokenizer's chat template, unchanged"
    for gen in (True, False):
        kwargs = {"tokenize": False, "add_generation_prompt": gen}
        before = tokenizer.apply_chat_template(PROBE, chat_template=original, **kwargs)
        if tokenizer.apply_chat_template(PROBE, chat_template=stripped, **kwargs) != before:
            return (
                original,
                "the tokenizer's chat template ({% generation %} markers kept: removing them changed it)",
            )
    return (
        stripped,
        "the tokenizer's chat template without its {% generation %} training markers (renders the same)",
    )


def _quoted(text: str) -> str:
    """A Modelfile string: JSON-style double quotes (what Ollama's parser reads)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile(
    gguf_rel: str, template: str | None, stops: list[str], note: str, context_length: int
) -> str:
    """An Ollama Modelfile for one GGUF.

    Args:
        gguf_rel: the GGUF's path relative to the Modelfile's folder (Ollama resolves a relative
            ``FROM`` against the folder the Modelfile is in).
        template: the Go template, or None to leave ``TEMPLATE`` out.
        stops: stop strings (``PARAMETER stop``).
        note: why the template is what it is (a comment line).
        context_length: the model's context window (``num_ctx``).
    """
    lines = [
        "# Ollama: ollama create <name> -f serving/Modelfile  (from the export folder)",
        f"FROM {gguf_rel}",
        f"# TEMPLATE: {note}",
    ]
    if template is not None:
        if '"""' in template:
            raise ValueError("a TEMPLATE holding triple quotes cannot be written in a Modelfile")
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stops]
    lines.append(f"PARAMETER num_ctx {context_length}")
    return "\n".join(lines) + "\n"


def vllm_script(dtype: str, context_length: int, tools: bool = False) -> str:
    """``serving/vllm.sh``: vLLM's OpenAI-compatible server on ``merged/``.

    Args:
        dtype: the merged weights' dtype.
        context_length: ``--max-model-len``.
        tools: the chat template lists tools, so requests with ``tools`` get the model's calls
            back as ``tool_calls``: vLLM's ``llama3_json`` parser reads exactly the plain
            ``{"name": ..., "arguments": {...}}`` objects our template asks for.
    """
    cmd = (
        f"vllm serve merged/ --chat-template merged/chat_template.jinja --dtype {dtype} "
        f"--max-model-len {context_length} --generation-config auto"
        + (" --enable-auto-tool-choice --tool-call-parser llama3_json" if tools else "")
        + ' "$@"'
    )
    return _script("vLLM (OpenAI-compatible server) on the merged 16-bit weights", cmd)


def llama_cpp_script(
    gguf_rel: str, template_file: str | None = "serving/chat_template.jinja"
) -> str:
    """``serving/llama_cpp.sh``: llama.cpp's server on one GGUF, with the portable template
    (``serving/chat_template.jinja``, the one the GGUF carries).

    Args:
        gguf_rel: the GGUF's path relative to the export folder.
        template_file: the Jinja chat template (None: the model has none; llama.cpp falls back
            to its own default).
    """
    cmd = f"llama-server -m {shlex.quote(gguf_rel)} --jinja"
    if template_file:
        cmd += f" --chat-template-file {shlex.quote(template_file)}"
    cmd += ' "$@"'
    return _script("llama.cpp's server on the GGUF", cmd)


def _script(what: str, cmd: str) -> str:
    """A bash script that runs ``cmd`` from the export folder (the one holding serving/)."""
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# {what}; extra arguments are passed on.",
            "set -euo pipefail",
            'cd "$(dirname "$0")/.."',
            f"exec {cmd}",
            "",
        ]
    )


def commands(files: dict[str, Any]) -> dict[str, str]:
    """The one-line commands the report shows, keyed by server.

    Args:
        files: which serving files were written (``Modelfile``, ``vllm.sh``, ``llama_cpp.sh``).
    """
    out = {"vllm": "bash serving/vllm.sh"}
    if "Modelfile" in files:
        out["ollama"] = "ollama create tuned -f serving/Modelfile && ollama run tuned"
    if "llama_cpp.sh" in files:
        out["llama.cpp"] = "bash serving/llama_cpp.sh"
    return out
