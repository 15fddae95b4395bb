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
INTRO = r"(?i:my\s+name\s+is|my\s+name's|name\s*:|signed\s*:?|contact\s+person\s*:?)"
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


def person_span_ok(text: str, start: int, end: int, doc, keep_public: bool, nlp=None) -> bool:
    """Simple checks an NER PERSON span must pass to be scrubbed.

    Rejects: no capital letter; digits; a unit or short acronym ("200 GB"); a span after
    "the"/"a"/"an"; a list heading ("2. Carrot Soup: ..."); a sentence-initial span whose first
    word spaCy's tagger does not call a proper noun ("Edit this sentence", "Check if ...");
    and, with ``keep_public``, names of public figures or fictional characters, by a small list
    or by the words around the span ("written by", "the novel", "character").
    """
    value = text[start:end]
    if not re.search(r"[A-ZÀ-Þ]", value) or re.search(r"\d", value):
        return False
    words = value.split()
    if len(words) == 1 and (value.lower() in UNITS or (value.isupper() and len(value) <= 4)):
        return False
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    if re.search(r"\b(?:the|a|an|this|that|our|your|its)\s+$", before):
        return False
    if re.fullmatch(r"\s*(?:(?:\d+[.)]|[-*•])\s*[*_#]*|[*_#]+)\s*", before) and re.match(
        r"[*_]*\s*[:(]", text[end : end + 5]
    ):
        return False
    sent_initial = not before.strip() or re.search(
        r"(?:[.!?:]|^\s*#+|^\s*(?:\d+[.)]|[-*•]))\s*[\"'“]?$", before
    )
    if nlp is not None and sent_initial and _first_tag(nlp, text, start) not in {"NNP", "NNPS"}:
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
    if keep_public:
        low = value.lower()
        if low in FAMOUS or any(w.strip(".,'’s") in FAMOUS for w in low.split()):
            return False
        lo = max(0, start - 60)
        left = text[lo:start].rsplit("\n", 1)[-1]
        right = text[end : end + 60].split("\n", 1)[0]
        if PUBLIC_CONTEXT.search(left) or PUBLIC_CONTEXT.search(right):
            return False
    return True


class CheckedSpacyRecognizer(SpacyRecognizer):
    """Presidio's SpacyRecognizer whose PERSON spans must pass ``person_span_ok``."""

    def __init__(self, keep_public: bool = True, **kw):
        self.keep_public = keep_public
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
            if r.entity_type != "PERSON" or person_span_ok(text, r.start, r.end, doc, self.keep_public, nlp)
        ]  # fmt: skip


# ------------------------------------------------------------------------------ phones

ARITH_WORDS = re.compile(
    r"\b(?:minus|plus|subtract|subtracted|difference|sum|add|added|calculate|compute|equals?|"
    r"result|evaluate|solve|times|divided|multiply|multiplied|product|total)\b",
    re.IGNORECASE,
)


def phone_is_arithmetic(text: str, start: int, end: int) -> bool:
    """True where a phone-shaped number is arithmetic: ``23786-17509``, ``12 + 3 = 15``."""
    value = text[start:end]
    if sum(c.isdigit() for c in value) < 7:  # "In 1687, ..." : a year, not a phone
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
        if sum(c.isdigit() for c in text) < 7:  # no phone number has fewer digits: skip the scan
            return []
        return [
            r
            for r in super().analyze(text, entities, nlp_artifacts)
            if not phone_is_arithmetic(text, r.start, r.end)
        ]


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
        r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer)"
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
    return frozenset(
        n
        for n in names
        if len(n) >= 3 and n[0].isupper() and " " not in n and n.lower() not in english
    )


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
    """

    # A lookahead, so that matches overlap: "Yesterday Giulia Romano" tries "Giulia Romano" too.
    PATTERN = re.compile(rf"(?<![\w'’-])(?=({W})[ \t]+((?:{P}[ \t]+)*{W})(?![\w'’-]))")

    def __init__(
        self,
        names: frozenset[str],
        keep_public: bool = True,
        score: float = 0.6,
        not_surnames: frozenset[str] = NOT_SURNAMES,
    ):
        self.names, self.keep_public, self.score = names, keep_public, score
        self.not_surnames = not_surnames
        super().__init__(
            supported_entities=["PERSON"],
            name="TunelineGivenNameRecognizer",
            supported_language="en",
        )

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        out = []
        for m in self.PATTERN.finditer(text):
            first, rest = m.group(1), m.group(2)
            if first not in self.names or rest.split()[-1].lower() in self.not_surnames:
                continue
            s, e = m.start(1), m.end(2)
            if person_span_ok(text, s, e, None, self.keep_public):
                out.append(RecognizerResult("PERSON", s, e, self.score))
        return out


def tuneline_recognizers(keep_public: bool, nlp=None) -> list:
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
                given_names(english_words(nlp)),
                keep_public,
                not_surnames=not_name_words(nlp) | NOT_SURNAMES,
            )
        ]
    return [
        *given,
        GroupPatternRecognizer("PERSON", NAME_PATTERNS, "TunelineNameRecognizer"),
        GroupPatternRecognizer("STREET_ADDRESS", ADDRESS_PATTERNS, "TunelineAddressRecognizer"),
        GroupPatternRecognizer("URL", URL_PATTERNS, "TunelinePersonalUrlRecognizer"),
        GroupPatternRecognizer("USER_HANDLE", HANDLE_PATTERNS, "TunelineHandleRecognizer"),
        GroupPatternRecognizer("DATE_OF_BIRTH", DOB_PATTERNS, "TunelineDateOfBirthRecognizer"),
        GroupPatternRecognizer("US_DRIVER_LICENSE", LICENSE_PATTERNS, "TunelineLicenseRecognizer"),
        GroupPatternRecognizer("US_PASSPORT", PASSPORT_PATTERNS, "TunelinePassportRecognizer"),
        ArithmeticAwarePhoneRecognizer(supported_regions=PHONE_REGIONS),
        CheckedSpacyRecognizer(
            keep_public=keep_public,
            supported_entities=["PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"],
        ),
    ]


# Presidio recognizers the ones above replace (removed from the registry by name).
REPLACED = ("SpacyRecognizer", "PhoneRecognizer", "UrlRecognizer")
