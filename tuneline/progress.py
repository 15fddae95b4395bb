"""Progress bars for long stage work (rich; quiet when TUNELINE_PROGRESS=0, e.g. in CI logs)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("TUNELINE_PROGRESS", "1") != "0"


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterates ``items`` while showing a progress bar labelled ``description``."""
    if not enabled():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=False)
