"""``repetition``: a reply stuck in a loop (the same phrase or line over and over)."""

from __future__ import annotations

from collections import Counter

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import trained_replies, words
from tuneline.records import Record


def longest_loop(ws: list[str], max_period: int = 30) -> tuple[int, int, int]:
    """(period, start, repeats) of the longest run where a block of ``period`` words follows
    itself back to back (``a b c a b c a b c``); repeats counts the copies. Among equals, the
    shortest period and then the earliest run wins.

    Vectorised per period (numpy compares the words with themselves shifted by the period):
    a word-by-word loop over 30 periods was the costliest rule of ingest.
    """
    import numpy as np

    if len(ws) < 2:
        return (0, 0, 0)
    ids: dict[str, int] = {}
    a = np.fromiter((ids.setdefault(w, len(ids)) for w in ws), dtype=np.int64, count=len(ws))
    best = (0, 0, 0)
    for p in range(1, min(max_period, len(ws) // 2) + 1):
        same = a[:-p] == a[p:]  # same[j]: word j + p repeats word j
        if not same.any():
            continue
        edges = np.diff(np.concatenate(([0], same.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = ends - starts
        longest = int(lengths.max())
        copies = longest // p + 1
        if longest < p or copies <= best[2]:
            continue
        first = int(np.flatnonzero(lengths >= (copies - 1) * p)[0])  # earliest run this long
        best = (p, int(starts[first]), copies)
    return best


def repeated_share(ws: list[str], n: int = 4) -> float:
    """Share of words inside ``n``-word phrases that already appeared earlier in the text
    (datatrove's ``find_all_duplicate``, over words)."""
    seen: set[tuple[str, ...]] = set()
    rep = i = 0
    while i < len(ws) - n + 1:
        gram = tuple(ws[i : i + n])
        if gram in seen:
            rep += n
            i += n
        else:
            seen.add(gram)
            i += 1
    return rep / len(ws) if ws else 0.0


class RunawayRepetitionFilter(RecordFilter):
    """Drops a chat or pair where a trained reply loops: a block of words follows itself
    ``min_loop`` times or more, back to back and over at least ``min_loop_words`` words (with a
    letter in it: a row of zeros is data); or, in replies of ``min_words`` words or more, phrases
    seen before make up ``max_repeated_share`` of the words; or one line (of 2+ words) appears
    ``max_line_repeats`` times. That is what a generation that lost its way looks like; lists and
    tables repeat their shape, not their words. On alpaca_en_demo's 999 replies the highest
    repeated share was 0.33 and no reply looped (bench/filters_bench.py).

    Args:
        min_loop: back-to-back copies of a block that make a loop.
        min_loop_words: fewest words a loop covers.
        max_repeated_share: highest share of words in already-seen 4-word phrases.
        min_words: shorter replies are not judged by the share.
        max_line_repeats: how often one line may appear.
    """

    name = "repetition"

    def __init__(
        self,
        min_loop: int = 4,
        min_loop_words: int = 12,
        max_repeated_share: float = 0.4,
        min_words: int = 20,
        max_line_repeats: int = 5,
    ):
        self.min_loop, self.min_loop_words = min_loop, min_loop_words
        self.max_repeated_share, self.min_words = max_repeated_share, min_words
        self.max_line_repeats = max_line_repeats

    def looping(self, reply: str) -> dict | None:
        ws = [w.lower() for w in words(reply)]
        period, start, copies = longest_loop(ws)
        block = ws[start : start + period]
        if (
            copies >= self.min_loop
            and copies * period >= self.min_loop_words
            and any(c.isalpha() for w in block for c in w)
        ):
            return {"phrase": " ".join(block)[:80], "times": copies}
        if len(ws) >= self.min_words:
            share = repeated_share(ws)
            if share >= self.max_repeated_share:
                return {"repeated_share": round(share, 3)}
        lines = Counter(line.strip() for line in reply.splitlines() if len(words(line)) >= 2)
        if lines:
            line, count = lines.most_common(1)[0]
            if count >= self.max_line_repeats:
                return {"line": line[:80], "times": count}
        return None

    def check(self, record: Record) -> Rejection | None:
        for _, reply in trained_replies(record):
            found = self.looping(reply)
            if found:
                return self.reject(**found)
        return None
