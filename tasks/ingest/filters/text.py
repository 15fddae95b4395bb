"""Text measures the filters share: words that work for CJK, lengths, and the natural-language
part of a record (what language ID should look at), plus which strings of a record are replies.

No heavy imports: plain ``re``.
"""

from __future__ import annotations

import re
import string
import unicodedata

from tuneline.records import Record

# Han (incl. extension A and compatibility), kana, Hangul syllables and jamo.
_HAN_KANA = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u31f0-\u31ff"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
HAN_KANA_RE = re.compile(f"[{_HAN_KANA}]")
HANGUL_RE = re.compile(f"[{_HANGUL}]")
CJK_RE = re.compile(f"[{_HAN_KANA}{_HANGUL}]")

HAN_KANA_WEIGHT = 4
"""A Han or kana character carries about one English word: it counts as 4 characters (an
average English word with its space is 5-6) in length bounds."""
HANGUL_WEIGHT = 3
"""A Hangul syllable: a Korean sentence has about a third of the characters of its English
translation (오늘 날씨가 좋네요. / The weather is nice today.)."""

PUNCTUATION = set(string.punctuation) | set(
    "‘’“”„«»‹›–—…·•、。，．！？：；（）《》「」『』【】〔〕・¡¿§¶†‡°′″"
)


def length_units(s: str) -> int:
    """Length in Latin-equivalent characters: ``len(s)``, with Han/kana characters counted as
    ``HAN_KANA_WEIGHT`` and Hangul syllables as ``HANGUL_WEIGHT``, so that a short Chinese
    sentence is as long as its English translation."""
    han = len(HAN_KANA_RE.findall(s))
    hangul = len(HANGUL_RE.findall(s))
    return len(s) + han * (HAN_KANA_WEIGHT - 1) + hangul * (HANGUL_WEIGHT - 1)


_PUNCT = "".join(PUNCTUATION)


def is_punctuation(token: str) -> bool:
    return all(c in PUNCTUATION for c in token)


def words(s: str) -> list[str]:
    """Whitespace tokens without the punctuation around them; tokens that are only punctuation
    are not words. Each Han or kana character is a word of its own (Chinese and Japanese do not
    separate words with spaces); Hangul words are space-separated like Latin ones."""
    if not HAN_KANA_RE.search(s):  # the common case, in one pass
        return [t for t in (tok.strip(_PUNCT) for tok in s.split()) if t]
    out: list[str] = []
    for tok in s.split():
        tok = tok.strip(_PUNCT)
        if not tok:
            continue
        if HAN_KANA_RE.search(tok):
            # split CJK characters apart, keep runs of other letters/digits together
            out += [
                p
                for p in re.findall(f"[{_HAN_KANA}]|[^{_HAN_KANA}]+", tok)
                if not is_punctuation(p)
            ]
        else:
            out.append(tok)
    return out


def cjk_share(ws: list[str]) -> float:
    """Share of words that are CJK (Han, kana or Hangul)."""
    return sum(bool(CJK_RE.search(w)) for w in ws) / len(ws) if ws else 0.0


# -- the natural-language part of a text ------------------------------------------------------

_FENCED = re.compile(r"(^|\n)[ \t]*(```|~~~)[^\n]*\n.*?(\n[ \t]*\2[^\n]*|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,200}>|&[a-z]+;|&#\d+;")
_NUMBER = re.compile(r"[+-]?[$€£¥]?\d[\d.,:/%x×*^+=()\-]*")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$|^\s*[-|: +=]{3,}\s*$", re.M)
_SYMBOLS = re.compile(r"[#*_>|=<{}\[\]\\~^@$%&+]+")


_CODE_START = re.compile(
    r"^(def|class|import|from|return|for|while|if|else|elif|print|var|let|const|function"
    r"|public|private|#include|SELECT|select)\b.*[(:=;{]"
)


def is_letter(c: str) -> bool:
    """A letter or a combining mark (the vowel signs of Devanagari, Arabic diacritics)."""
    return c.isalpha() or unicodedata.category(c).startswith("M")


def count_letters(s: str) -> int:
    """How many characters of ``s`` are letters or combining marks (``is_letter``), at C speed
    for ASCII text: ingest calls this for every record and line (a per-character Python call
    was a tenth of the stage's time)."""
    n = sum(map(str.isalpha, s))
    if not s.isascii():
        n += sum(1 for c in s if not c.isalpha() and unicodedata.category(c).startswith("M"))
    return n


def spaced_cjk(s: str) -> str:
    """``s`` with a space around each Han or kana character, so that tools that split words on
    spaces (datatrove's repetition rules) see one word per character."""
    return re.sub(f"([{_HAN_KANA}])", r" \1 ", s)


def _codeish(line: str) -> bool:
    """A line that reads as code or data rather than prose: few letters among its characters,
    or ends like a statement (``;``, ``{``, ``}``) or is mostly identifiers with brackets."""
    s = line.strip()
    if not s:
        return False
    letters = count_letters(s) + sum(map(str.isspace, s))
    if letters / len(s) < 0.6:
        return True
    return s.endswith((";", "{", "}", "):", "){")) or bool(_CODE_START.match(s))


def natural_text(s: str) -> str:
    """``s`` without what a language identifier should not see: fenced code blocks, inline code,
    code-like lines, table rows, URLs and e-mail addresses, HTML tags and entities, numbers and
    markup symbols."""
    s = _FENCED.sub("\n", s)
    s = _INLINE_CODE.sub(" ", s)
    s = _TABLE_LINE.sub("", s)
    s = _URL.sub(" ", s)
    s = _TAG.sub(" ", s)
    s = "\n".join(line for line in s.splitlines() if not _codeish(line))
    s = _NUMBER.sub(" ", s)
    s = _SYMBOLS.sub(" ", s)
    return re.sub(r"[ \t]+", " ", s).strip()


def without_code(s: str) -> str:
    """``s`` without fenced code blocks and inline code (for rules about prose)."""
    return _INLINE_CODE.sub(" ", _FENCED.sub("\n", s))


# -- which strings are replies ----------------------------------------------------------------


def trained_replies(record: Record) -> list[tuple[str, str]]:
    """(prompt, reply) for each reply a model learns to give: every assistant turn of a chat with
    the user turn before it, and the ``chosen`` side of a preference pair with the last user
    turn. The ``rejected`` side is meant to be bad and is not included. Text records: none."""
    if record.kind == "text":
        return []
    pairs: list[tuple[str, str]] = []
    prompt = ""
    for m in record.messages or []:
        if m.role == "user":
            prompt = m.content
        elif m.role == "assistant" and record.kind == "chat":
            pairs.append((prompt, m.content))
    if record.kind == "preference":
        pairs.append((prompt, record.chosen or ""))
    return pairs


def snippet(s: str, at: int = 0, width: int = 120) -> str:
    """Up to ``width`` characters of ``s`` from a little before ``at``, on one line."""
    start = max(0, at - width // 3)
    out = s[start : start + width].replace("\n", " ⏎ ")
    return ("…" if start else "") + out + ("…" if start + width < len(s) else "")
