"""ingest.filters: each rule rejects with its own reason and details, the chain runs them
cheap first, and language ID holds up on real sentences in twelve languages."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.ingest import IngestConfig, SourceConfig
from tasks.ingest.filters import (
    BrokenUtf8Filter,
    EmptyFilter,
    FilterChain,
    GopherFilter,
    LanguageIdFilter,
    RefusalFilter,
    Rejection,
    TooLongFilter,
    TooShortFilter,
)
from tests.support.ingest import make_cfg, run_ingest, write_jsonl
from tuneline.records import Message, Record


def chat(*turns: tuple[str, str]) -> Record:
    return Record(id="c", kind="chat", messages=[Message(role=r, content=c) for r, c in turns])


def text(t: str) -> Record:
    return Record(id="t", kind="text", text=t)


def pair(chosen: str, rejected: str) -> Record:
    prompt = [Message(role="user", content="Which tent for two people?")]
    return Record(id="p", kind="preference", messages=prompt, chosen=chosen, rejected=rejected)


ANSWER = chat(("user", "Is shipping free?"), ("assistant", "Yes, on orders over $75 in the US."))
ENGLISH = (
    "Dry your tent completely before you store it, or mildew will ruin the fabric and the seams."
)

# ---------------------------------------------------------------------------------- one rule


@pytest.mark.parametrize(
    "rule, record, detail",
    [
        (
            BrokenUtf8Filter(),
            text("Tent care: it\u00e2\u20ac\u2122s easy."),
            {"sample": "Tent care: it\u00e2\u20ac\u2122s easy."},
        ),
        (
            BrokenUtf8Filter(),
            chat(("user", "Hi?"), ("assistant", "ok \ufffd ok")),
            {"sample": "ok \ufffd ok"},
        ),
        (EmptyFilter(), text(" \n "), {"what": "no text"}),
        (
            EmptyFilter(),
            chat(("user", "Anyone there?"), ("assistant", "  ")),
            {"what": "no reply to train on"},
        ),
        (EmptyFilter(), pair("Take the Basecamp 2.", ""), {"what": "no reply to train on"}),
        (TooShortFilter(20), text("Short."), {"chars": 6, "min_chars": 20}),
        (TooLongFilter(10), text("Eleven char"), {"chars": 11, "max_chars": 10}),
        (
            RefusalFilter(["I'm sorry, but I cannot"]),
            chat(("user", "Refund?"), ("assistant", "I\u2019m SORRY, but I cannot help.")),
            {"phrase": "i'm sorry, but i cannot"},
        ),
        (
            RefusalFilter(["as an ai language model"]),
            pair("As an AI language model, no.", "Sure."),
            {"phrase": "as an ai language model"},
        ),
        (
            GopherFilter(),
            text("Far too few words for a web document."),
            {"rule": "gopher_short_doc"},
        ),
    ],
)
def test_a_rule_rejects_with_its_name_and_details(rule, record, detail):
    assert rule.check(record) == Rejection(rule.name, detail)


@pytest.mark.parametrize(
    "rule, record",
    [
        (BrokenUtf8Filter(), text("Caf\u00e9 cr\u00e8me, na\u00efve \u2014 all fine \u2019 here.")),
        (EmptyFilter(), ANSWER),
        (TooShortFilter(20), ANSWER),
        (TooLongFilter(1000), ANSWER),
        (RefusalFilter(["as an ai language model"]), ANSWER),
        # a refusal on the rejected side is what preference training learns to avoid
        (RefusalFilter(["as an ai language model"]), pair("Sure.", "As an AI language model, no.")),
        (RefusalFilter(["as an ai language model"]), text("As an AI language model, I...")),
        (GopherFilter(), chat(("user", "Hi?"), ("assistant", "Hello."))),  # only text records
    ],
)
def test_a_rule_keeps_what_it_is_not_about(rule, record):
    assert rule.check(record) is None


def test_language_id_labels_every_record_it_sees_and_counts_them():
    rule = LanguageIdFilter(["en"], 0.65)
    kept, dropped = (
        text(ENGLISH),
        text("Trocknen Sie Ihr Zelt vollst\u00e4ndig, bevor Sie es einlagern."),
    )
    assert rule.check(kept) is None and kept.meta["lang"] == "en" and kept.meta["lang_score"] > 0.65
    verdict = rule.check(dropped)
    assert verdict.reason == "language" and verdict.detail["lang"] == "de"
    assert verdict.detail["wanted"] == ["en"] and dropped.meta["lang"] == "de"
    assert rule.seen == {"en": 1, "de": 1}
    everything = LanguageIdFilter([], 0.65)  # no languages: label only, keep all
    assert everything.check(text("Trocknen Sie Ihr Zelt vollst\u00e4ndig.")) is None


# --------------------------------------------------------------------------------- the chain


def test_the_chain_runs_cheap_rules_first_and_follows_the_config():
    cfg = IngestConfig(sources=[SourceConfig(path="x.jsonl")])
    names = [f.name for f in FilterChain.from_config(cfg).filters]
    assert names == [
        "broken_utf8",
        "empty",
        "too_short",
        "too_long",
        "refusal",
        "language",
        "quality",
    ]
    lean = cfg.model_copy(update={"drop_refusals": False, "quality_filter": False})
    assert [f.name for f in FilterChain.from_config(lean).filters] == [
        "broken_utf8", "empty", "too_short", "too_long", "language",
    ]  # fmt: skip


def test_the_first_rejection_wins_and_later_rules_do_not_run():
    chain = FilterChain.from_config(IngestConfig(sources=[SourceConfig(path="x.jsonl")]))
    short = chat(("user", "Hi?"), ("assistant", "As an AI language model, no."))
    assert chain.check(text("ok \ufffd")).reason == "broken_utf8"
    assert chain.check(short).reason == "refusal" and "lang" not in short.meta
    record = text(ENGLISH)
    assert chain.check(record).reason == "quality" and record.meta["lang"] == "en"
    assert chain.languages_seen == {"en": 1}


# ------------------------------------------------------------------------ through the stage


def test_length_bounds_and_refusals_in_rejected_replies(tmp_path):
    src = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"instruction": "Ok?", "output": "Yes."},
            {"instruction": "Describe the Cascade shell.", "output": "A waterproof jacket. " * 20},
            {
                "prompt": "Which tent for two people?",
                "chosen": "The Basecamp 2 fits two sleeping pads.",
                "rejected": "As an AI language model, I cannot recommend tents.",
            },
        ],
    )
    art = run_ingest(tmp_path / "a", make_cfg([src], min_chars=20, max_chars=300))
    assert {r["reason"]: r for r in art.rejected()}.keys() == {"too_short", "too_long"}
    (pair,) = art.records()  # a refusal on the rejected side is what DPO should learn to avoid
    assert pair.kind == "preference" and pair.rejected.startswith("As an AI language model")


def test_language_id_on_twelve_languages(tmp_path, shared_data):
    lines = (
        (shared_data / "langid/sentences_12lang.tsv").read_text(encoding="utf-8").splitlines()[1:]
    )
    rows = [
        {"id": f"{lang}-{i}", "text": text}
        for i, (lang, text) in enumerate(line.split("\t", 1) for line in lines)
    ]
    src = write_jsonl(tmp_path / "sentences.jsonl", rows)
    art = run_ingest(
        tmp_path / "a",
        make_cfg(
            [src],
            languages=["en", "de", "fr", "es"],
            quality_filter=False,
            min_chars=0,
            language_threshold=0.5,
        ),
    )
    detected: dict[str, list[str]] = {}
    for r in art.records():
        detected.setdefault(r.meta["source_id"].split("-")[0], []).append(r.meta["lang"])
    other = Counter()
    for row in art.rejected():
        if row["reason"] == "language":
            detected.setdefault(row["record"]["meta"]["source_id"].split("-")[0], []).append(
                row["lang"]
            )
        else:
            other[row["reason"]] += 1
    # Some French sentences carry a cp1252 apostrophe (U+0092): real mojibake, rightly rejected.
    assert set(other) <= {"broken_utf8"} and other["broken_utf8"] <= 12
    for lang in ("en", "de", "fr", "es"):
        hits = detected[lang]
        assert sum(x == lang for x in hits) / len(hits) >= 0.9, (lang, Counter(hits))
    kept_langs = Counter(r.meta["lang"] for r in art.records())
    assert set(kept_langs) <= {"en", "de", "fr", "es"} and sum(kept_langs.values()) >= 170
    all_hits = [x == lang for lang, xs in detected.items() for x in xs]
    assert sum(all_hits) / len(all_hits) >= 0.9
    assert art.report["languages"]["ja"] >= 40
