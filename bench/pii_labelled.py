"""Labelled PII sets written by others (../shared/data/pii), and how pii_bench.py scores them.

Two sets, labelled by their authors, not by this project (see ../shared/data/README.md):

* ``presidio_generated_large.json`` (microsoft/presidio-research): 2,109 texts with character
  offsets for 4,055 spans of 15 types.
* ``pii_syn_nano_en.json`` (Nannigalaxy/PII-synthetic_dataset): 149 texts whose values are
  labelled by type without offsets; a value's span is where it occurs in its text.

Their type names are mapped onto tuneline's (``TYPE_MAP``); a type tuneline does not target by
default (LOCATION, ORGANIZATION, DATE_TIME, job TITLE, PREFIX "Mr.", company DOMAIN_NAME,
passwords and other ids) is still scored, as untargeted, so a reader sees what is left in.
Nothing here feeds the stage: no generator, template or name list of these sets is used as a
rule (that would measure the generator, not real text).

Scoring (the same for tuneline and plain Presidio):

* recall: a gold span is found when detections of any type cover at least half of it;
* verbatim residual: the gold value still occurs in the anonymized output as a whole word;
* precision: a detection is right when it overlaps any gold span (of any type: a value
  scrubbed under the wrong type is still scrubbed);
* non-PII characters changed: characters outside every gold span that a detection covers.

``split`` halves the large set by ``template_id`` parity: the defaults were chosen looking at
the "dev" half only, and the "held-out" half (other templates) shows whether that carried over.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.pii.recognizers import merge_spans as merged

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pii"

# Their type -> ours. None: scored as untargeted (tuneline leaves it in by default).
TYPE_MAP: dict[str, str | None] = {
    # presidio_generated_large.json
    "PERSON": "PERSON",
    "ADDRESS": "STREET_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "LOCATION": None,
    "ORGANIZATION": None,
    "DATE_TIME": None,
    "DOMAIN_NAME": None,  # company websites ("http://www.TuxService.se/"), not a person's
    "TITLE": None,  # job titles
    "PREFIX": None,  # "Mr.", "Dr."
    # pii_syn_nano_en.json
    "EMAIL": "EMAIL_ADDRESS",
    "SSN": "US_SSN",
    "PHONE": "PHONE_NUMBER",
    "IBAN": "IBAN_CODE",
    "DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DRIVERS_LICENSE": "US_DRIVER_LICENSE",
    "DRIVER_LICENSE_NUM": "US_DRIVER_LICENSE",
    "PASSPORT": "US_PASSPORT",
    "PASSPORT_NUM": "US_PASSPORT",
    "ORG": None,
}
TARGETED = sorted({v for v in TYPE_MAP.values() if v})


@dataclass
class Gold:
    type: str  # tuneline's type, or the set's own name where untargeted
    targeted: bool
    start: int
    end: int
    value: str


@dataclass
class Example:
    text: str
    gold: list[Gold]
    template: int | None = None


def _gold(their_type: str, start: int, end: int, value: str) -> Gold:
    ours = TYPE_MAP.get(their_type)
    return Gold(ours or their_type, ours is not None, start, end, value)


def presidio_large(split: str = "all") -> list[Example]:
    """presidio-research's generated_large.json; ``split``: all, dev (even template ids) or
    held-out (odd)."""
    out = []
    for row in json.loads((DATA / "presidio_generated_large.json").read_text()):
        tid = row.get("template_id")
        if split == "dev" and tid % 2 or split == "held-out" and not tid % 2:
            continue
        gold = [
            _gold(s["entity_type"], s["start_position"], s["end_position"], s["entity_value"])
            for s in row["spans"]
        ]
        out.append(Example(row["full_text"], gold, tid))
    return out


def nano() -> list[Example]:
    """pii_syn_nano_en.json: each labelled value's span is its first occurrence in the text."""
    out = []
    for row in json.loads((DATA / "pii_syn_nano_en.json").read_text()):
        text, gold = row["text"], []
        for e in row.get("NER") or []:
            # one label in the file is keyed "=" instead of "entity" (its IBAN): read it too
            value = e.get("entity", e.get("="))
            j = text.find(value) if value else -1
            if j >= 0:
                gold.append(_gold(e["label"], j, j + len(value), value))
        out.append(Example(text, gold))
    return out


def covered(spans, s: int, e: int) -> int:
    return sum(max(0, min(e, b) - max(s, a)) for a, b in merged(spans))


def verbatim(value: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


@dataclass
class Score:
    name: str
    total: Counter = field(default_factory=Counter)
    found: Counter = field(default_factory=Counter)
    left: Counter = field(default_factory=Counter)
    detections: Counter = field(default_factory=Counter)
    right: Counter = field(default_factory=Counter)
    nonpii_chars: int = 0
    nonpii_changed: int = 0
    misses: dict = field(default_factory=dict)  # type -> [(text, value)], a few per type

    def recall(self, t: str) -> float | None:
        return self.found[t] / self.total[t] if self.total[t] else None

    def residual(self, t: str) -> float | None:
        return self.left[t] / self.total[t] if self.total[t] else None

    def precision(self, t: str | None = None) -> float | None:
        d = self.detections[t] if t else sum(self.detections.values())
        r = self.right[t] if t else sum(self.right.values())
        return r / d if d else None

    def over(self, types) -> tuple[float, float]:
        """(recall, verbatim residual) over the gold spans of ``types``."""
        n = sum(self.total[t] for t in types)
        return (
            sum(self.found[t] for t in types) / max(1, n),
            sum(self.left[t] for t in types) / max(1, n),
        )


def score(name: str, examples: list[Example], detections: list, outputs: list[str]) -> Score:
    """Scores one system. ``detections``: per example a list of (type, start, end);
    ``outputs``: per example the anonymized text (``replace`` operator)."""
    s = Score(name)
    for ex, dets, out in zip(examples, detections, outputs, strict=True):
        spans = [(a, b) for _, a, b in dets]
        for g in ex.gold:
            s.total[g.type] += 1
            if covered(spans, g.start, g.end) * 2 >= g.end - g.start:
                s.found[g.type] += 1
            else:
                s.misses.setdefault(g.type, []).append((ex.text, g.value))
            if verbatim(g.value, out):
                s.left[g.type] += 1
        gold_spans = [(g.start, g.end) for g in ex.gold]
        for t, a, b in dets:
            s.detections[t] += 1
            s.right[t] += covered(gold_spans, a, b) > 0
        mask = [False] * len(ex.text)
        for g in ex.gold:
            mask[g.start : g.end] = [True] * (g.end - g.start)
        s.nonpii_chars += mask.count(False)
        s.nonpii_changed += sum(1 for a, b in merged(spans) for k in range(a, b) if not mask[k])
    return s
