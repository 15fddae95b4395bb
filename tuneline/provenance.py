"""What made an artifact, recorded in its manifest outside the key: the Python and library
versions, and the project's git commit. Two artifacts with the same key but different
versions here are interchangeable by design; these fields say what to suspect when they are not."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

# The libraries whose versions decide what the stages compute.
PACKAGES = ("prefect", "datatrove", "presidio-analyzer", "distilabel", "transformers", "trl", "peft", "torch")
REPO = Path(__file__).resolve().parents[1]


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``; a package that is not installed is left out."""
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-optional-locks: reading the status must never rewrite the repository's index.
    return subprocess.run(
        ["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True, text=True, timeout=20
    )


def git_commit(repo: Path = REPO) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` for the checkout at ``repo``, or None when it is not
    a git checkout of its own (an installed package), git is missing or fails. Never raises.

    ``dirty`` is True when tracked files differ from the commit (untracked files are not counted:
    listing them can take long in a big tree).
    """
    try:
        top = _git(repo, "rev-parse", "--show-toplevel")
        # A package installed inside some other checkout (a venv in a repo) is not that repo's code.
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != repo.resolve():
            return None
        head = _git(repo, "rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = _git(repo, "status", "--porcelain", "--untracked-files=no")
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


@cache
def environment() -> dict[str, Any]:
    """The manifest's ``environment`` field (once per process: it does not change while it runs)."""
    return {"python": platform.python_version(), "packages": package_versions(), "git": git_commit()}
