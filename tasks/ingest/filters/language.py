"""``language``: records outside the wanted languages (fastText lid.176, offline)."""

from __future__ import annotations

from collections import Counter

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import CJK_RE, count_letters, natural_text
from tasks.ingest.languages import UNKNOWN
from tuneline.records import Record

MIN_LETTERS = 10
"""Fewer letters of prose than this (a CJK character counts as 4) and fastText is guessing:
the record's language is ``unknown``."""


class LanguageIdFilter(RecordFilter):
    """Labels every record it sees with its language (``meta.lang``, ``meta.lang_score``) and
    counts them in ``seen``; drops those not in ``languages``.

    fastText sees only the natural-language part of the record (``text.natural_text``: no code
    blocks, tables, URLs, numbers or markup), so an English question with a code answer is
    judged by its English. When that part is too short to tell (under ``MIN_LETTERS``) or the best
    score is below ``threshold`` the label is ``unknown`` rather than a guess. An ``unknown``
    record is kept when its source is declared in a wanted language (``source_languages``, from
    ``SourceConfig.language``) and counted in ``unknown_kept``; otherwise it is dropped when
    ``languages`` is set.

    Args:
        languages: ISO 639-1 codes to keep; empty keeps every language (and still labels).
        threshold: the lowest score at which a language is named instead of ``unknown``.
        source_languages: ``meta.source`` (the source path) -> its declared language.
    """

    name = "language"

    def __init__(
        self,
        languages: list[str],
        threshold: float,
        source_languages: dict[str, str | None] | None = None,
    ):
        from tasks.ingest.filters.lid import load_lid176

        self.languages = list(languages)
        self.threshold = threshold
        self.source_languages = {k: v for k, v in (source_languages or {}).items() if v}
        self.model = load_lid176()
        self.seen: Counter[str] = Counter()
        self.unknown_kept = 0
        self.unknown_kept_example: dict | None = None

    def identify(self, text: str) -> tuple[str, float]:
        """(language, score) of ``text``'s prose, or (``unknown``, best score) when it cannot tell."""
        prose = natural_text(text)
        letters = count_letters(prose) + 3 * len(CJK_RE.findall(prose))
        if letters < MIN_LETTERS:
            return UNKNOWN, 0.0
        labels, scores = self.model.predict(prose.replace("\n", " "), k=1)
        lang, score = labels[0].removeprefix("__label__"), round(float(scores[0]), 4)
        return (lang if score >= self.threshold else UNKNOWN), score

    def check(self, record: Record) -> Rejection | None:
        lang, score = self.identify(record.joined_text())
        record.meta.update(lang=lang, lang_score=score)
        self.seen[lang] += 1
        if not self.languages or lang in self.languages:
            return None
        declared = self.source_languages.get(record.meta.get("source", ""))
        if lang == UNKNOWN and declared in self.languages:
            self.unknown_kept += 1
            if self.unknown_kept_example is None:
                from tasks.ingest.filters.text import snippet

                self.unknown_kept_example = {
                    "id": record.id,
                    "snippet": snippet(record.joined_text()),
                    "score": score,
                    "source_language": declared,
                }
            return None
        return self.reject(lang=lang, score=score, wanted=self.languages)
