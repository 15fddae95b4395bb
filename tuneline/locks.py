"""One computation per artifact key: a lock that a second run waits on, and who owns what.

``tuneline.stage.execute`` holds a ``KeyLock`` from its second existence check to its commit,
so two runs that want the same artifact compute it once: the second waits (and says so in its
log), then finds the artifact published and reuses it.

- A local root locks with a lock file, ``<root>/.locks/<stage>/<key>.lock`` (``filelock``: an
  ``flock`` the kernel drops when its process dies, so a crashed run never leaves the key locked).
- An object-store root (``s3://...``) has no such lock: the owner writes a *lease*,
  ``<root>/.locks/<stage>/<key>.lease`` (owner, token, expiry), created only if absent and
  renewed by a heartbeat thread while the owner computes. A lease past its expiry (its owner
  died or hung) may be taken over. On S3 both steps are conditional writes (``If-None-Match``
  to create, ``If-Match`` on the old lease's ETag to take over, renew and delete), so two
  machines never both hold it; other fsspec stores get a best-effort write-then-read-back.
  Before publishing, the writer checks that it still holds the lease (``KeyLock.check``).

Staging folders carry their owner in their name (``owner_tag``), so the next writer on a root
can tell a crashed run's leftovers (owner gone on this host) from a live run's work.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from tuneline.errors import TransientError

LEASE_SECONDS = 60.0  # a lease not renewed for this long may be taken over
POLL_SECONDS = 1.0  # how often a waiting run looks at the lock again
WAIT_LOG_SECONDS = 60.0  # a waiting run repeats its "waiting" line this often

log = logging.getLogger("tuneline")


# --------------------------------------------------------------------------- owners


def hostname() -> str:
    """This machine's name, reduced to characters that are safe in file and object names."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def owner_tag() -> str:
    """``<pid>@<host>``: who owns a staging folder or a lease."""
    return f"{os.getpid()}@{hostname()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a pid reused by another process counts as
    alive: a leftover is then kept, never a live run's folder removed)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


# --------------------------------------------------------------------------- locks


class LeaseLost(TransientError):
    """This run's lease on a key expired and another run took it over; that run computes the
    artifact, and a retry reuses it."""


class KeyLock(Protocol):
    waited: bool  # True when another run held the key and this one waited for it

    def __enter__(self) -> KeyLock: ...

    def __exit__(self, *exc: Any) -> None: ...

    def check(self) -> None:
        """Raises ``LeaseLost`` when this run no longer holds the key."""


def _waiting(logger: Any, what: str, where: str, since: float, last: float) -> float:
    """Logs that this run waits (first time, then every ``WAIT_LOG_SECONDS``); returns when it last logged."""
    now = time.time()
    if last == 0.0 or now - last >= WAIT_LOG_SECONDS:
        extra = f" for {now - since:.0f} s" if last else ""
        logger.info("waiting%s for another run computing %s (lock %s); its artifact is reused once published", extra, what, where)
        return now
    return last


class FileKeyLock:
    """The lock of one key on a local root: a lock file the kernel releases if its owner dies.

    Args:
        path: the lock file (its folder is created).
        what: ``<stage>/<key>`` for the log.
        logger: where the "waiting" lines go.
    """

    def __init__(self, path: Path, what: str, logger: Any = None):
        self.path, self.what, self.logger = path, what, logger or log
        self.waited = False
        self._lock: FileLock | None = None

    def __enter__(self) -> FileKeyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the lock belongs to this object, whichever thread releases it.
        self._lock = FileLock(str(self.path), thread_local=False)
        since, logged = time.time(), 0.0
        while True:
            try:
                self._lock.acquire(timeout=0 if not self.waited else POLL_SECONDS)
                return self
            except Timeout:
                self.waited = True
                logged = _waiting(self.logger, self.what, str(self.path), since, logged)

    def check(self) -> None:
        return None  # a held flock cannot be taken while its process lives

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class LeaseKeyLock:
    """The lock of one key on an object store: a lease object with an expiry, renewed by a
    heartbeat thread while held.

    Args:
        fs: the store's fsspec filesystem.
        path: the lease object's path (no protocol).
        what: ``<stage>/<key>`` for the log.
        logger: where the "waiting" lines go.
        seconds: how long the lease lasts without renewal (default ``LEASE_SECONDS``).
    """

    def __init__(self, fs: Any, path: str, what: str, logger: Any = None, seconds: float | None = None):
        self.fs, self.path, self.what, self.logger = fs, path, what, logger or log
        self.seconds = seconds if seconds is not None else LEASE_SECONDS
        self.token = uuid.uuid4().hex
        self.owner = owner_tag()
        self.waited = False
        self.lost = False
        self._etag: str | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        # S3 can write conditionally (If-None-Match / If-Match): exact. Others: best effort.
        self._conditional = hasattr(fs, "call_s3")

    # -- the lease object --

    def _body(self) -> bytes:
        expires = time.time() + self.seconds
        return json.dumps({"owner": self.owner, "token": self.token, "expires": expires}).encode()

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The current lease and its ETag (ETag first: a lease renewed between the two reads
        then fails the conditional write instead of being taken over)."""
        try:
            etag = self.fs.info(self.path).get("ETag") if self._conditional else None
            body = json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None, None
        except ValueError:  # a torn or foreign object: treat it as expired
            return {"expires": 0.0}, etag
        return body, etag

    def _put(self, **condition: Any) -> bool:
        """Writes this run's lease under ``condition``; False when the condition fails."""
        try:
            if self._conditional:
                out = self.fs.pipe_file(self.path, self._body(), **condition)
                self._etag = (out or {}).get("ETag") or self.fs.info(self.path).get("ETag")
                return True
            if condition.get("mode") == "create":
                self.fs.pipe_file(self.path, self._body(), mode="create")
            else:
                self.fs.pipe_file(self.path, self._body())
        except FileExistsError:
            return False
        except OSError as e:
            if self._conditional and (e.errno == errno.EINVAL or "Precondition" in str(e)):
                return False  # If-Match failed (s3fs says EINVAL): another run wrote the lease first
            raise
        # Without conditional writes: the last writer wins; read back to see who that was.
        current, _ = self._read()
        return current is not None and current.get("token") == self.token

    def try_acquire(self) -> bool:
        """Takes the lease if it is free or expired; False while another run holds it."""
        if self._put(mode="create"):
            return True
        current, etag = self._read()
        if current is None:  # released between our write and our read
            return self._put(mode="create")
        if float(current.get("expires", 0)) > time.time():
            return False
        self.logger.warning(
            "%s: taking over the expired lease of %s (owner %s)", self.what, self.path, current.get("owner", "?")
        )
        return self._put(IfMatch=etag) if self._conditional else self._put()

    # -- holding it --

    def renew(self) -> bool:
        """Pushes the lease's expiry forward (one heartbeat); False, and ``lost`` set, when
        another run has taken the lease over.

        Raises:
            OSError: the store could not be reached (the next beat tries again).
        """
        ok = self._put(IfMatch=self._etag) if self._conditional else self._renew_plain()
        if not ok:
            self.lost = True
            self.logger.warning("%s: lost the lease %s to another run", self.what, self.path)
        return ok

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.renew():
                    return
            except Exception as e:  # a network blip: try again at the next beat, before the expiry
                self.logger.warning("%s: could not renew the lease %s (%s)", self.what, self.path, e)

    def _renew_plain(self) -> bool:
        current, _ = self._read()
        if current is None or current.get("token") != self.token:
            return False
        self.fs.pipe_file(self.path, self._body())
        return True

    def __enter__(self) -> LeaseKeyLock:
        since, logged = time.time(), 0.0
        while not self.try_acquire():
            self.waited = True
            logged = _waiting(self.logger, self.what, self.path, since, logged)
            time.sleep(POLL_SECONDS)
        self._heartbeat = threading.Thread(target=self._renew_loop, name=f"lease {self.what}", daemon=True)
        self._heartbeat.start()
        return self

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(
                f"this run's lease on {self.what} ({self.path}) expired and another run took it "
                "over (was this process paused?); that run publishes the artifact: run again to reuse it"
            )

    def stop_heartbeat(self) -> None:
        """Stops renewing (tests use it to play a run that hangs)."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()

    def __exit__(self, *exc: Any) -> None:
        self.stop_heartbeat()
        if self.lost:
            return
        try:
            if self._conditional:
                bucket, key, _ = self.fs.split_path(self.path)
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._etag)
            else:
                current, _ = self._read()
                if current is not None and current.get("token") == self.token:
                    self.fs.rm_file(self.path)
        except (FileNotFoundError, OSError) as e:
            # Not deleted (taken over, or the store is unreachable): it expires by itself.
            self.logger.info("%s: lease %s not removed (%s); it expires by itself", self.what, self.path, e)
