"""Names found anywhere in the input, scrubbed wherever they occur in it.

spaCy's NER reads a few words around a name, so the same name can be found in one record and
missed in its near-copy ("Steve Caplin" found on a page, missed on its rewritten mirror), and
the two then differ by one scrubbed name more than they did before: dedup, which runs after
pii, loses the pair. So the stage scrubs in two steps: every rank detects (the costly part)
and hands over, besides its findings, the names it found; the merge then scrubs every
occurrence of every such name in every record, with the same surrogate wherever it occurs
(``surrogate.py``). A name found once is removed everywhere, also where NER missed it.

Only names that carry evidence of being one travel across records: a value with a given name
(Faker's lists) or a word that is in no English word list ("Caplin"). A wrong NER span made of
English words ("Library Locations", "Subject Language") stays in its own record; spreading it
would rewrite every "Library" of the corpus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The letters that open a name's first word: the key names are looked up by.
FIRST_LETTERS = re.compile(r"[^\W\d_]+")
# A name's end: not inside a longer word ("Steve" in "Steven"), possessives may follow.
AFTER_NAME = re.compile(r"[\w-]")


class NameIndex:
    """The names to scrub in every record, looked up by the letters of their first word.

    Args:
        names: the values (exact text, as found).
    """

    def __init__(self, names: Iterable[str]):
        self.by_first: dict[str, list[str]] = {}
        # longest first, so "Steve Caplin" wins over "Steve" at the same place
        for name in sorted(set(names), key=lambda v: (-len(v), v)):
            m = FIRST_LETTERS.match(name)
            if m:
                self.by_first.setdefault(m.group(), []).append(name)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_first.values())

    def find(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every occurrence of a name in ``text``, left to right, not overlapping."""
        out: list[tuple[int, int]] = []
        end_of_last = 0
        for m in FIRST_LETTERS.finditer(text):
            s = m.start()
            if s < end_of_last or (s > 0 and AFTER_NAME.match(text, s - 1)):
                continue
            for name in self.by_first.get(m.group(), ()):
                e = s + len(name)
                if text.startswith(name, s) and not (e < len(text) and AFTER_NAME.match(text, e)):
                    out.append((s, e))
                    end_of_last = e
                    break
        return out


def travels(name: str, names: frozenset[str], is_english) -> bool:
    """Whether a PERSON value found in one record is scrubbed in all: it has a given name
    (``names``, lower case) or a word that is no English word (``is_english``)."""
    words = [w.lower() for w in FIRST_LETTERS.findall(name)]
    return (
        len(name) >= 3
        and bool(words)
        and any(w in names or (len(w) >= 3 and not is_english(w)) for w in words)
    )
