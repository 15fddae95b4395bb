"""A teacher LLM that stages can call: a local transformers model or an OpenAI-compatible endpoint.

Shared by the stages that ask a stronger model for text (augment's synthetic data; an
LLM-as-judge can reuse it), so none of them imports another stage. ``TeacherConfig`` is the
config section that names the teacher; ``TeacherClient.connect`` reads its API key and gives:

- ``llm()``: a Distilabel LLM (``TransformersLLM`` or ``OpenAILLM``) for a Distilabel pipeline;
- ``complete(prompts)``: one reply per prompt, without a pipeline;
- ``info()`` and ``redact(text)``: what may be logged and reported about it.

The API key is read at run time from the environment variable named by ``api_key_env`` (or a
Prefect Secret block, ``api_key_secret``). It lives only in memory, in the client: it is never
part of the config, of the client's repr, or of anything ``info``/``redact`` return, and it is
registered with ``tuneline.redaction`` so that a library echoing it (OpenAI's 401 quotes the
key) logs ``***``. ``check_access`` sends one request first: a refused key fails once.

Distilabel is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from tuneline import progress, redaction
from tuneline.errors import MissingSecret, RefusedSecret, is_auth_failure
from tuneline.sections import Section

# What the teacher is given in memory for a local server without auth (never stored).
NO_AUTH_KEY = "EMPTY"


class TeacherConfig(Section):
    kind: Literal["transformers", "openai"] = Field(
        description="transformers: a local model (path or hub id); openai: an OpenAI-compatible endpoint."
    )
    model: str = Field(
        description="Model path or hub id (transformers), or the served model name (openai)."
    )
    base_url: str | None = Field(
        default=None, description="Endpoint URL, for kind=openai (e.g. http://127.0.0.1:8000/v1)."
    )
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description=(
            "Name of the environment variable holding the API key (never the key itself); "
            "null for a server without auth."
        ),
    )
    api_key_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the API key; used instead of api_key_env when set.",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    max_new_tokens: int = Field(default=128, ge=1, description="Longest generation.")

    @model_validator(mode="after")
    def check_openai_has_url(self) -> TeacherConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("teacher.kind=openai needs teacher.base_url")
        return self


# ------------------------------------------------------------------------------ the key


def resolve_api_key(teacher: TeacherConfig, where: str = "teacher") -> str | None:
    """The teacher's API key, read now and kept only in memory (None: no key is needed).

    Args:
        teacher: the teacher section; ``api_key_secret`` (a Prefect Secret block) wins over
            ``api_key_env`` (an environment variable name); both empty means no auth.
        where: the section's full path in the pipeline config (``augment.teacher``,
            ``evaluate.judge.teacher``), for the messages.

    Raises:
        MissingSecret: the named variable or block is unset or empty, naming it and what to do.
    """
    if teacher.kind != "openai":
        return None
    if teacher.api_key_secret:
        # Imported here: stage code must not import Prefect, and this only needs it for a block.
        from tuneline.orchestration import read_secret

        try:
            key = read_secret(teacher.api_key_secret)
        except ValueError as e:
            raise MissingSecret(
                f"{where}.api_key_secret names the Prefect Secret block {teacher.api_key_secret!r}, "
                f"which could not be loaded ({e}); create it in the Prefect UI (Blocks > Secret) "
                "or with `prefect block create secret`"
            ) from None
        redaction.register_secret(key)  # a library that echoes it must not log it
        return key
    check_key_is_set(teacher, where)
    if teacher.api_key_env is None:
        return None
    key = os.environ[teacher.api_key_env]
    redaction.register_secret(key)
    return key


def check_key_is_set(teacher: TeacherConfig, where: str = "teacher") -> None:
    """Raises ``MissingSecret`` when the environment variable ``api_key_env`` names is unset:
    what can be known about the key before the first stage runs (a Secret block is read by
    the stage, from the Prefect server it runs under).

    Args:
        teacher: the teacher section.
        where: its full path in the pipeline config, for the message.
    """
    if teacher.kind != "openai" or teacher.api_key_secret or teacher.api_key_env is None:
        return
    if not os.environ.get(teacher.api_key_env, ""):
        raise MissingSecret(
            f"{where}.api_key_env names the environment variable {teacher.api_key_env!r}, which is "
            f"not set (or empty): export {teacher.api_key_env}=<your key> for {public_url(teacher.base_url)}, "
            f"or set {where}.api_key_env to null if the server needs no key"
        )


def public_url(url: str | None) -> str | None:
    """The URL with any user:password part replaced by ``***``, safe to log and report.

    Args:
        url: an endpoint URL, or None (returned as is).
    """
    return redaction.redact_url_text(url) if url else url


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` cut out, should any library have echoed it.

    Args:
        text: a message about to be logged or reported.
        secret: the API key (None or the no-auth placeholder: nothing to cut).
    """
    if secret and secret != NO_AUTH_KEY:
        return text.replace(secret, "***")
    return text


# ------------------------------------------------------------------------------ the LLM


def build_llm(teacher: TeacherConfig, api_key: str | None):
    """A Distilabel LLM for the teacher: TransformersLLM or OpenAILLM (not loaded yet).

    Args:
        teacher: kind, model, endpoint and sampling settings.
        api_key: from ``resolve_api_key`` (openai only).
    """
    if teacher.kind == "transformers":
        from distilabel.models import TransformersLLM

        sampling: dict[str, Any] = {
            "max_new_tokens": teacher.max_new_tokens,
            "do_sample": teacher.temperature > 0,
        }
        if teacher.temperature > 0:
            sampling["temperature"] = teacher.temperature
        # trust_remote_code stays off: a teacher is data, not code we have reviewed.
        return TransformersLLM(
            model=teacher.model, trust_remote_code=False, generation_kwargs=sampling
        )

    from distilabel.models import OpenAILLM
    from pydantic import SecretStr

    return OpenAILLM(
        model=teacher.model,
        base_url=teacher.base_url,
        api_key=SecretStr(api_key or NO_AUTH_KEY),
        generation_kwargs={
            "max_new_tokens": teacher.max_new_tokens,
            "temperature": teacher.temperature,
        },
    )


@dataclass(frozen=True)
class TeacherClient:
    """A teacher ready to call: its config and its API key (in memory only, left out of repr).

    Args:
        config: the teacher section.
        api_key: from ``resolve_api_key``; use ``connect`` rather than passing it by hand.
    """

    config: TeacherConfig
    api_key: str | None = field(default=None, repr=False)
    where: str = "teacher"  # the section's path in the pipeline config, for messages

    @classmethod
    def connect(cls, config: TeacherConfig, where: str = "teacher") -> TeacherClient:
        """A client for ``config``, its key read now (``MissingSecret`` when it is not set).

        Args:
            config: the teacher section.
            where: its full path in the pipeline config (``augment.teacher``), for messages.
        """
        return cls(config, resolve_api_key(config, where), where)

    def check_access(self) -> None:
        """One request (``GET /models``) before the work, so a refused key fails once, here,
        instead of once per prompt and again on every retry.

        Only a 401/403 counts: a server without that route, or one that is down, is left to
        the calls themselves (down is transient and retried; a missing route is harmless).

        Raises:
            RefusedSecret: the server refused the key, naming where it came from.
        """
        if self.config.kind != "openai":
            return
        from openai import OpenAI

        client = OpenAI(
            base_url=self.config.base_url,
            api_key=self.api_key or NO_AUTH_KEY,
            max_retries=0,
            timeout=30,
        )
        try:
            client.models.list()
        except Exception as e:
            if is_auth_failure(e):
                raise self.refused(e) from None
        finally:
            client.close()

    def refused(self, exc: BaseException) -> RefusedSecret:
        """The error for a 401/403 from the teacher: which key, from where, what to do (never
        the server's own message, which may quote the key)."""
        c, w = self.config, self.where
        status = getattr(exc, "status_code", None) or "401/403"
        if c.api_key_secret:
            source = f"the Prefect Secret block {c.api_key_secret!r} ({w}.api_key_secret)"
        elif c.api_key_env:
            source = f"the environment variable {c.api_key_env!r} ({w}.api_key_env)"
        else:
            source = f"no key ({w}.api_key_env is null)"
        return RefusedSecret(
            f"{w}: {public_url(c.base_url)} refused the API key (HTTP {status}) from {source}; "
            "set it to a valid key for that server (not retried: the same key is refused again)"
        )

    def info(self) -> dict[str, Any]:
        """Model, kind and credential-free endpoint: what a report may say about the teacher."""
        c = self.config
        return {"model": c.model, "kind": c.kind, "base_url": public_url(c.base_url)}

    def redact(self, text: str) -> str:
        """``text`` with this client's key cut out."""
        return redact(text, self.api_key)

    def llm(self):
        """A new Distilabel LLM for this teacher, for a Distilabel pipeline (which loads it)."""
        return build_llm(self.config, self.api_key)

    def complete(self, prompts: list[str], system: str | None = None) -> list[str | None]:
        """One reply per prompt, from the teacher loaded for this call (no Distilabel pipeline).

        A call that fails gives None for its prompt, as a failed call does in a Distilabel
        pipeline, and a warning (key redacted) in the stage's log; when every reply is None the
        teacher is unreachable, which the caller should treat as an error. A refused key
        (HTTP 401/403) raises ``RefusedSecret`` at once.

        Args:
            prompts: user messages, one conversation each.
            system: an optional system message put before each prompt.
        """
        if not prompts:
            return []
        head = [{"role": "system", "content": system}] if system else []
        conversations = [[*head, {"role": "user", "content": p}] for p in prompts]
        llm = self.llm()
        llm.load()
        try:
            try:
                return _first_generations(llm, conversations)
            except Exception as e:  # asked again one by one below, unless the key is refused
                if is_auth_failure(e):
                    raise self.refused(e) from None
                self._warn(
                    "a batch of %d prompts failed (%s); asking one at a time", len(prompts), e
                )
            replies: list[str | None] = []
            for conversation in conversations:
                try:
                    replies += _first_generations(llm, [conversation])
                except Exception as e:  # a failed call is a missing reply
                    if is_auth_failure(e):
                        raise self.refused(e) from None
                    self._warn("a prompt got no reply (%s)", e)
                    replies.append(None)
            return replies
        finally:
            llm.unload()

    def _warn(self, message: str, *args: Any) -> None:
        progress.logger().warning(
            "teacher %s: " + message,
            self.config.model,
            *(self.redact(str(a)) if isinstance(a, Exception) else a for a in args),
        )


def _first_generations(llm, conversations: list[list[dict[str, str]]]) -> list[str | None]:
    """The first generation for each conversation, with the LLM's own sampling settings."""
    outputs = llm.generate_outputs(inputs=conversations, **llm.get_generation_kwargs())
    return [(out.get("generations") or [None])[0] for out in outputs]
