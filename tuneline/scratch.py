"""Scratch folders that a later run removes when the run that made them died.

A stage's work files (DataTrove's signatures, the trainer's output_dir, Distilabel's cache) and
the temporary Prefect API's home live outside the artifact store, in

    $TMPDIR/tuneline-scratch/<kind>-<hostname>-<pid>-<random>/

``scratch_dir(kind)`` makes one and removes it when the block ends. A process killed with
SIGKILL (or by the OOM killer, or a power cut) never reaches that point, so ``sweep()``, which
every run calls before it starts (``tuneline run`` and ``StageRunner``), removes the folders of
this host whose process is gone. The pid in the name says whose a folder is; a pid that the
system has since given to a newer process is told apart by its start time, which is then later
than the folder's last change. Folders of other hosts (a shared $TMPDIR) are left alone.

The folder of a temporary Prefect API (kind ``prefect``, see ``tuneline.ui.TemporaryAPI``) holds
its SQLite db and a ``server.pid``; if that server outlived its owner (it should not: it dies
with its parent on Linux), ``sweep()`` stops it before removing its home.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

ROOT_NAME = "tuneline-scratch"
SERVER_PID = "server.pid"  # in a temporary Prefect home: "<pid> <start time>" of its server
_KIND = re.compile(r"[a-z0-9_]+")
_SLACK_S = 1.0  # clock resolution between a process's start time and a folder's mtime


class Owner(NamedTuple):
    kind: str
    host: str
    pid: int


def hostname() -> str:
    """This host's name as it appears in folder names (no path separators)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _usable(path: Path) -> bool:
    """A folder only this user can change: nobody else may swap our scratch folders."""
    try:
        st = path.lstat()
    except OSError:
        return False
    uid = os.getuid() if hasattr(os, "getuid") else None
    return path.is_dir() and not path.is_symlink() and (uid is None or st.st_uid == uid)


def root(create: bool = True) -> Path:
    """``$TMPDIR/tuneline-scratch`` (``tuneline-scratch-<uid>`` if another user owns that)."""
    base = Path(tempfile.gettempdir())
    candidates = [base / ROOT_NAME]
    if hasattr(os, "getuid"):
        candidates.append(base / f"{ROOT_NAME}-{os.getuid()}")
    for path in candidates:
        if create:
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass
        if _usable(path):
            return path
    if create:
        raise PermissionError(
            f"no scratch folder of this user under {base}: {candidates} belong to others"
        )
    return candidates[-1]


def owner(name: str) -> Owner | None:
    """Whose a folder is, from its name ``<kind>-<host>-<pid>-<random>``; None if not ours."""
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    kind, _, host = parts[0].partition("-")
    if not host or not _KIND.fullmatch(kind):
        return None
    return Owner(kind, host, int(parts[1]))


def new_scratch_dir(kind: str) -> Path:
    """Makes a scratch folder owned by this process; the caller removes it (or ``sweep`` does,
    once this process is gone)."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"scratch kind must match {_KIND.pattern}, not {kind!r}")
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{hostname()}-{os.getpid()}-", dir=root()))


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A scratch folder for the block, removed when it ends (and by a later ``sweep`` if this
    process is killed first)."""
    path = new_scratch_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds); None if unknown. A zombie counts as gone."""
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return -1.0
        return p.create_time()
    except ImportError:
        return None
    except Exception:  # psutil.NoSuchProcess / AccessDenied
        return None


def alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` is running on this host and, given ``since`` (the epoch time its
    folder last changed), is the same process that changed it then (not a reused pid)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:  # cannot tell: keep its folder
        return True
    started = _started(pid)
    if started is None:
        return True
    if started < 0:  # a zombie: killed, only not yet reaped
        return False
    return since is None or started <= since + _SLACK_S


def _stop_server(home: Path) -> None:
    """Kills the temporary Prefect server recorded in ``home`` if it outlived its owner."""
    try:
        pid_s, started_s = (home / SERVER_PID).read_text().split()
        pid, started = int(pid_s), float(started_s)
    except (OSError, ValueError):
        return
    now = _started(pid)
    if now is None or now < 0 or abs(now - started) > 0.05:  # gone, or someone else's pid now
        return
    log.info("stopping the temporary Prefect server %d left by a dead run (%s)", pid, home)
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass


def sweep() -> list[Path]:
    """Removes this host's scratch folders whose process is gone; returns what it removed.

    Cheap (one directory listing) and never raises: a run must not fail over someone's junk.
    """
    removed: list[Path] = []
    try:
        base = root(create=False)
        if not _usable(base):
            return removed
        host = hostname()
        with os.scandir(base) as entries:
            for entry in entries:
                who = owner(entry.name)
                if who is None or who.host != host or not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue  # removed meanwhile
                if alive(who.pid, since=mtime):
                    continue
                path = Path(entry.path)
                if who.kind == "prefect":
                    _stop_server(path)
                shutil.rmtree(path, ignore_errors=True)
                if not path.exists():
                    removed.append(path)
                    log.debug("removed %s: its process %d is gone", path, who.pid)
    except OSError as e:
        log.debug("scratch sweep skipped: %s", e)
    return removed
