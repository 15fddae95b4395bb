"""Recognizers tuneline adds to Presidio's AnalyzerEngine, and the checks on its NER names.

All of them are Presidio ``EntityRecognizer``s registered in the one AnalyzerEngine (no
parallel engine): regexes whose value is a capture group (a name after "Dear", a number after
"passport no."), street addresses, personal URLs, @handles, dates of birth, a phone recognizer
that vetoes arithmetic, and a spaCy recognizer whose PERSON spans must pass simple checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import PhoneRecognizer, SpacyRecognizer

# A capitalised name word (Latin scripts), and the particles that sit inside names.
W = r"(?:(?:[A-Z]['’])?[A-ZÀ-ÖØ-ÞĀ-Ž][a-zß-öø-ÿā-ž]+(?:[-'][A-ZÀ-Þa-zß-ÿ][a-zß-öø-ÿā-ž]+)?)"
P = r"(?:van|von|de|der|den|da|di|del|la|le|bin|binti|bint|al|el|ibn|dos|du|ter|y)"
NAME = rf"{W}(?:[ \t]+(?:{P}[ \t]+)*{W}){{0,2}}"
NAME2 = rf"{W}(?:[ \t]+(?:{P}[ \t]+)*{W}){{1,2}}"  # two or three words


@dataclass(frozen=True)
class GroupPattern:
    regex: str
    score: float
    group: int | str = 1
    validate: Callable[[str], bool] | None = None
    validate_at: Callable[[str, int, int], bool] | None = None  # (text, start, end)
    trim: Callable[[str], str] | None = None  # the value's kept prefix


class GroupPatternRecognizer(LocalRecognizer):
    """Like Presidio's PatternRecognizer, but the entity is one capture group of the match.

    Presidio's PatternRecognizer reports the whole match; "Dear Amara Okafor," must report
    only the name, "passport no. X1234567" only the number.
    """

    def __init__(self, entity: str, patterns: list[GroupPattern], name: str):
        self.patterns = patterns
        self._compiled = [(re.compile(p.regex), p) for p in patterns]
        super().__init__(supported_entities=[entity], name=name, supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        out = []
        for rx, p in self._compiled:
            for m in rx.finditer(text):
                s, e = m.span(p.group)
                if s < 0 or e <= s:
                    continue
                value = text[s:e]
                if p.trim is not None:
                    value = p.trim(value)
                    e = s + len(value)
                    if not value:
                        continue
                if p.validate is not None and not p.validate(value):
                    continue
                if p.validate_at is not None and not p.validate_at(text, s, e):
                    continue
                out.append(
                    RecognizerResult(
                        self.supported_entities[0], s, e, p.score,
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        },
                    )
                )  # fmt: skip
        return out


# ------------------------------------------------------------------------------- names

NOT_NAME_WORDS = {
    # capitalised words that greetings/intros are followed by but that are not names
    "i", "im", "the", "a", "an", "all", "everyone", "team", "there", "guys", "folks", "sir",
    "madam", "friend", "friends", "again", "so", "very", "not", "here", "just", "sorry", "happy",
    "glad", "good", "fine", "great", "well", "new", "customer", "support", "user", "assistant",
    "ai", "chatgpt", "gpt", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday", "january", "february", "march", "april", "may", "june", "july", "august",
    "september", "october", "november", "december", "english", "american", "thanks", "thank",
    "best", "regards", "hello", "hi", "dear", "hey", "please", "yes", "no", "ok", "okay",
}  # fmt: skip


def _trim_name(value: str) -> str:
    """The name's words up to the first word that is no name ("Anneke van der Berg The ...")."""
    words = list(re.finditer(r"\S+", value))
    keep = 0
    for m in words:
        if m.group().lower().strip("'") in NOT_NAME_WORDS:
            break
        keep += 1
    while keep and re.fullmatch(P, words[keep - 1].group()):  # never end on a particle
        keep -= 1
    return value[: words[keep - 1].end()] if keep else ""


def _is_name(value: str) -> bool:
    words = [w for w in re.split(r"[\s]+", value) if w]
    return (
        bool(words)
        and words[0].lower().strip("'") not in NOT_NAME_WORDS
        and not any(w.lower() in NOT_NAME_WORDS for w in words)
    )


GREETING = r"(?i:dear|hi|hello|hey|good\s+morning|good\s+afternoon|thanks|thank\s+you)"
SIGNOFF = (
    r"(?i:best\s+regards|kind\s+regards|warm\s+regards|regards|best\s+wishes|best|cheers|"
    r"thanks|thank\s+you|many\s+thanks|sincerely|yours\s+sincerely|yours\s+truly|yours)"
)
INTRO = (
    r"(?i:my\s+name\s+is|my\s+name's|(?:first|last|family|maiden|middle|sur)\s*name(?:\s+is|\s*:)|"
    r"name\s*:|signed\s*:?|contact\s+person\s*:?|calls?\s+me)"
)
TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?"

NAME_PATTERNS = [
    GroupPattern(rf"\b{GREETING}[ \t]+({NAME})\b(?=\s*[,!.:\n])", 0.7, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"(?:^|(?<=[\s>.!?]))(?:--[ \t]*)?{SIGNOFF}[,!.]?[ \t]*(?:\r?\n|<br\s*/?>)[ \t]*(?:--[ \t]*)?({NAME})\b", 0.75, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"(?m)^[ \t]*--[ \t]?({NAME})[ \t]*$", 0.6, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b{INTRO}[ \t]*({NAME})\b", 0.8, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b(?i:i'm|i\s+am|this\s+is)[ \t]+({NAME2})\b", 0.6, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b{TITLE}[ \t]+({NAME})\b", 0.7, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b(?i:contact|ask|ask\s+for|call|email|e-mail|write\s+to|reach|cc)[ \t]+({NAME2})\b(?=\s+(?:at|on|via|by|\(|<))", 0.65, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b(?i:colleague|co-worker|coworker|manager|supervisor|neighbou?r|landlord|tenant|wife|husband|boss|spoke\s+with|talked\s+to|met\s+with|forward\s+(?:this|it)\s+to)[ \t]+({NAME2})\b", 0.65, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"(?:^|(?<=[.!?>]\s)|(?<=[.!?>]))({NAME2})(?=[ \t]+(?:called|phoned|emailed|texted|messaged|asked|told|replied|wrote\s+to|said\s+that)\b)", 0.6, validate=_is_name, trim=_trim_name),
    # who speaks: "says Yudina.", "said Mai to Jerry", "Kotoya shouted at"
    GroupPattern(rf"\b(?:said|says|asked|asks|replied|replies|answered|shouted|whispered|added)[ \t]+({NAME})\b(?=[ \t]*(?:[.,!?;:]|$|to\b|\n))", 0.6, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"\b({NAME})(?=[ \t]+(?:said|says|asked|replied|answered|shouted|whispered)\b)", 0.6, validate=_is_name, trim=_trim_name),
    GroupPattern(rf"^(?:From|To|Cc|Name|Customer|Patient|Employee)[ \t]*:[ \t]*({NAME})\b", 0.8, validate=_is_name, trim=_trim_name),
]  # fmt: skip
NAME_PATTERNS[-1] = GroupPattern(
    "(?m)" + NAME_PATTERNS[-1].regex, 0.8, validate=_is_name, trim=_trim_name
)
NAME_PATTERNS[-2] = GroupPattern(
    "(?m)" + NAME_PATTERNS[-2].regex, 0.6, validate=_is_name, trim=_trim_name
)

# Public figures and fictional characters: a name seen with these words around it is kept.
PUBLIC_CONTEXT = re.compile(
    r"\b(?:author|authors|wrote|written|writer|novel|novels|novelist|book|books|poem|poems|poet|"
    r"playwright|play|plays|character|characters|protagonist|hero|heroine|villain|story|stories|"
    r"tale|fairy|fiction|fictional|film|films|movie|movies|directed|director|actor|actress|"
    r"starring|painted|painting|painter|composer|composed|symphony|opera|president|senator|"
    r"minister|king|queen|prince|princess|emperor|pharaoh|scientist|physicist|chemist|"
    r"mathematician|philosopher|inventor|invented|discovered|theory|theorem|law|famous|"
    r"celebrated|renowned|legendary|singer|band|album|song|biography|historical|history|"
    r"century|quote|quoted|speech|saga|series|episode|novella|literature|literary|"
    r"(?:written|authored|directed|painted|composed|sung|narrated|illustrated|invented|founded)\s+by)\b",
    re.IGNORECASE,
)
FAMOUS = {
    "shakespeare", "einstein", "newton", "darwin", "lincoln", "obama", "napoleon", "gandhi",
    "mandela", "churchill", "curie", "tesla", "edison", "mozart", "beethoven", "picasso",
    "da vinci", "michelangelo", "tolkien", "rowling", "orwell", "austen", "dickens",
    "hemingway", "twain", "tolstoy", "dostoevsky", "homer", "plato", "aristotle", "socrates",
    "confucius", "harry potter", "hermione", "frodo", "gandalf", "sherlock", "holmes", "romeo",
    "juliet", "hamlet", "macbeth", "elon musk", "steve jobs", "bill gates", "zuckerberg",
    "bezos", "galileo", "copernicus", "freud", "marx", "beyonce", "taylor swift", "elvis",
    "martin luther king", "cleopatra", "caesar", "atticus", "gatsby", "jane eyre", "darcy",
    "cinderella", "pinocchio", "skywalker", "darth vader", "batman", "superman", "kennedy",
    "roosevelt", "hitler", "stalin", "armstrong", "amelia earhart", "van gogh", "monet",
    "kafka", "poe", "fitzgerald", "steinbeck", "salinger", "harper lee", "frankenstein",
    "dracula", "scrooge", "odysseus", "achilles", "zeus", "buddha", "jesus", "moses", "muhammad",
    "washington", "jefferson", "hawking", "turing", "lovelace", "nightingale", "joan of arc",
}  # fmt: skip
UNITS = {
    "gb", "mb", "kb", "tb", "gbps", "mbps", "ghz", "mhz", "kg", "km", "cm", "mm", "ml", "mph",
    "usd", "eur", "gbp", "cpu", "gpu", "ram", "ssd", "hdd", "api", "url", "html", "css", "sql",
}  # fmt: skip
IMPERATIVE_NEXT = {
    "this",
    "the",
    "a",
    "an",
    "these",
    "those",
    "my",
    "your",
    "it",
    "each",
    "all",
    "following",
}


def _first_tag(nlp, text: str, start: int) -> str:
    """spaCy's POS tag of the word at ``start``, tagging only its sentence (a few ms).

    The stage runs spaCy with NER only (2x faster); the tagger is asked only about the rare
    sentence-initial PERSON spans, where a capitalised verb ("Edit", "Check") looks like a name.
    """
    stop = min(
        [i for i in (text.find("\n", start), text.find(". ", start)) if i >= 0] + [start + 200]
    )
    with nlp.select_pipes(enable=[p for p in ("tok2vec", "tagger") if p in nlp.component_names]):
        doc = nlp(text[start:stop])
    return doc[0].tag_ if len(doc) else ""


def person_span_ok(
    text: str,
    start: int,
    end: int,
    doc,
    keep_public: str | bool,
    nlp=None,
    ambiguous: frozenset[str] | None = None,
) -> bool:
    """Simple checks an NER PERSON span must pass to be scrubbed.

    Rejects: no capital letter; digits; a unit or short acronym ("200 GB"); a span after
    "the"/"a"/"an"; a list heading ("2. Carrot Soup: ..."); a sentence-initial span whose first
    word is also an English verb, adverb or stop word (``ambiguous``) and that spaCy's tagger
    does not call a proper noun ("Edit this sentence", "Check if ..."); and, with
    ``keep_public`` "listed", names on a small list of public figures and characters, with
    "context" also names with such words around them ("written by", "the novel", "character").

    Args:
        ambiguous: lower-case words that open sentences as something else than a name
            (``not_name_words``); None asks the tagger about every sentence-initial span. On
            labelled text (bench/pii_bench.py) asking about every one lost 206 of 717 names
            ("Johnny is a very sympathetic person", "Ludwig is from ...").
    """
    if keep_public is True:  # the old boolean setting
        keep_public = "context"
    elif keep_public is False:
        keep_public = "off"
    value = text[start:end]
    if not re.search(r"[A-ZÀ-Þ]", value) or re.search(r"\d", value):
        return False
    words = value.split()
    if len(words) == 1 and (value.lower() in UNITS or (value.isupper() and len(value) <= 4)):
        return False
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    if re.search(r"\b(?:the|a|an|this|that|our|your|its)\s+$", before) and not (
        # "a Zachary Örlygsdóttir concert": a full name used as an attribute is still a name
        len(words) >= 2 and words[0] in faker_given_names()
    ):
        return False
    if re.fullmatch(r"\s*(?:(?:\d+[.)]|[-*•])\s*[*_#]*|[*_#]+)\s*", before) and re.match(
        r"[*_]*\s*[:(]", text[end : end + 5]
    ):
        return False
    sent_initial = not before.strip() or re.search(
        r"(?:[.!?:]|^\s*#+|^\s*(?:\d+[.)]|[-*•]))\s*[\"'“]?$", before
    )
    first_word = re.split(r"[\s'’]", value.lower(), maxsplit=1)[0]
    if (
        nlp is not None
        and sent_initial
        and (ambiguous is None or first_word in ambiguous)
        and _first_tag(nlp, text, start) not in {"NNP", "NNPS"}
    ):
        return False
    if doc is not None:
        span = doc.char_span(start, end, alignment_mode="expand")
        if span is not None and len(span):
            tags = {t.tag_ for t in span}
            if tags and not tags & {"NNP", "NNPS", ""}:
                return False
            first = span[0]
            nxt = doc[span.end] if span.end < len(doc) else None
            sent_start = (
                first.i == 0
                or doc[first.i - 1].text in {".", "!", "?", "\n", ":", '"'}
                or "\n" in doc[first.i - 1].text
            )
            if len(span) == 1 and sent_start and nxt is not None and nxt.lower_ in IMPERATIVE_NEXT:
                return False
    if keep_public in ("listed", "context"):
        low = value.lower()
        if low in FAMOUS or any(w.strip(".,'’s") in FAMOUS for w in low.split()):
            return False
    if keep_public == "context":
        lo = max(0, start - 60)
        left = text[lo:start].rsplit("\n", 1)[-1]
        right = text[end : end + 60].split("\n", 1)[0]
        if PUBLIC_CONTEXT.search(left) or PUBLIC_CONTEXT.search(right):
            return False
    return True


class CheckedSpacyRecognizer(SpacyRecognizer):
    """Presidio's SpacyRecognizer whose PERSON spans must pass ``person_span_ok``."""

    def __init__(
        self, keep_public: str | bool = "listed", ambiguous: frozenset[str] | None = None, **kw
    ):
        self.keep_public = keep_public
        self.ambiguous = ambiguous
        super().__init__(**kw)

    def analyze(self, text, entities, nlp_artifacts=None):
        results = super().analyze(text, entities, nlp_artifacts)
        for r in results:  # NER spans can run into markup or trailing punctuation: trim them
            for stop in ("<", "\n"):
                cut = text.find(stop, r.start, r.end)
                if cut > r.start:
                    r.end = cut
            while r.end > r.start and text[r.end - 1] in ".,;:!?)'\"*_ \t\n":
                r.end -= 1
        doc = getattr(nlp_artifacts, "tokens", None) if nlp_artifacts else None
        engine = getattr(nlp_artifacts, "nlp_engine", None) if nlp_artifacts else None
        nlp = engine.nlp.get("en") if engine is not None and getattr(engine, "nlp", None) else None
        return [
            r for r in results
            if r.entity_type != "PERSON"
            or person_span_ok(text, r.start, r.end, doc, self.keep_public, nlp, self.ambiguous)
        ]  # fmt: skip


# ------------------------------------------------------------------------------ phones

ARITH_WORDS = re.compile(
    r"\b(?:minus|plus|subtract|subtracted|difference|sum|add|added|calculate|compute|equals?|"
    r"result|evaluate|solve|times|divided|multiply|multiplied|product|total)\b",
    re.IGNORECASE,
)


_DIGIT = re.compile(r"\d")


def digit_count(text: str) -> int:
    """How many digits ``text`` has (a regex scan: 10x a Python loop over every character)."""
    return len(_DIGIT.findall(text))


def phone_is_arithmetic(text: str, start: int, end: int, min_digits: int = 7) -> bool:
    """True where a phone-shaped number is arithmetic: ``23786-17509``, ``12 + 3 = 15``."""
    value = text[start:end]
    if digit_count(value) < min_digits:  # "In 1687, ..." : a year, not a phone
        return True
    if re.fullmatch(r"\d{4,}\s*-\s*\d{4,}", value) and not re.fullmatch(r"\d{3,4}-\d{3,4}", value):
        # two long digit groups with one dash: a subtraction, a range, an id; never a phone's
        # 3-3-4 / 4-4 grouping
        if len(value.split("-")[0].strip()) >= 5 or len(value.split("-")[1].strip()) >= 5:
            return True
    before = text[max(0, start - 3) : start]
    after = text[end : end + 3]
    if (
        re.search(r"[=*/×÷^<>]|\d\s*[-+]\s*$", before)
        or re.search(r"^\s*[-+*/×÷=^]\s*\d", after)
        or re.match(r"\s*=", after)
    ):
        return True
    return bool(ARITH_WORDS.search(text[max(0, start - 40) : start]))


# National formats of these regions are recognized (international "+CC ..." ones always are).
# Presidio's default adds IL, CA (= US rules) and BR: each region is one more scan of the text
# with phonenumbers; without them the scan is ~40% faster, bench phone recall unchanged (1.00).
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")


class ArithmeticAwarePhoneRecognizer(PhoneRecognizer):
    """Presidio's PhoneRecognizer (phonenumbers, score 0.4, 0.4+ with context) minus arithmetic."""

    def analyze(self, text, entities, nlp_artifacts=None):
        if digit_count(text) < 7:  # no phone number has fewer digits: skip the scan
            return []
        return [
            r
            for r in super().analyze(text, entities, nlp_artifacts)
            if not phone_is_arithmetic(text, r.start, r.end)
        ]


# Phone numbers that phonenumbers' validation refuses (an unassigned area code, a national
# format of a region not in PHONE_REGIONS, an extension) but whose shape or context says phone.
PHONE_SHAPE = re.compile(
    r"(?<![\w+.-])(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,8}){0,4}"
    r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?(?![\w]|[.-]\d)"
)
# 415-555-0132, (415) 555-0132, 415.555.0132, +1-415-555-0132x12, 001-415-555-0132: the North
# American plan's 3-3-4 grouping, a phone whatever the digits are.
NANP_SHAPE = re.compile(
    r"(?:(?:\+?1|001)[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[.-])\d{3}[.-]\d{4}(?:[ \t]*(?:x|ext\.?)[ \t]*\d{1,6})?"
)
PHONE_CUE_BEFORE = re.compile(
    r"(?i)\b(?:phone|phones|tel|telephone|mobile|cell|cellphone|fax|call|calling|reach|text|"
    r"whatsapp|sms|dial|ring|answering[ \t]+at|contact[ \t]+number|hotline)\b[^\n\d]{0,25}$"
)
PHONE_CUE_AFTER = re.compile(r"(?i)[ \t]*[-(]?[ \t]*(?:office|fax|mobile|cell|home|work|phone|tel)\b")


class PhoneShapeRecognizer(LocalRecognizer):
    """PHONE_NUMBER: North American 3-3-4 numbers (any digits), and other digit groups of 6
    to 15 digits next to a phone word ("call", "fax", "Phone:", "... office"); arithmetic,
    dates, SSN-shaped and card-length numbers are left to their own checks."""

    def __init__(self, score: float = 0.6):
        self.score = score
        super().__init__(
            supported_entities=["PHONE_NUMBER"], name="TunelinePhoneShapeRecognizer",
            supported_language="en",
        )  # fmt: skip

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        if digit_count(text) < 6:
            return []
        out = []
        for m in PHONE_SHAPE.finditer(text):
            s, e = m.span()
            value = m.group()
            digits = sum(c.isdigit() for c in re.split(r"(?i)x|ext", value)[0])
            if not 6 <= digits <= 15 or re.fullmatch(r"\d+", value) and digits < 10:
                continue
            if re.fullmatch(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}", value):
                continue  # a date
            if re.fullmatch(r"\d{3}-\d{2}-\d{4}", value):
                continue  # an SSN's shape: US_SSN's
            nanp = NANP_SHAPE.fullmatch(value) is not None
            cued = bool(
                PHONE_CUE_BEFORE.search(text, max(0, s - 40), s)
                or PHONE_CUE_AFTER.match(text, e)
            )
            if (nanp or cued) and not phone_is_arithmetic(text, s, e, min_digits=6):
                out.append(RecognizerResult("PHONE_NUMBER", s, e, self.score))
        return out


# ------------------------------------------------------------------ addresses, urls, ...

SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    r"Terrace|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Close|Row|"
    r"Alley|Plaza|Gardens|Mews|Hill|Grove)"
)
UNIT = r"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9-]{1,6})"
CITY = r"(?:,[ \t]*[A-Z][a-z][a-zA-Z'.-]*(?:[ \t]+[A-Z][a-z][a-zA-Z'.-]*){0,2})"
ZIP = r"(?:,?[ \t]+(?:[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?|\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2}))"
ADDRESS_PATTERNS = [
    # 742 Evergreen Terrace, Apt 3, Springfield, IL 62704 / 221B Baker Street, London NW1 6XE
    GroupPattern(
        rf"\b\d{{1,6}}[A-Za-z]?,?[ \t]+(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ \t]+)?"
        rf"(?:[A-Z0-9][A-Za-z0-9'.-]*[ \t]+){{1,3}}{SUFFIX}\b\.?{UNIT}?(?:{CITY}{ZIP}?|{CITY})?",
        0.75, group=0,
    ),
    # Hauptstraße 12, 10115 Berlin / Kirchweg 3a
    GroupPattern(
        r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer)"
        r"[ \t]+\d{1,4}[a-z]?\b(?:,[ \t]*\d{4,5}[ \t]+[A-ZÄÖÜ][a-zäöüß]+)?",
        0.75, group=0,
    ),
    # 12 rue de la Paix, 75002 Paris / 8 calle Mayor
    GroupPattern(
        r"\b\d{1,4}(?:bis|ter)?,?[ \t]+(?i:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|calle|via|viale|piazza|avenida|rua)"
        r"[ \t]+(?:(?:de|du|des|la|le|l'|del|della|di|da|do)[ \t]*)*[A-ZÀ-Þ][\w'-]+(?:[ \t]+[A-ZÀ-Þ][\w'-]+){0,2}"
        r"(?:,[ \t]*\d{4,5}[ \t]+[A-ZÀ-Þ][\w'-]+)?",
        0.75, group=0,
    ),
]  # fmt: skip

# --- address grammar beyond the three line patterns above: street lines of many countries,
# the lines of an address block after them, units, PO and military boxes, ZIPs after a cue.
# General postal grammar (UPU/USPS conventions and each language's street words), no street
# or city list: a list would only find the streets it names.
STREET_WORDS = (
    r"(?:street|st|road|rd|avenue|ave|av|boulevard|blvd|bd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|parkway|circle|highway|hwy|square|sq|trail|crescent|close|row|alley|plaza|mews|grove|"
    r"rue|chemin|allée|impasse|quai|calle|avenida|avda|carrera|paseo|camino|via|viale|piazza|corso|"
    r"largo|vicolo|rua|travessa|praça|estrada|alameda|strada|ulica|ul|aleja|al|plac|odos|leof|"
    r"enparantza|kalea|utca|út|ulice|cesta|trg|straße|strasse|str|gasse|weg|platz|allee|laan|"
    r"straat|plein|gracht|kade|vej|gade|allé|plads|vei|veien|gata|gatan|vägen|väg|katu|tie|tee|kuja)"
)
# A street word at the end of a compound ("Holmevej", "Auerstrasse", "Sahankatu").
STREET_ENDINGS = (
    r"(?:straße|strasse|gasse|weg|platz|allee|damm|ufer|laan|straat|plein|gracht|kade|vej|"
    r"gade|allé|plads|stræde|vei|veien|vegen|vägen|väg|gata|gatan|katu|tie|kuja|bakken|utca|ulica)"
)
_NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?"
_AW = r"[^\W\d_][\w'’.-]*"  # an address word, any script ("Σκαφίδια", "Kongshøj")
UNIT_WORDS = r"(?:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building|#)"
UNIT_AT = re.compile(rf"(?i)^,?[ \t]*{UNIT_WORDS}\.?[ \t]*#?[ \t]*[A-Za-z0-9-]{{1,6}}\b")
# A capitalised address word (Latin, Greek or Cyrillic capital first), and the particles
# inside street names ("Via dalla Staziun", "Rua das Hortências").
_CW = r"(?:[A-ZÀ-ÖØ-ÞĀ-ŽΆ-ΫА-Я][\w'’.-]*)"
_PART = r"(?:de|du|des|la|le|l'|del|della|dalla|di|da|do|dos|das|van|von|der|den|y|e)"
STREET_LINES = [
    # 742 Evergreen Terrace / 62 47 Kogil Street / 2914 184th Street
    rf"(?:\b{_NUM}[ \t]+)?\b{_NUM},?[ \t]+(?:(?:{_CW}|\d+(?:st|nd|rd|th))[ \t]+){{0,3}}(?=[A-Z])(?i:{STREET_WORDS})\b\.?",
    # Holmevej 34 / 99 Sahankatu 77 / Untere Donaulände 33
    rf"(?:\b{_NUM}[ \t]+)?(?:{_CW}[ \t]+){{0,2}}[A-ZÀ-ÖØ-ÞĀ-ŽΆ-ΫА-Я][^\W\d_]*?(?:{STREET_ENDINGS})\b\.?[ \t]+{_NUM}\b",
    # Via dalla Staziun 87 / Rua João Pessoa 1636 / 56 ul. Karpacka 69
    rf"(?:\b{_NUM}[ \t]+){{0,2}}\b(?i:{STREET_WORDS})\.?[ \t]+(?:(?:{_CW}|{_PART})[ \t]+){{0,3}}{_CW}[ \t]+{_NUM}\b",
    # 110 Rue du Koweit / 53 place Stanislas: a number, then the street word
    rf"\b{_NUM}[ \t]+(?i:{STREET_WORDS})\.?[ \t]+(?:{_PART}[ \t]+){{0,2}}{_CW}(?:[ \t]+{_CW}){{0,2}}",
    # P.O. Box 108 / PO Box 12 / PSC 7580, Box 2412 / Unit 9104 Box 2779 / USNS Comfort
    r"(?:\b\d{1,5}[ \t]+)?\b(?i:p\.?[ \t]?o\.?[ \t]*box)[ \t]+\d{1,6}\b",
    r"\b(?:PSC|CMR|Unit)[ \t]+\d{3,5},?[ \t]+Box[ \t]+\d{1,5}\b",
    r"\b(?:USNS|USNV|USS|USCGC)[ \t]+[^\W\d_][\w'’-]+",
    # Apt. 441 / Suite 992 alone
    r"(?i:\b(?:apt|apartment|suite|ste|unit|flat)\b)\.?[ \t]*#?[ \t]*\d{1,5}[A-Za-z]?\b",
    # 37 Melum 50 / 22 Castelao 71, then a unit or the next line of the block
    rf"\b{_NUM}[ \t]+(?:{_CW}[ \t]+){{0,3}}{_CW}[ \t]+{_NUM}\b(?=,?[ \t]*(?:\r?\n[ \t]*\S|(?i:{UNIT_WORDS})\.?[ \t]))",
]
_STREET_RX = [re.compile(p) for p in STREET_LINES]
# APO/FPO/DPO AA 12345: a US military city-state line, an address line on its own.
MILITARY = re.compile(r"\b[ADF]PO[ \t]+A[AEP][ \t]+\d{5}\b")
ZIP_CUE = re.compile(r"(?i)\b(?:zip|postal|post)[ \t]*(?:code)?(?:[ \t]+is|[ \t]*:)?[ \t]*(\d{4,5}(?:-\d{4})?)\b")
ADDRESS_CUE = re.compile(
    r"(?i)\b(?:address(?:es)?|live[sd]?[ \t]+at|living[ \t]+at|located[ \t]+at|office[ \t]+is[ \t]+at|"
    r"ship(?:ped)?[ \t]+(?:it[ \t]+)?to|send[ \t]+(?:it|them|a[ \t]+new[ \t]+one)?[ \t]*to|sent[ \t]+to|"
    r"deliver(?:ed)?[ \t]+(?:it[ \t]+)?to|moved[ \t]+to|return[ \t]+(?:it[ \t]+)?to|meet[ \t]+(?:me|us)[ \t]+at)\b[^\n.!?]{0,40}$"
)
# A cued phrase: starts with a number (or is "the corner of ..."), holds a digit, ends at a
# sentence end, "for"/"in case"/"?" or the line.
CUED_ADDRESS = re.compile(rf"\b{_NUM}[ \t]+(?:{_AW}[ \t]+){{0,5}}{_CW}(?:[ \t]+{_NUM}\b)?")
# A line of an address block after the street line: a few words, a city/state/ZIP, a country.
BLOCK_LINE = re.compile(
    r"^[ \t]*,?[ \t]*(?:[^\W_][\w'’.()-]*[ \t]*,?[ \t]*){1,6}$"
)


def _address_ok(value: str) -> bool:
    return any(c.isdigit() for c in value) or bool(re.search(r"(?i)\b(?:USNS|USNV|USS|USCGC)\b", value))


def _extend_block(text: str, end: int) -> int:
    """The end of the address that starts with a street line ending at ``end``: a unit, then
    the comma- or line-separated parts of city, state, ZIP and country (up to five)."""
    m = UNIT_AT.match(text[end:])
    if m:
        end += m.end()
    for _ in range(5):
        rest = text[end:]
        sep = re.match(r"[ \t]*(?:,[ \t]*|\r?\n[ \t]*(?:\r?\n[ \t]*)?(?:[^\w\s]{1,3}[ \t]+)?)", rest)
        if not sep or not sep.group():
            break
        line_end = len(rest)
        for stop in ("\n", ","):
            j = rest.find(stop, sep.end())
            if j >= 0:
                line_end = min(line_end, j)
        part = rest[sep.end() : line_end]
        # a part ends at a sentence end or a clause word ("for", "in case", "?")
        cut = re.search(r"[.!?;:](?:\s|$)|\s(?:for|in|if|and|but|so|please|thanks)\b", part)
        if cut and not re.match(r"[ \t]*(?i:apt|suite|ste|unit)\.", part[cut.start():]):
            part = part[: cut.start()]
            stop_here = True
        else:
            stop_here = False
        if not part.strip() or not BLOCK_LINE.match(part) or len(part) > 60:
            break
        if "\n" in sep.group() and not _block_part(part):
            break
        end += sep.end() + len(part.rstrip())
        if stop_here:
            break
    return end


def _block_part(part: str) -> bool:
    """A line that can continue an address: a unit, a ZIP, a military line, or a few words
    whose first is capitalised or upper case (city, state, country)."""
    p = part.strip(" ,\t")
    if UNIT_AT.match(p) or MILITARY.search(p) or re.search(r"\b\d{4,5}(?:-\d{4})?\b", p):
        return True
    words = p.split()
    return 0 < len(words) <= 4 and (p[0].isupper() or p.isupper() or p.lower() == "nan")


class AddressRecognizer(LocalRecognizer):
    """STREET_ADDRESS: street lines in the grammar of many countries (``STREET_LINES``), the
    rest of their address block, PO and military boxes, units, ZIPs and number-led phrases
    after a cue word ("address", "ship it to", "lives at")."""

    def __init__(self, score: float = 0.7):
        self.score = score
        super().__init__(
            supported_entities=["STREET_ADDRESS"], name="TunelineAddressGrammarRecognizer",
            supported_language="en",
        )  # fmt: skip

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        if not any(c.isdigit() for c in text) and "USNS" not in text and "USS" not in text:
            return []
        spans = []
        for rx in _STREET_RX:
            for m in rx.finditer(text):
                if _address_ok(m.group()):
                    spans.append((m.start(), _extend_block(text, m.end())))
        for m in MILITARY.finditer(text):
            spans.append((m.start(), m.end()))
        for m in ZIP_CUE.finditer(text):
            spans.append(m.span(1))
        for m in CUED_ADDRESS.finditer(text):
            if ADDRESS_CUE.search(text, max(0, m.start() - 80), m.start()):
                value = m.group()
                cut = re.search(r"\s(?:for|in|if|but|so|please|thanks|and)\b", value)
                e = m.start() + (cut.start() if cut else len(value))
                spans.append((m.start(), _extend_block(text, e)))
        out = []
        for s, e in merge_spans(spans):
            while e > s and text[e - 1] in " \t,.;:":
                e -= 1
            if e > s:
                out.append(RecognizerResult("STREET_ADDRESS", s, e, self.score))
        return out


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


SOCIAL = (
    r"(?:facebook|fb|twitter|x|instagram|linkedin|github|gitlab|tiktok|youtube|reddit|medium|"
    r"pinterest|mastodon\.social|threads|snapchat|vk|t\.me|telegram)\.(?:com|me|org|net)"
)
RESERVED_PATHS = {
    "", "about", "help", "login", "signup", "search", "explore", "settings", "home", "pages",
    "groups", "events", "watch", "results", "jobs", "company", "features", "pricing", "docs",
    "topics", "trending", "r", "hashtag", "i", "intent", "share", "sharer", "policies", "legal",
}  # fmt: skip


def personal_url(url: str) -> bool:
    """A URL that points at a person: a ~home, /users/<x>, /in/<x>, a social profile, ?email=."""
    u = url.rstrip(".,;:!?)'\"")
    if re.search(r"/~[\w.-]+", u) or re.search(
        r"[?&](?:email|e-mail|user|username|uid|name|phone)=", u, re.I
    ):
        return True
    if re.search(
        r"/(?:users?|u|in|profiles?|people|members?|author|authors|home|@)[/]?[\w.%-]{2,}", u, re.I
    ):
        return True
    if re.search(r"/@[\w.-]{2,}", u):
        return True
    m = re.match(rf"(?i)(?:https?://)?(?:www\.|m\.)?{SOCIAL}/([^/?#\s]+)", u)
    return bool(m and m.group(1).lower() not in RESERVED_PATHS)


URL_PATTERNS = [
    GroupPattern(r"\b((?:https?://|www\.)[^\s<>\"`]+[^\s<>\"'`.,;:!?)\]])", 0.8, validate=personal_url),
    GroupPattern(rf"\b((?i:(?:www\.)?{SOCIAL})/[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]])", 0.8, validate=personal_url),
]  # fmt: skip

DECORATORS = {
    "property", "staticmethod", "classmethod", "dataclass", "override", "param", "return",
    "returns", "type", "throws", "see", "since", "author", "version", "deprecated", "media",
    "import", "keyframes", "font", "charset", "supports", "page", "interface", "end", "synthesize",
    "everyone", "here", "channel", "all",
}  # fmt: skip


def _decorator_line(text: str, s: int, e: int) -> bool:
    """``@name`` alone on its line (after indentation): a code decorator, not a handle."""
    line_start = text.rfind("\n", 0, s) + 1
    line_end = text.find("\n", e)
    rest = text[e : len(text) if line_end < 0 else line_end]
    return text[line_start:s].strip() == "" and (
        rest.strip() == "" or rest.lstrip().startswith("(")
    )


HANDLE_PATTERNS = [
    # @handle, not an email (no word char or dot before it), not a decorator at a line start
    GroupPattern(
        r"(?<![\w.@/])@([A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?)\b(?![.(@\w])",
        0.7, group=0,
        validate=lambda v: v[1:].lower() not in DECORATORS and not v[1:].isdigit(),
        validate_at=lambda t, s, e: not _decorator_line(t, s, e),
    ),
]  # fmt: skip

MONTH = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{2}}-\d{{2}}|"
    rf"{MONTH}\.?[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}|"
    rf"\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:of[ \t]+)?{MONTH}\.?,?[ \t]+\d{{4}})"
)
DOB_PATTERNS = [
    GroupPattern(
        rf"(?i:born(?:[ \t]+on)?|d\.?o\.?b\.?|date[ \t]+of[ \t]+birth|birth[ \t]*date|birthday)"
        rf"(?:[ \t]+is)?[ \t]*[:\-]?[ \t]*(?:on[ \t]+)?({DATE})",
        0.85,
    ),
]

ID = r"([A-Z0-9](?:[A-Z0-9 -]{3,16}[A-Z0-9]))"


def _has_digit(v: str) -> bool:
    return sum(c.isdigit() for c in v) >= 4


LICENSE_PATTERNS = [
    GroupPattern(
        rf"(?i:driver'?s?[ \t]+licen[cs]e|driving[ \t]+licen[cs]e|DL)(?:[ \t]+(?i:number|no\.?|num|#|id))?"
        rf"(?:[ \t]+is)?[ \t]*[:#]?[ \t]*{ID}\b",
        0.85, validate=_has_digit,
    ),
]  # fmt: skip
# A card number the checksum refuses (a typo, a test number) is still a card number where the
# text says so: Presidio's card recognizer needs a valid Luhn digit.
CARD_CUE_PATTERNS = [
    GroupPattern(
        r"(?i:(?:credit|debit|bank|visa|mastercard|amex)[ \t]+card|card[ \t]+(?:number|no\.?|num|#))"
        r"(?:[ \t]+(?i:number|no\.?|is|was|ending))*[ \t]*[:#]?[ \t]*"
        r"(\d{4}(?:[ .-]?\d{4}){2}[ .-]?\d{1,7}|\d{4}[ .-]?\d{6}[ .-]?\d{5})(?![\d])",
        0.6,
    ),
]
PASSPORT_PATTERNS = [
    GroupPattern(
        r"(?i:passport)(?:[ \t]+(?i:number|no\.?|num|#|id))?(?:[ \t]+is)?[ \t]*[:#]?[ \t]*([A-Z0-9]{6,9})\b",
        0.85,
        validate=_has_digit,
    ),
]


# ------------------------------------------------------------------------ given names

# Second words that make "<given name> <word>" a place or an organisation, not a person.
NOT_SURNAMES = frozenset(
    "street st road rd avenue ave lane boulevard drive square station airport park river lake "
    "mountain mount island bay beach hill hills valley city county state university college "
    "school academy institute hospital clinic church cathedral hall hotel bank company corp inc "
    "ltd llc group center centre museum gallery theatre theater stadium arena bridge tower "
    "house palace castle garden gardens street's day".split()
)


@lru_cache(maxsize=4)
def english_words(nlp) -> frozenset[str]:
    """Lower-case English words: spaCy's stop words and the WordNet word lists in the
    pipeline's lemmatizer tables (nouns, verbs, adjectives, adverbs)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(set(STOP_WORDS).union(*word_lists(nlp).values()))


def word_lists(nlp) -> dict[str, frozenset[str]]:
    """WordNet's lower-case nouns, verbs, adjectives and adverbs, from the lemmatizer tables of
    the spaCy pipeline (present even where the lemmatizer is disabled); empty without them."""
    if "lemmatizer" not in nlp.component_names:
        return {}
    tables = nlp.get_pipe("lemmatizer").lookups
    if not tables.has_table("lemma_index"):
        return {}
    index = tables.get_table("lemma_index")
    return {pos: frozenset(index.get(pos, [])) for pos in ("noun", "verb", "adj", "adv")}


@lru_cache(maxsize=4)
def not_name_words(nlp) -> frozenset[str]:
    """Lower-case words that are no name: stop words, WordNet's verbs and adverbs, and its
    adjectives that are not also nouns (nouns stay: WordNet lists "john", "smith" and
    "romano" as nouns)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    w = word_lists(nlp)
    empty: frozenset[str] = frozenset()
    return frozenset(
        set(STOP_WORDS)
        | w.get("verb", empty)
        | w.get("adv", empty)
        | (w.get("adj", empty) - w.get("noun", empty))
    )


def given_names(english: frozenset[str]) -> frozenset[str]:
    """Given names of Faker's person providers (86 locales, ~31k names), minus English words
    ("Will", "Grace", "John": spaCy's NER finds the common Anglo names; a word is no evidence)."""
    return frozenset(
        n
        for n in faker_given_names()
        if len(n) >= 3 and n[0].isupper() and " " not in n and n.lower() not in english
    )


@lru_cache(maxsize=4)
def given_names_for(nlp) -> frozenset[str]:
    """``given_names`` minus the English words of ``nlp``'s word lists, built once."""
    return given_names(english_words(nlp))


@lru_cache(maxsize=1)
def faker_given_names() -> frozenset[str]:
    """Every given name of Faker's person providers (86 locales, ~31k names)."""
    import importlib
    import pkgutil

    import faker.providers.person as person

    names: set[str] = set()
    for mod in pkgutil.iter_modules(person.__path__):
        try:
            provider = importlib.import_module(f"{person.__name__}.{mod.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in (
            "first_names",
            "first_names_male",
            "first_names_female",
            "first_names_nonbinary",
        ):
            value = next((c.__dict__[attr] for c in provider.__mro__ if attr in c.__dict__), None)
            if isinstance(value, dict | list | tuple | set | frozenset):
                names.update(value)
    return frozenset(names)


class GivenNameRecognizer(LocalRecognizer):
    """PERSON: a known given name followed by a capitalised surname ("Amara Okafor") where no
    cue word says so. spaCy's small NER misses many non-Anglo names; a gazetteer of given names
    that are not English words finds them. The span passes ``person_span_ok`` like NER's
    (public figures in context are kept), and the surname must not be a place or organisation
    word ("Victoria Station").

    Args:
        names: the given names (``given_names``).
        keep_public: keep public figures and characters, as for NER names.
        score: the score of a match.
        not_surnames: lower-case words that end a match as no surname ("Berg The"): stop
            words, verbs, place and organisation words (``not_name_words``, ``NOT_SURNAMES``).
        alone_score: the score of a given name with no surname; None finds none.
    """

    # A lookahead, so that matches overlap: "Yesterday Giulia Romano" tries "Giulia Romano" too.
    PATTERN = re.compile(rf"(?<![\w'’-])(?=({W})[ \t]+((?:{P}[ \t]+)*{W})(?![\w'’-]))")

    def __init__(
        self,
        names: frozenset[str],
        keep_public: bool = True,
        score: float = 0.6,
        not_surnames: frozenset[str] = NOT_SURNAMES,
        alone_score: float | None = 0.55,
    ):
        self.names, self.keep_public, self.score = names, keep_public, score
        self.alone_score = alone_score
        self.not_surnames = not_surnames
        super().__init__(
            supported_entities=["PERSON"],
            name="TunelineGivenNameRecognizer",
            supported_language="en",
        )

    def load(self) -> None:
        pass

    # A given name alone ("Raimond, can I speak to your boss?"): a capitalised word, not
    # followed by another (that is PATTERN's) nor preceded by one ("Nova Scotia").
    ALONE = re.compile(rf"(?<![\w'’-])(?<![A-Z][a-z]\s)({W})(?![\w'’-])(?![ \t]+[A-Z])")

    def analyze(self, text, entities, nlp_artifacts=None):
        out = []
        for m in self.PATTERN.finditer(text):
            first, rest = m.group(1), m.group(2)
            if first not in self.names or rest.split()[-1].lower() in self.not_surnames:
                continue
            s, e = m.start(1), m.end(2)
            if person_span_ok(text, s, e, None, self.keep_public):
                out.append(RecognizerResult("PERSON", s, e, self.score))
        if self.alone_score is not None:
            for m in self.ALONE.finditer(text):
                if m.group(1) in self.names and person_span_ok(
                    text, m.start(1), m.end(1), None, self.keep_public
                ):
                    out.append(RecognizerResult("PERSON", m.start(1), m.end(1), self.alone_score))
        return out


def tuneline_recognizers(keep_public: str | bool, nlp=None) -> list:
    """Every recognizer tuneline registers, plus the two that replace Presidio's own.

    Args:
        keep_public: keep public figures and characters where the context shows them.
        nlp: the spaCy pipeline, whose word lists ``GivenNameRecognizer`` needs (left out
            without it).
    """
    given = []
    if nlp is not None:
        given = [
            GivenNameRecognizer(
                given_names_for(nlp),
                keep_public,
                not_surnames=not_name_words(nlp) | NOT_SURNAMES,
            )
        ]
    return [
        *given,
        GroupPatternRecognizer("PERSON", NAME_PATTERNS, "TunelineNameRecognizer"),
        GroupPatternRecognizer("STREET_ADDRESS", ADDRESS_PATTERNS, "TunelineAddressRecognizer"),
        AddressRecognizer(),
        GroupPatternRecognizer("URL", URL_PATTERNS, "TunelinePersonalUrlRecognizer"),
        GroupPatternRecognizer("USER_HANDLE", HANDLE_PATTERNS, "TunelineHandleRecognizer"),
        GroupPatternRecognizer("DATE_OF_BIRTH", DOB_PATTERNS, "TunelineDateOfBirthRecognizer"),
        GroupPatternRecognizer("US_DRIVER_LICENSE", LICENSE_PATTERNS, "TunelineLicenseRecognizer"),
        GroupPatternRecognizer("US_PASSPORT", PASSPORT_PATTERNS, "TunelinePassportRecognizer"),
        GroupPatternRecognizer("CREDIT_CARD", CARD_CUE_PATTERNS, "TunelineCardContextRecognizer"),
        ArithmeticAwarePhoneRecognizer(supported_regions=PHONE_REGIONS),
        PhoneShapeRecognizer(),
        CheckedSpacyRecognizer(
            keep_public=keep_public,
            ambiguous=not_name_words(nlp) if nlp is not None else None,
            supported_entities=["PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"],
        ),
    ]


# Presidio recognizers the ones above replace (removed from the registry by name).
REPLACED = ("SpacyRecognizer", "PhoneRecognizer", "UrlRecognizer")
