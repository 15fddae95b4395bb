"""Passing records through, and choosing the ones that seed the teacher."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.progress import track
from tuneline.records import Record


def is_seed(r: Record) -> bool:
    """A chat with a user turn that ends on an assistant reply: something to learn from."""
    msgs = r.messages or []
    return (
        r.kind == "chat"
        and len(msgs) >= 2
        and msgs[-1].role == "assistant"
        and any(m.role == "user" for m in msgs)
    )


def pass_through(art: Artifact, out: ArtifactWriter, counts: Counter) -> None:
    """Writes every input record unchanged, counting them in ``counts["records_in"]``."""
    for r in track(art.records(), "augment: pass-through"):
        out.write(r)
        counts["records_in"] += 1


def pass_through_and_pick_seeds(
    art: Artifact, out: ArtifactWriter, num_seeds: int, counts: Counter
) -> list[Record]:
    """Writes every input record unchanged; returns the ``num_seeds`` seed chats with the smallest ids.

    Ids are hashes, so the smallest ones are a fixed sample spread over all sources. The
    records are written as ``nsmallest`` consumes them, in one pass and bounded memory.

    Args:
        art: the input (dedup) artifact.
        out: receives every record.
        num_seeds: how many seeds to pick.
        counts: ``records_in`` counts the records written.
    """

    def written() -> Iterator[Record]:
        for r in track(art.records(), "augment: pass-through"):
            out.write(r)
            counts["records_in"] += 1
            if is_seed(r):
                yield r

    return heapq.nsmallest(num_seeds, written(), key=lambda r: r.id)
