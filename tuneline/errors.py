"""Errors, split by what a retry can do about them.

A ``TunelineError`` is a user or input error: a bad config, an unreadable source, a missing
artifact or API key. Running the same code on the same input fails the same way, so a stage
that raises one fails at once, without a retry, and the CLI prints its message alone (no
traceback): the message names the bad input and what to do.

``TransientError`` and the errors ``is_transient`` recognises (network, HTTP 5xx and 429,
timeouts, out-of-disk) may pass on a second attempt: those, and only those, are retried.
Anything else is a bug or an unknown failure: it is not retried either, and keeps its
traceback so it can be reported.
"""

from __future__ import annotations

import errno


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


def is_transient(exc: BaseException | None) -> bool:
    """Whether a retry could fix ``exc`` (it, or the error it was raised from)."""
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
