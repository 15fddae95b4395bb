"""ingest.filters: each rule rejects with its own reason and details, the chain runs them
cheap first, and language ID holds up on real sentences in twelve languages."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from pydantic import ValidationError

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig
from tasks.ingest.filters import (
    BrokenMarkupFilter,
    BrokenUtf8Filter,
    EmptyFilter,
    FilterChain,
    GopherFilter,
    LanguageIdFilter,
    PlaceholderFilter,
    RefusalFilter,
    Rejection,
    RepeatedPromptFilter,
    RunawayRepetitionFilter,
    TooLongFilter,
    TooShortFilter,
    TruncatedReplyFilter,
)
from tests.support.ingest import make_cfg, run_ingest, write_jsonl
from tuneline.records import Message, Record


def chat(*turns: tuple[str, str]) -> Record:
    return Record(id="c", kind="chat", messages=[Message(role=r, content=c) for r, c in turns])


def text(t: str) -> Record:
    return Record(id="t", kind="text", text=t)


def page(t: str) -> Record:
    return Record(id="w", kind="text", text=t, meta={"format": "html"})


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
            page("Far too few words for a web document."),
            {"rule": "gopher_short_doc", "words": 8},
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
        # a short plain-text record is not a web page: no 50-word minimum, no ratios over 8 words
        (GopherFilter(), text("Far too few words for a web document.")),
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
        "truncated_reply",
        "repeated_prompt",
        "placeholder",
        "broken_markup",
        "repetition",
        "language",
        "quality",
    ]
    lean = cfg.model_copy(
        update={"drop_refusals": False, "quality_filter": False, "reply_filters": False}
    )
    assert [f.name for f in FilterChain.from_config(lean).filters] == [
        "broken_utf8", "empty", "too_short", "too_long", "language",
    ]  # fmt: skip


def test_the_first_rejection_wins_and_later_rules_do_not_run():
    chain = FilterChain.from_config(IngestConfig(sources=[SourceConfig(path="x.jsonl")]))
    short = chat(("user", "Hi?"), ("assistant", "As an AI language model, no."))
    assert chain.check(text("ok \ufffd")).reason == "broken_utf8"
    assert chain.check(short).reason == "refusal" and "lang" not in short.meta
    record = page(ENGLISH)  # a web page of 16 words: extraction kept no article
    assert chain.check(record).reason == "quality" and record.meta["lang"] == "en"
    assert chain.check(text(ENGLISH)) is None  # the same words as a plain-text record: kept
    assert chain.languages_seen == {"en": 2}


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


# ------------------------------------------------------------ reply rules: chats and pairs

LONG_ANSWER = (
    "Pitch the tent on high ground, face the door away from the wind, and stake the corners "
    "before you raise the poles. Tension the guy lines evenly so the fly does not touch the "
    "inner tent, or condensation will soak through overnight."
)
PROMPT = "How do I pitch a tent in the wind?"


def qa(reply: str, prompt: str = PROMPT) -> Record:
    return chat(("user", prompt), ("assistant", reply))


@pytest.mark.parametrize(
    "rule, bad, good, detail",
    [
        (
            EmptyFilter(),
            chat(("user", "Hi"), ("assistant", "Hello!"), ("user", PROMPT), ("assistant", " ")),
            chat(
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", PROMPT),
                ("assistant", LONG_ANSWER),
            ),
            {"what": "no reply to train on"},
        ),
        (
            TruncatedReplyFilter(),
            qa("Pitch the tent on high ground, face the door away from the wind, and stake the"),
            qa(LONG_ANSWER),
            {"ending": "…high ground, face the door away from the wind, and stake the"},
        ),
        (
            RepeatedPromptFilter(),
            qa("how do I pitch a tent in the wind"),
            qa(f"You asked: {PROMPT} {LONG_ANSWER}"),  # quotes the prompt, then answers
            {"reply": "how do I pitch a tent in the wind"},
        ),
        (
            PlaceholderFilter(),
            qa(LONG_ANSWER + " Lorem ipsum dolor sit amet."),
            qa(LONG_ANSWER),
            None,
        ),
        (
            PlaceholderFilter(),
            qa("Dear customer, [Insert apology here]. Best regards"),
            # a template was asked for: its blanks are the answer
            qa(
                "Dear [insert name], your order ships on [insert date].", "Write an email template."
            ),
            None,
        ),
        (
            PlaceholderFilter(),
            qa("TODO: write the answer"),
            qa("Here is the stub:\n```python\ndef pitch():\n    # TODO: stake corners\n```"),
            None,
        ),
        (
            BrokenMarkupFilter(),
            qa("Use this:\n```python\nprint('stake the corners')\n"),
            qa("Use this:\n```python\nprint('stake the corners')\n```"),
            {"problem": "unclosed code fence", "fences": 1},
        ),
        (
            BrokenMarkupFilter(),
            qa(LONG_ANSWER + "<|im_end|>"),
            qa(LONG_ANSWER),
            {"problem": "chat-template token", "token": "<|im_end|>"},
        ),
        (
            RunawayRepetitionFilter(),
            qa(LONG_ANSWER + " and then stake it down" * 6),
            qa(LONG_ANSWER),
            {"phrase": "and then stake it down", "times": 6},
        ),
    ],
)
def test_a_reply_rule_rejects_its_case_and_keeps_the_good_neighbour(rule, bad, good, detail):
    verdict = rule.check(bad)
    assert verdict is not None and verdict.reason == rule.name
    if detail is not None:
        assert verdict.detail == detail
    assert rule.check(good) is None
    if not isinstance(rule, EmptyFilter):  # text records have no replies
        assert rule.check(text(bad.messages[-1].content)) is None


def test_reply_rules_look_at_the_chosen_side_of_a_pair_only():
    placeholder, fence = PlaceholderFilter(), BrokenMarkupFilter()
    assert placeholder.check(pair("Lorem ipsum dolor sit amet.", "Take the Basecamp 2.")).reason
    assert placeholder.check(pair("Take the Basecamp 2.", "Lorem ipsum dolor sit amet.")) is None
    assert fence.check(pair("Take the Basecamp 2.", "```\nopen fence")) is None


def test_reply_rules_keep_alpaca_demo(shared_data):
    """999 good instruction rows: the reply rules drop only what is really broken there (one
    table whose code fence is never closed, one article cut off mid-sentence)."""
    rows = json.loads((shared_data / "instruction/alpaca_en_demo.json").read_text())
    rules = [
        TruncatedReplyFilter(),
        RepeatedPromptFilter(),
        PlaceholderFilter(),
        BrokenMarkupFilter(),
        RunawayRepetitionFilter(),
    ]
    dropped = Counter()
    for row in rows:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        record = qa(row["output"], prompt)
        for rule in rules:
            if rule.check(record):
                dropped[rule.name] += 1
    assert sum(dropped.values()) <= 3, dropped


# ------------------------------------------------------------------------------ CJK lengths


@pytest.mark.parametrize(
    "sentence",
    ["今天天气很好。", "我很喜欢这本书。", "ありがとうございます。", "오늘 날씨가 좋네요."],
)
def test_short_cjk_sentences_pass_the_default_min_length(sentence):
    cfg = IngestConfig(sources=[SourceConfig(path="x.jsonl")], languages=[])
    assert TooShortFilter(cfg.min_chars).check(text(sentence)) is None
    assert FilterChain.from_config(cfg).check(text(sentence)) is None
    assert TooShortFilter(cfg.min_chars).check(text("Nice day.")) is not None  # 9 characters


def test_cjk_sentences_of_the_langid_set_survive_the_default_chain(shared_data):
    lines = (shared_data / "langid/sentences_12lang.tsv").read_text(encoding="utf-8").splitlines()
    chain = FilterChain.from_config(
        IngestConfig(sources=[SourceConfig(path="x.jsonl")], languages=["zh", "ja"])
    )
    reasons = Counter()
    for line in lines[1:]:
        lang, sentence = line.split("\t", 1)
        if lang in ("zh", "ja"):
            verdict = chain.check(text(sentence))
            reasons[verdict.reason if verdict else "kept"] += 1
    # no sentence is too short or fails the quality rules; a few are too short for fastText
    # to be sure of ("一番好きなエピなのでうれしい！" scores 0.40): unknown, and not declared
    assert reasons["kept"] >= 97 and set(reasons) <= {"kept", "language"}, reasons


# --------------------------------------------------------------------------- language ID

CODE_ANSWERS = [
    {
        "instruction": "Write the HTML code to create a button that links to a certain page.",
        "input": "Link to page: https://example.com\nText on button: Click Here",
        "output": "```html\n<button onclick=\"window.location.href='https://example.com'\">"
        "Click Here</button>\n```",
    },
    {
        "instruction": "Write a function to convert Fahrenheit to Celsius",
        "input": "",
        "output": "Here is a function written in Python that can convert degrees Fahrenheit to "
        'degrees Celsius:\n\n```python\ndef fahrenheit_to_celsius(fahrenheit):\n    """\n    '
        'Converts degrees fahrenheit to degrees celsius.\n    """\n    celsius = (fahrenheit - '
        "32) * 5/9\n    return celsius\n```",
    },
    {
        "instruction": "Deduplicate the strings in the following array of strings.",
        "input": '["Apple", "Banana", "Apple", "Orange", "Grape", "Banana"]',
        "output": '["Apple", "Banana", "Orange", "Grape"]',
    },
    {
        "instruction": "Generate 5 multiplication problems",
        "input": "",
        "output": "1. 2 x 3 = ?\n2. 8 x 7 = ?\n3. 5 x 9 = ?\n4. 11 x 6 = ?\n5. 3 x 12 = ?",
    },
]


def test_language_id_looks_at_prose_not_code():
    rule = LanguageIdFilter(["en"], 0.5)
    labels = []
    for row in CODE_ANSWERS:  # rows of alpaca_en_demo that the old filter dropped as not English
        record = qa(row["output"], f"{row['instruction']}\n\n{row['input']}".strip())
        rule.check(record)
        labels.append(record.meta["lang"])
    # what is left of a prompt about HTML or an array after code and data are removed is too
    # little for fastText to be sure: "unknown", never another language
    assert labels == ["unknown", "en", "unknown", "en"]


def test_code_answer_alpaca_rows_are_kept_under_languages_en(tmp_path):
    src = write_jsonl(tmp_path / "code.jsonl", CODE_ANSWERS)
    declared = SourceConfig(path=str(src), language="en")
    art = run_ingest(tmp_path / "a", make_cfg([declared], languages=["en"]))
    assert len(list(art.records())) == len(CODE_ANSWERS)
    assert art.report["language_unknown_kept"] == 2
    assert "Kept **2** records whose language could not be told" in ingest.STAGE.summary(art.report)
    undeclared = run_ingest(tmp_path / "b", make_cfg([src], languages=["en"]))
    assert len(list(undeclared.records())) == 2  # the old chain kept none of the four


def test_unknown_language_is_labelled_unknown_not_guessed():
    everything = LanguageIdFilter([], 0.5)
    zulu = text(
        "Ngiyabonga kakhulu ngosizo lwakho, ngizokubona kusasa ekuseni ngaphambi komsebenzi."
    )
    assert everything.check(zulu) is None and zulu.meta["lang"] == "unknown"  # lid.176 has no zu
    phone = text("+1 415-555-0123")
    assert everything.check(phone) is None and phone.meta == {"lang": "unknown", "lang_score": 0.0}
    english = LanguageIdFilter(["en"], 0.5)
    verdict = english.check(text("Ngiyabonga kakhulu ngosizo lwakho, ngizokubona kusasa."))
    assert verdict.reason == "language" and verdict.detail["lang"] == "unknown"


def test_unknown_language_is_kept_when_the_source_declares_a_wanted_one(tmp_path):
    rows = [
        {"instruction": "Calculate 15% of 500.", "input": "", "output": "15% of 500 is 75."},
        {"instruction": "Phone number of the store?", "input": "", "output": "+1 415-555-0123"},
        {"instruction": "Wie spät ist es?", "input": "", "output": "Es ist drei Uhr nachmittags."},
    ]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    declared = SourceConfig(path=str(src), language="en")
    art = run_ingest(tmp_path / "a", make_cfg([declared], languages=["en"]))
    assert [r.meta["lang"] for r in art.records()] == ["unknown", "unknown"]
    assert art.report["language_unknown_kept"] == 2
    ((reason, lang),) = [(r["reason"], r["lang"]) for r in art.rejected()]
    assert (reason, lang) == ("language", "de")  # a language it can tell is still filtered
    undeclared = run_ingest(tmp_path / "b", make_cfg([src], languages=["en"]))
    assert not list(undeclared.records()) and undeclared.report["language_unknown_kept"] == 0


def test_language_codes_are_strings_even_where_yaml_says_no():
    cfg = yaml.safe_load("languages: [en, no]\nsources: [{path: x.jsonl, language: no}]")
    assert cfg["languages"] == ["en", False]  # what YAML 1.1 makes of Norwegian
    ingest_cfg = IngestConfig(**cfg)
    assert ingest_cfg.languages == ["en", "no"] and ingest_cfg.sources[0].language == "no"
    assert IngestConfig(sources=[SourceConfig(path="x")], languages="de").languages == ["de"]
    with pytest.raises(ValidationError, match=r"ingest\.languages\[0\]: 1 is not a language code"):
        IngestConfig(sources=[SourceConfig(path="x")], languages=[1])
    with pytest.raises(ValidationError, match=r"'xx' is not a language fastText lid\.176"):
        IngestConfig(sources=[SourceConfig(path="x")], languages=["xx"])
    with pytest.raises(ValidationError, match=r"sources\[\]\.language: True is not"):
        SourceConfig(path="x", language=True)


# ------------------------------------------------------------------------ examples per reason


def test_one_example_per_reason_in_the_report_and_the_summary(tmp_path):
    rows = [
        {"instruction": PROMPT, "output": LONG_ANSWER},
        {"instruction": PROMPT, "output": "Lorem ipsum dolor sit amet, consectetur adipiscing."},
        {"instruction": "Name a tent.", "output": "Lorem ipsum dolor sit amet again, twice over."},
        {"instruction": PROMPT, "output": PROMPT},
        {"instruction": PROMPT, "output": "Use this:\n```python\nprint('stake it')\n"},
        {"instruction": PROMPT, "output": "Face the door away from the wind, and"},
        {"instruction": PROMPT, "output": LONG_ANSWER + " stake the corners" * 8},
        {"instruction": PROMPT, "output": ""},
    ]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    art = run_ingest(tmp_path / "a", make_cfg([src]))
    assert len(list(art.records())) == 1
    by_reason = art.report["rejected_by_reason"]
    assert by_reason == {
        "placeholder": 2,
        "repeated_prompt": 1,
        "broken_markup": 1,
        "truncated_reply": 1,
        "repetition": 1,
        "empty": 1,
    }
    examples = art.report["examples"]
    assert set(examples) == set(by_reason)
    assert examples["placeholder"]["snippet"].startswith("Lorem ipsum dolor sit amet, consectetur")
    assert examples["placeholder"]["found"] == "Lorem ipsum"
    summary = ingest.STAGE.summary(art.report)
    for reason in by_reason:
        (row,) = [line for line in summary.splitlines() if line.startswith(f"| {reason} |")]
        assert len(row) < 300
    assert "Lorem ipsum dolor sit amet, consectetur" in summary
    assert "again, twice over" not in summary  # one example per reason


def _longest_loop_reference(ws: list[str], max_period: int = 30) -> tuple[int, int, int]:
    """The word-by-word definition that ``longest_loop`` vectorises."""
    best = (0, 0, 0)
    for p in range(1, min(max_period, len(ws) // 2) + 1):
        run = 0
        for j in range(len(ws) - p):
            run = run + 1 if ws[j] == ws[j + p] else 0
            copies = run // p + 1
            if copies > best[2] and run >= p:
                best = (p, j - run + 1, copies)
    return best


def test_longest_loop_matches_its_word_by_word_definition():
    import random

    from tasks.ingest.filters.repetition import longest_loop

    rng = random.Random(7)
    cases = [[], ["a"], "a b c a b c a b c x".split(), "x y y y y z".split()]
    for _ in range(400):
        vocab = [f"w{i}" for i in range(rng.randint(1, 6))]
        ws = [rng.choice(vocab) for _ in range(rng.randint(0, 80))]
        if ws and rng.random() < 0.5:  # plant a loop
            k = rng.randrange(len(ws))
            block = ws[k : k + rng.randint(1, 5)]
            ws[k:k] = block * rng.randint(2, 6)
        cases.append(ws)
    for ws in cases:
        assert longest_loop(ws) == _longest_loop_reference(ws), ws
    assert longest_loop("a b c a b c a b c x".split()) == (3, 0, 3)
