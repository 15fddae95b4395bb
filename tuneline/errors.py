"""Errors, split by what a retry can do about them.

A ``TunelineError`` is a user or input error: a bad config, an unreadable source, a missing
artifact or API key. Running the same code on the same input fails the same way, so a stage
that raises one fails at once, without a retry, and the CLI prints its message alone (no
traceback): the message names the bad input and what to do.

``TransientError`` and the errors ``is_transient`` recognises (network, HTTP 5xx and 429,
timeouts, out-of-disk) may pass on a second attempt: those, and only those, are retried. An
HTTP 401 or 403 anywhere in an error's chain is never transient: a refused key is refused
again, so a stage that meets one raises ``RefusedSecret`` at once.
Anything else is a bug or an unknown failure: it is not retried either, and keeps its
traceback so it can be reported.
"""

from __future__ import annotations

import errno
import re


class TunelineError(Exception):
    """A user or input error: retrying cannot fix it; the message says what to change."""


class ConfigError(TunelineError, ValueError):
    """A config that cannot run; the message names each bad field and what it accepts."""


class InputError(TunelineError, ValueError):
    """An input (source file, split, artifact content) that a stage cannot use."""


class MissingArtifact(TunelineError):
    """A stage outside the run's selection has no artifact for this config yet."""


class MissingSecret(TunelineError):
    """An API key or token the config names is not set where it says."""


class RefusedSecret(TunelineError):
    """A server refused the API key or credentials (HTTP 401/403): the message names the
    variable (or block) the key came from and the config field that names it."""


class StoreError(TunelineError):
    """The artifact root cannot be used (read-only, not a directory, no permission)."""


class NonFiniteError(TunelineError):
    """A loss, metric or logit came out NaN or infinite: the model diverged (a learning rate
    too high for it, bad data) or was broken before. The same config and data diverge the same
    way, so it is not retried; nothing is published from it, and the message says where it was
    seen and what to change."""


class TransientError(Exception):
    """A failure that a later attempt may not see (a flaky disk, a network blip): retried."""


# errnos that describe the moment, not the input: full disk, I/O hiccups, network.
TRANSIENT_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT,
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH,
    errno.EHOSTUNREACH, errno.EPIPE, errno.ESTALE,
}  # fmt: skip
# Client libraries' exception class names that mean "try again" (httpx, requests, openai,
# botocore, aiohttp): matched by name so none of them has to be imported to classify.
TRANSIENT_NAMES = (
    "Timeout", "TimedOut", "ConnectError", "ConnectionError", "APIConnectionError",
    "RemoteProtocolError", "ReadError", "WriteError", "InternalServerError", "ServiceUnavailable",
    "RateLimitError", "Throttl", "EndpointConnectionError", "ServerDisconnectedError",
)  # fmt: skip


# HTTP statuses that refuse the credentials themselves, and the client libraries' classes for
# them (openai's AuthenticationError and PermissionDeniedError, ...): the same key is refused
# the same way, however often it is sent.
AUTH_STATUSES = (401, 403)
AUTH_NAMES = ("AuthenticationError", "PermissionDenied", "Unauthorized", "Forbidden")
# How a 401/403 reads in a message that has lost its exception (Distilabel logs failed calls
# as text): "Error code: 401", "HTTP 403", "401 Unauthorized", "status_code=401".
AUTH_TEXT = re.compile(
    r"(?i)\b(?:error code|status(?:[ _]code)?|http(?:/[\d.]+)?)\s*[:=]?\s*(?:401|403)\b"
    r"|\b401 unauthorized\b|\b403 forbidden\b"
)


def _status(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        code = getattr(obj, "status_code", None) or getattr(obj, "status", None)
        if isinstance(code, int):
            return code
    return None


def _one_is_transient(exc: BaseException) -> bool | None:
    """True/False when ``exc`` alone decides it, None when its cause should decide."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, TunelineError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in TRANSIENT_ERRNOS
    status = _status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if any(n in cls.__name__ for cls in type(exc).__mro__ for n in TRANSIENT_NAMES):
        return True
    return None


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and all(exc is not e for e in out):
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def is_auth_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it was raised from) is an HTTP 401/403: credentials refused."""
    for e in _chain(exc):
        if isinstance(e, RefusedSecret) or _status(e) in AUTH_STATUSES:
            return True
        if any(n in cls.__name__ for cls in type(e).__mro__ for n in AUTH_NAMES):
            return True
    return False


def mentions_auth_failure(text: str) -> bool:
    """Whether a logged message reports an HTTP 401/403."""
    return AUTH_TEXT.search(text) is not None


def is_transient(exc: BaseException | None) -> bool:
    """Whether a retry could fix ``exc`` (it, or the error it was raised from). A refused key
    anywhere in the chain is not, even under a ``TransientError`` that wraps it."""
    if is_auth_failure(exc):
        return False
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        verdict = _one_is_transient(exc)
        if verdict is not None:
            return verdict
        exc = exc.__cause__ or exc.__context__
    return False


def user_error(exc: BaseException | None) -> TunelineError | None:
    """The ``TunelineError`` behind ``exc`` (itself, or one it was raised from), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TunelineError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
