"""A minimal renderer for the subset of Go's text/template that Ollama TEMPLATEs use here (test
support, not product code): there is no Go in Python, and the Modelfile test needs to render the
TEMPLATE to compare it with the tokenizer's Jinja chat template.

Supported: text; ``{{ .Field }}``, ``{{ $.Field }}``, ``{{ . }}``; ``{{ range PIPE }}...{{ end }}``
(dot becomes each element); ``{{ if PIPE }}...{{ else if PIPE }}...{{ else }}...{{ end }}``;
``eq A B`` (true when A equals B); string literals; and the trim markers ``{{-`` / ``-}}``, which
drop the whitespace before / after the action (as Go does). Anything else is a ``SyntaxError``,
so a TEMPLATE that strays outside the subset fails the test instead of rendering wrongly.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)


def _lex(template: str) -> list[tuple[str, str]]:
    """``("text", s)`` and ``("action", s)`` items, with trim markers applied to the text."""
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        items.append(("text", text))
        items.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    items.append(("text", tail.lstrip() if trim_next else tail))
    return items


def _parse(
    items: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()
) -> tuple[list, int, str]:
    """Nodes up to an action starting with one of ``stop``; returns (nodes, next index, stopper)."""
    nodes: list[Any] = []
    while i < len(items):
        kind, value = items[i]
        i += 1
        if kind == "text":
            if value:
                nodes.append(("text", value))
            continue
        word = value.split(" ", 1)[0]
        if word in stop:
            return nodes, i, value
        if word == "range":
            body, i, end = _parse(items, i, ("end",))
            nodes.append(("range", value[len("range") :].strip(), body))
        elif word == "if":
            branches = []
            cond = value[len("if") :].strip()
            while True:
                body, i, stopper = _parse(items, i, ("else", "end"))
                branches.append((cond, body))
                if stopper == "end":
                    break
                rest = stopper[len("else") :].strip()
                cond = rest[len("if") :].strip() if rest.startswith("if") else None
            nodes.append(("if", branches))
        elif word in ("end", "else"):
            raise SyntaxError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(("expr", value))
    if stop:
        raise SyntaxError(f"missing {{{{ {stop[-1]} }}}}")
    return nodes, i, ""


def _value(token: str, dot: Any, root: Any) -> Any:
    """One operand: a string literal, ``.``, ``.Field`` or ``$.Field``."""
    if token.startswith('"'):
        return token[1:-1]
    if token == ".":
        return dot
    base, path = (
        (root, token[2:])
        if token.startswith("$.")
        else (dot, token[1:])
        if token.startswith(".")
        else (None, None)
    )
    if path is None:
        raise SyntaxError(f"unsupported operand {token!r}")
    for part in path.split("."):
        base = base[part] if isinstance(base, dict) else getattr(base, part)
    return base


def _eval(pipe: str, dot: Any, root: Any) -> Any:
    """A pipeline: one operand, or ``eq A B``."""
    tokens = shlex.split(pipe, posix=False)
    if tokens[0] == "eq":
        if len(tokens) != 3:
            raise SyntaxError(f"eq takes two operands: {pipe!r}")
        return _value(tokens[1], dot, root) == _value(tokens[2], dot, root)
    if len(tokens) != 1:
        raise SyntaxError(f"unsupported pipeline {pipe!r}")
    return _value(tokens[0], dot, root)


def _run(nodes: list, dot: Any, root: Any, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(str(_eval(node[1], dot, root)))
        elif node[0] == "range":
            for item in _eval(node[1], dot, root) or []:
                _run(node[2], item, root, out)
        elif node[0] == "if":
            for cond, body in node[1]:
                if cond is None or _eval(cond, dot, root):
                    _run(body, dot, root, out)
                    break


def render(template: str, data: dict[str, Any]) -> str:
    """``template`` rendered with ``data`` as dot (and ``$``).

    Args:
        template: a Go text/template within the supported subset.
        data: e.g. ``{"Messages": [{"Role": "user", "Content": "hi"}]}``.
    """
    nodes, _, _ = _parse(_lex(template))
    out: list[str] = []
    _run(nodes, data, data, out)
    return "".join(out)
