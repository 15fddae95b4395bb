"""``quality``: text documents that fail Gopher-style quality or repetition rules.

The rules are those of Gopher (Rae et al. 2021, table A1) as datatrove writes them, measured in a
way that holds on real pages:

- words are ``text.words``: punctuation-only tokens (``-``, ``|``, ``"``, ``—``) are not words,
  so the "80 % of words contain a letter" rule is not failed by a news article's punctuation
  (datatrove counts them, and rejected good articles of trafilatura's evaluation set for it);
- a Han or kana character is a word (also for datatrove's repetition rules, which split on
  spaces), and the word-length rule is skipped for CJK text;
- the stop-word rule (English stop words) runs only on records labelled English;
- the repetition rules ignore lines without words (table rules) and do not count duplicated
  lines by number (speaker tags of an interview), only by characters;
- the minimum length (50 words) applies to web pages (``meta.format == "html"``), whose
  extraction may have left only a menu; a short plain-text record is not a web document and is
  not judged by ratios over a handful of words: rules other than the minimum run only from
  ``min_doc_words`` words on.

Chats and preference pairs pass: the reply rules (``truncated_reply``, ``repeated_prompt``,
``repetition``, ``placeholder``, ``broken_markup``) are written for them.
"""

from __future__ import annotations

from typing import Any

from tasks.ingest.filters.base import RecordFilter, Rejection
from tasks.ingest.filters.text import cjk_share, spaced_cjk, words
from tuneline.records import Record

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


class GopherFilter(RecordFilter):
    """Drops a text record that fails a Gopher quality rule or datatrove's
    ``GopherRepetitionFilter`` (repeated lines, paragraphs, n-grams); the detail names the rule
    (e.g. ``gopher_short_doc``) with the measured value.

    Args:
        min_doc_words: fewest words of a web page; below it plain text skips the ratio rules.
        max_doc_words: most words of any text record.
        min_avg_word_length / max_avg_word_length: bounds on the mean word length (non-CJK).
        max_symbol_word_ratio: most ``#`` or ellipses per word.
        max_bullet_lines_ratio: most lines starting with a bullet.
        max_ellipsis_lines_ratio: most lines ending with an ellipsis.
        min_alpha_words_ratio: fewest words with a letter, per word.
        min_stop_words: fewest distinct English stop words (English records only).
    """

    name = "quality"

    def __init__(
        self,
        min_doc_words: int = 50,
        max_doc_words: int = 100_000,
        min_avg_word_length: float = 3,
        max_avg_word_length: float = 10,
        max_symbol_word_ratio: float = 0.1,
        max_bullet_lines_ratio: float = 0.9,
        max_ellipsis_lines_ratio: float = 0.3,
        min_alpha_words_ratio: float = 0.8,
        min_stop_words: int = 2,
    ) -> None:
        from datatrove.pipeline.filters import GopherRepetitionFilter

        self.min_doc_words = min_doc_words
        self.max_doc_words = max_doc_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        # dup_line_frac (share of lines, by count) is off: in an interview the speaker tags
        # ("Anne:", 9 times in 38 lines) failed it on a good page of trafilatura's evaluation set;
        # the share of characters in duplicated lines (0.2) still catches repeated boilerplate.
        self.repetition = GopherRepetitionFilter(dup_line_frac=None)

    def failed_rule(self, text: str, *, page: bool, lang: str | None) -> dict[str, Any] | None:
        """The first rule ``text`` fails, with what was measured, or None."""
        ws = words(text)
        n = len(ws)
        if n < self.min_doc_words:
            return {"rule": "gopher_short_doc", "words": n} if page else None
        if n > self.max_doc_words:
            return {"rule": "gopher_long_doc", "words": n}
        if cjk_share(ws) < 0.3:
            latin = [w for w in ws if not any("\u3040" <= c <= "\ud7af" for c in w)] or ws
            avg = round(sum(len(w) for w in latin) / len(latin), 2)
            if avg < self.min_avg_word_length:
                return {"rule": "gopher_below_avg_threshold", "avg_word_length": avg}
            if avg > self.max_avg_word_length:
                return {"rule": "gopher_above_avg_threshold", "avg_word_length": avg}
        if text.count("#") / n > self.max_symbol_word_ratio:
            return {"rule": "gopher_too_many_hashes"}
        if (text.count("...") + text.count("…")) / n > self.max_symbol_word_ratio:
            return {"rule": "gopher_too_many_ellipsis"}
        lines = [line for line in text.splitlines() if line.strip()] or [text]
        bullets = sum(line.lstrip().startswith(("•", "-", "*")) for line in lines) / len(lines)
        if bullets > self.max_bullet_lines_ratio:
            return {"rule": "gopher_too_many_bullets", "ratio": round(bullets, 3)}
        ellipsis = sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines)
        if ellipsis > self.max_ellipsis_lines_ratio:
            return {"rule": "gopher_too_many_end_ellipsis", "ratio": round(ellipsis, 3)}
        alpha = sum(any(c.isalpha() for c in w) for w in ws) / n
        if alpha < self.min_alpha_words_ratio:
            return {"rule": "gopher_below_alpha_threshold", "ratio": round(alpha, 3)}
        if lang == "en" and self.min_stop_words:
            found = len(STOP_WORDS.intersection(w.lower() for w in ws))
            if found < self.min_stop_words:
                return {"rule": "gopher_enough_stop_words", "stop_words": found}
        from datatrove.data import Document

        # lines without a word (table rules "|", "---") are layout, not repeated content
        prose = "\n".join(line for line in text.split("\n") if not line.strip() or words(line))
        result = self.repetition.filter(Document(text=spaced_cjk(prose), id=""))
        if result is not True:
            return {"rule": result[1] if isinstance(result, tuple) else "gopher_repetition"}
        return None

    def check(self, record: Record) -> Rejection | None:
        if record.kind != "text":
            return None
        failed = self.failed_rule(
            record.text or "",
            page=record.meta.get("format") == "html",
            lang=record.meta.get("lang"),
        )
        return None if failed is None else self.reject(**failed)
