"""Keeping secrets out of what tuneline writes and logs.

Two kinds of secret reach a run: API keys, read at run time from the environment variables
(or Prefect Secret blocks) that a config names, and credentials written into a URL of the
config (``base_url: http://user:pass@host/v1``). Neither may reach an artifact, a run record,
the Prefect database or a log line:

- ``redact_urls(obj)``: ``obj`` (a config dump, a report: any JSON-like value) with the
  ``user:pass@`` of every URL in it replaced by ``***@``. It is applied where configs and
  reports are serialised: the artifact key and manifest (``tuneline.stage.key_config``),
  report.json (``ArtifactWriter.commit``), the run's lineage record (``runner.write_lineage``),
  the Prefect flow-run parameters (``orchestration.RedactedFlow``) and report artifacts.
- ``protect(cfg)``: registers the values of the environment variables named by every
  ``api_key_env`` of a config, and the passwords of its URLs (and their HTTP Basic form, which
  a server may quote back), and makes every log record of
  this process (and of processes forked from it, such as Distilabel's workers) carry
  ``***`` in their place. ``register_secret`` adds a value read later (a Prefect Secret block).

Credentials are not part of what a stage computes, so redacting them from the artifact key is
right too: a new password keeps the artifacts, and the key is no hash of the password.
A deployment's own parameters (prefect.yaml) are the config as written, credentials included:
keep credentials out of URLs there and name an ``api_key_env`` instead.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

# Shorter values would cut common words out of every log line; real keys are far longer.
MIN_SECRET_CHARS = 6
MASK = "***"

# scheme://userinfo@ : userinfo runs to the last "@" before the host's end. Quotes, brackets
# and whitespace end it, so a URL inside JSON or prose is redacted without eating its context.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#\"'<>\\{}\[\]]*@")

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact_url_text(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _URL_CREDENTIALS.sub(rf"\1{MASK}@", text) if "://" in text else text


def redact_urls(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, strings, scalars) with URL credentials redacted."""
    if isinstance(obj, str):
        return redact_url_text(obj)
    if isinstance(obj, dict):
        return {k: redact_urls(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_urls(v) for v in obj)
    return obj


def redact_text(text: str) -> str:
    """``text`` with URL credentials and every registered secret value replaced by ``***``."""
    text = redact_url_text(text)
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer secret may hold a shorter
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def register_secret(value: str | None) -> None:
    """Cuts ``value`` out of every later log record (too short or empty: nothing to cut)."""
    if value and len(value) >= MIN_SECRET_CHARS and value != "EMPTY":  # teacher.NO_AUTH_KEY
        _secrets.add(value)
        install_log_redaction()


def config_secrets(cfg: Any) -> list[str]:
    """The secret values a config points at: the values of the environment variables named by
    any ``api_key_env`` in it, and the passwords of its URLs."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "api_key_env" and isinstance(v, str) and os.environ.get(v):
                    found.append(os.environ[v])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str) and "@" in node and "://" in node:
            try:
                parts = urlsplit(node)
                user, password = parts.username, parts.password
            except ValueError:  # not a URL after all
                user = password = None
            if password:
                found.append(password)
                # what the client sends for them (HTTP Basic), which a server may quote back
                basic = f"{unquote(user or '')}:{unquote(password)}".encode()
                found.append(base64.b64encode(basic).decode())

    walk(cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg)
    return found


def protect(cfg: Any) -> None:
    """Registers ``cfg``'s secrets (``config_secrets``) and turns on log redaction."""
    for value in config_secrets(cfg):
        register_secret(value)
    install_log_redaction()


def _scrub(record: logging.LogRecord) -> None:
    message = record.getMessage()
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact_text(text)
        if clean != text:
            record.exc_text = clean  # what Formatter.format prints instead of re-rendering


def install_log_redaction() -> None:
    """Wraps the log-record factory (once) so every record is redacted as it is made.

    A factory rather than a ``logging.Filter``: a filter on a logger never sees the records
    propagated from its children, and one on a handler only that handler's; Prefect and
    Distilabel add handlers of their own after a run starts. Every record, whichever logger
    and handler it goes to, is made by the factory, and forked workers inherit it.
    """
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                _scrub(record)
            except Exception:  # a bad format string: logging reports it itself, later
                pass
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
