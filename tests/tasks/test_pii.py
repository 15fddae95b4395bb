"""pii stage: planted emails, phone numbers and names leave every field; config is respected;
tuneline's recognizers find their values; look-alikes stay; surrogates; the residual check."""

from __future__ import annotations

import json
import re

import pytest

from tasks import pii
from tests.support.stages import input_artifact, run_plain
from tuneline.artifacts import Artifact
from tuneline.config import PipelineConfig
from tuneline.records import Message, Record

EMAILS = ["john.smith@example.com", "maria.garcia@example.org", "alice.wong@example.net"]
PHONES = ["212-555-0143", "+1 415 555 2671", "646-555-0199"]
NAMES = ["John Smith", "Maria Garcia", "Robert Brown"]


def planted() -> list[Record]:
    """One record of each kind, PII in every kind of field; phone numbers sit next to a context word."""
    return [
        Record(
            id="t1",
            kind="text",
            text="Please contact John Smith at john.smith@example.com or on his phone number 212-555-0143.",
        ),
        Record(
            id="c1",
            kind="chat",
            messages=[
                Message(
                    role="user", content="Hi, I'm Maria Garcia. My mobile phone is +1 415 555 2671."
                ),
                Message(
                    role="assistant",
                    content="Thanks Maria Garcia, I will write to maria.garcia@example.org.",
                ),
            ],
        ),
        Record(
            id="p1",
            kind="preference",
            messages=[
                Message(
                    role="user", content="Draft a note to alice.wong@example.net about the meeting."
                )
            ],
            chosen="Sure, here is a note for alice.wong@example.net: the meeting moved to Friday.",
            rejected="Just call Robert Brown, his phone number is 646-555-0199.",
        ),
        Record(id="clean", kind="text", text="The mitochondria is the powerhouse of the cell."),
    ]


def run_pii(root, records: list[Record], **pii_cfg) -> Artifact:
    """Runs the plain stage function on ``records`` and returns the committed artifact."""
    cfg = PipelineConfig.model_validate({"run": {"artifact_root": str(root)}, "pii": pii_cfg})
    return run_plain(pii, cfg, [input_artifact(str(root), "ingest", records)])


def everything(art: Artifact) -> str:
    return "\n".join(r.joined_text() for r in art.records())


@pytest.fixture(scope="module", autouse=True)
def engine():
    """Loads spaCy + Presidio once for the module (the stage caches it per model name)."""
    pii.analyzer_for(PipelineConfig().pii.spacy_model)


def test_replace_scrubs_every_field_and_counts_entities(store_root):
    art = run_pii(store_root, planted(), operators={})  # replace for every type, PERSON too
    out = {r.id: r for r in art.records()}
    assert set(out) == {"t1", "c1", "p1", "clean"}  # PII records are kept, not dropped
    text = everything(art)
    for value in EMAILS + PHONES + NAMES:
        assert value not in text, f"{value!r} survived scrubbing"
    # The placeholder lands in the field the value was in.
    assert (
        "<EMAIL_ADDRESS>" in out["p1"].chosen and "<EMAIL_ADDRESS>" in out["p1"].messages[0].content
    )
    assert "<PHONE_NUMBER>" in out["p1"].rejected and "<PERSON>" in out["p1"].rejected
    assert (
        "<PERSON>" in out["c1"].messages[0].content
        and "<PHONE_NUMBER>" in out["c1"].messages[0].content
    )
    assert (
        out["t1"].text
        == "Please contact <PERSON> at <EMAIL_ADDRESS> or on his phone number <PHONE_NUMBER>."
    )
    assert out["clean"].text == "The mitochondria is the powerhouse of the cell."
    rep = art.report
    assert rep["entities_removed"] == {"EMAIL_ADDRESS": 4, "PERSON": 4, "PHONE_NUMBER": 3}
    assert rep["records_touched"] == 3 and rep["records_in"] == 4
    assert rep["entities_removed_total"] == 11
    assert "EMAIL_ADDRESS" in pii.STAGE.summary(rep)
    # The report is shown in the UI: it must not carry the values it removed.
    assert not any(v in str(rep) for v in EMAILS + PHONES + NAMES)


def test_placeholders_are_not_detected_again(store_root):
    """A second pass over scrubbed output (or a corpus scrubbed upstream) changes nothing."""
    first = list(run_pii(store_root + "/a", planted(), operators={}).records())
    second = run_pii(store_root + "/b", first, operators={})
    assert [r.joined_text() for r in second.records()] == [r.joined_text() for r in first]
    assert second.report["entities_removed_total"] == 0


def test_mask_and_hash_change_the_output_form(store_root):
    masked = everything(run_pii(store_root + "/m", planted(), operator="mask"))
    assert "*" * len("john.smith@example.com") in masked
    assert "<EMAIL_ADDRESS>" not in masked and "john.smith" not in masked

    hashed_art = run_pii(store_root + "/h", planted(), operator="hash", operators={})
    hashed = everything(hashed_art)
    assert "<EMAIL_ADDRESS>" not in hashed and "john.smith" not in hashed
    t1 = next(r for r in hashed_art.records() if r.id == "t1").text
    # sha256 hex digests in place of the three values
    assert len(re.findall(r"\b[0-9a-f]{64}\b", t1)) == 3
    # Same value, same digest: the email in the preference prompt and in `chosen` agree.
    p1 = next(r for r in hashed_art.records() if r.id == "p1")
    digest = re.search(r"[0-9a-f]{64}", p1.messages[0].content).group()
    assert digest in p1.chosen

    redacted = next(
        r
        for r in run_pii(store_root + "/r", planted(), operator="redact", operators={}).records()
        if r.id == "t1"
    )
    assert redacted.text == "Please contact  at  or on his phone number ."


def test_entity_selection_is_respected(store_root):
    art = run_pii(store_root, planted(), entities=["EMAIL_ADDRESS"])
    text = everything(art)
    assert not any(e in text for e in EMAILS)
    assert all(p in text for p in PHONES) and all(n in text for n in NAMES)
    assert art.report["entities_removed"] == {"EMAIL_ADDRESS": 4}


def test_allow_list_keeps_listed_words(store_root):
    rec = Record(
        id="v",
        kind="chat",
        messages=[
            Message(role="user", content="Who are you?"),
            Message(
                role="assistant",
                content="I am Vicuna, a language model. My friend Robert Brown says hi.",
            ),
        ],
    )
    default = next(run_pii(store_root + "/d", [rec]).records())
    assert "Vicuna" not in default.joined_text()  # spaCy tags the model name as a PERSON
    allowed = next(run_pii(store_root + "/a", [rec], allow_list=["Vicuna"]).records())
    assert "I am Vicuna" in allowed.joined_text()
    assert "Robert Brown" not in allowed.joined_text()


def test_disabled_passes_records_through(store_root):
    art = run_pii(store_root, planted(), enabled=False)
    assert [r.model_dump() for r in art.records()] == [r.model_dump() for r in planted()]
    assert art.report["enabled"] is False
    assert "off" in pii.STAGE.summary(art.report)


def test_failing_record_is_rejected_not_lost(store_root, monkeypatch):
    """An analysis error costs only its own record, which lands in rejected/ with the error."""
    real = pii.Scrubber.detect_batch

    def flaky(self, texts, keys=None):
        if any("mitochondria" in t for t in texts):
            raise ValueError("boom")
        return real(self, texts, keys)

    monkeypatch.setattr(pii.Scrubber, "detect_batch", flaky)
    art = run_pii(store_root, planted())
    assert sorted(r.id for r in art.records()) == ["c1", "p1", "t1"]
    (rej,) = list(art.rejected())
    assert (
        rej["reason"] == "pii_error" and rej["record"]["id"] == "clean" and "boom" in rej["error"]
    )
    assert art.report["rejected_by_reason"] == {"pii_error": 1}
    assert "john.smith@example.com" not in everything(art)  # the others were still scrubbed


def test_unknown_spacy_model_fails_with_a_clear_message(store_root):
    with pytest.raises(RuntimeError, match="not an installed spaCy pipeline"):
        run_pii(store_root, planted(), spacy_model="no_such_model_pkg")


def test_findings_inside_placeholders_are_dropped_or_trimmed():
    """Another NER model could tag the placeholder itself; such findings must not rewrite it."""
    from presidio_analyzer import RecognizerResult

    text = "Ask <PERSON> Smith or <PERSON>."
    inside = RecognizerResult("PERSON", 21, 29, 0.9)  # "<PERSON>" (the second)
    touching = RecognizerResult("PERSON", 4, 18, 0.9)  # "<PERSON> Smith"
    kept = pii._outside_placeholders(text, [inside, touching])
    assert [text[r.start : r.end] for r in kept] == ["Smith"]


def test_email_validation_never_touches_the_network(monkeypatch):
    """tldextract's default extractor downloads the public suffix list; ours must not."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    rec = pii._offline_email_recognizer()  # fresh: its suffix list is loaded on first use
    assert rec.validate_result("jane.doe@example.co.uk")
    assert not rec.validate_result("foo@bar.notarealtld")


def test_short_hash_salt_fails_fast(monkeypatch):
    monkeypatch.setenv(pii.SALT_ENV, "short")
    with pytest.raises(ValueError, match="TUNELINE_PII_SALT"):
        pii.operators_for(PipelineConfig.model_validate({"pii": {"operator": "hash"}}).pii)


# ------------------------------------------------------------- tuneline's recognizers


def scrub(*texts: str, key: str = "r", **pii_cfg) -> list[str]:
    """Scrubs ``texts`` with the default config (plus ``pii_cfg``), all replace operators."""
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}, **pii_cfg}}).pii
    return [t for t, *_ in pii.Scrubber(cfg).scrub_batch(list(texts), [key] * len(texts))]


@pytest.mark.parametrize(
    ("text", "value", "placeholder"),
    [
        (
            "Ship it to 742 Evergreen Terrace, Apt 3, Springfield, IL 62704 please.",
            "742 Evergreen Terrace, Apt 3, Springfield, IL 62704",
            "<STREET_ADDRESS>",
        ),
        (
            "Our office: 221B Baker Street, London NW1 6XE.",
            "221B Baker Street, London NW1 6XE",
            "<STREET_ADDRESS>",
        ),
        (
            "Bitte an Lindenstraße 23, 10969 Berlin schicken.",
            "Lindenstraße 23, 10969 Berlin",
            "<STREET_ADDRESS>",
        ),
        ("Dear Oluwaseun Adebayo,\nthanks for your note.", "Oluwaseun Adebayo", "<PERSON>"),
        ("See you then.\n\nBest regards,\nNguyen Thi Lan", "Nguyen Thi Lan", "<PERSON>"),
        (
            "My name is Siddharth Venkataraman and I need help.",
            "Siddharth Venkataraman",
            "<PERSON>",
        ),
        ("Ping me @aroha_x on there.", "@aroha_x", "<USER_HANDLE>"),
        ("I'm free after 5pm at 415-867-5309 most days.", "415-867-5309", "<PHONE_NUMBER>"),
        ("Reach the Paris office on +33 1 42 68 53 00.", "+33 1 42 68 53 00", "<PHONE_NUMBER>"),
        (
            "My profile: https://www.linkedin.com/in/amara-okafor-42",
            "linkedin.com/in/amara-okafor-42",
            "<URL>",
        ),
        ("Notes are at https://www.cs.example.edu/~jdoe/ for now.", "~jdoe", "<URL>"),
        ("I was born on March 3, 1987 in a small town.", "March 3, 1987", "<DATE_OF_BIRTH>"),
        ("DOB: 03/12/1990", "03/12/1990", "<DATE_OF_BIRTH>"),
        ("My passport number is X12345678.", "X12345678", "<US_PASSPORT>"),
        ("Driver's licence: S530-4619-2754", "S530-4619-2754", "<US_DRIVER_LICENSE>"),
        (
            "Please transfer it to DE89 3704 0044 0532 0130 00.",
            "DE89 3704 0044 0532 0130 00",
            "<IBAN_CODE>",
        ),
        (
            "Logins came from 2a02:8071:2b2:3c00::1f last night.",
            "2a02:8071:2b2:3c00::1f",
            "<IP_ADDRESS>",
        ),
    ],
)
def test_recognizers_find_their_planted_values(text, value, placeholder):
    (out,) = scrub(text)
    assert value not in out and placeholder in out, out


@pytest.mark.parametrize(
    "text",
    [
        "Edit this sentence to increase clarity.",
        "Check if the year is divisible by 4.",
        "A warehouse had 23786 boxes in May and 17509 in June. What is 23786-17509?",
        "The laptop has a 200 GB drive and 16 GB of RAM.",
        "The answer is 45321 - 1234 = 44087.",
        "Pride and Prejudice is a novel written by Jane Austen in 1813.",
        "In the story, Harry Potter learns that he is a wizard.",
        "Albert Einstein developed the theory of relativity.",
        "@property\ndef name(self):\n    return self._name",
        "The docs are at https://docs.python.org/3/library/re.html and www.wikipedia.org.",
        "The Battle of Hastings was fought on 14 October 1066.",
        "In the year 1687, Sir Isaac Newton published the Principia.",
        "5. **Model Training:** In this step, the selected model is fit to the data.",
        "2. TED Talks (ted.com): short, powerful talks on many topics.",
    ],
)
def test_look_alikes_stay_untouched(text):
    assert scrub(text) == [text]


def test_no_capital_letter_means_no_ner_pass_but_patterns_still_run():
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}}}).pii
    s = pii.Scrubber(cfg)
    out = s.scrub_batch(["call me on my cell phone 212-555-0143 tonight", "nothing to see here"])
    assert out[0][0] == "call me on my cell phone <PHONE_NUMBER> tonight"
    assert out[1][0] == "nothing to see here"
    assert s.skipped_ner == 1  # the first string got a tokenizer-only pass; the second none


# ------------------------------------------------------------------------ surrogates


def test_surrogate_is_consistent_across_records_and_deterministic(store_root):
    rec = Record(
        id="s1",
        kind="chat",
        messages=[
            Message(
                role="user", content="Hi, I'm Amara Okafor. Please ask Robert Brown to call me."
            ),
            Message(role="assistant", content="Of course, Amara Okafor. I will tell Robert Brown."),
        ],
    )
    a = next(run_pii(store_root + "/a", [rec]).records())  # default: PERSON -> surrogate
    b = next(run_pii(store_root + "/b", [rec]).records())
    assert a.model_dump() == b.model_dump()  # keyed by type, value and salt: reproducible
    text = a.joined_text()
    assert "Amara Okafor" not in text and "Robert Brown" not in text and "<PERSON>" not in text
    from tasks.pii.surrogate import fake

    salt = pii.pii_salt()
    amara, robert = fake("PERSON", "Amara Okafor", salt), fake("PERSON", "Robert Brown", salt)
    assert amara != robert and re.fullmatch(r"[A-Z][\w-]+( [\w -]+)+", amara)
    # the same person gets the same fake in both turns
    assert a.messages[0].content.count(amara) == 1 and a.messages[1].content.count(amara) == 1
    assert robert in a.messages[0].content and robert in a.messages[1].content


def test_two_copies_of_a_record_stay_identical_after_scrubbing(store_root, monkeypatch):
    """The fake is the value's, not the record's: a duplicate stays a duplicate for dedup."""
    question = (
        "Janet Okonjo-Iweala's ducks lay 16 eggs per day. Janet eats three for breakfast and "
        "gives the rest to Amara Okafor. Call Janet at 415-555-0132 if you have questions."
    )
    recs = [Record(id=f"r{i}", kind="text", text=question) for i in range(2)]
    out = list(run_pii(store_root + "/a", recs).records())
    assert out[0].text == out[1].text and "Janet" not in out[0].text and "Okafor" not in out[0].text
    # a different salt gives other fakes, the same in both copies again
    monkeypatch.setenv(pii.SALT_ENV, "another-secret-salt-of-32-bytes!")
    other = list(run_pii(store_root + "/b", recs).records())
    assert other[0].text == other[1].text != out[0].text


def test_surrogate_fakes_have_the_value_shape():
    from tasks.pii.residual import luhn_ok
    from tasks.pii.surrogate import fake

    phone = fake("PHONE_NUMBER", "+1 (415) 555-2671", "k")
    assert re.fullmatch(r"\+\d \(\d{3}\) \d{3}-\d{4}", phone) and phone != "+1 (415) 555-2671"
    assert luhn_ok(fake("CREDIT_CARD", "4111 1111 1111 1111", "k"))
    assert fake("EMAIL_ADDRESS", "a@b.com", "k").endswith((".com", ".org", ".net"))
    assert fake("PERSON", "Amara Okafor", "k") == fake("PERSON", "Amara Okafor", "k")


def test_surrogate_as_default_operator_keeps_text_natural(store_root):
    art = run_pii(store_root, planted(), operator="surrogate", operators={})
    text = everything(art)
    assert "<" not in text  # no placeholders anywhere
    for value in EMAILS + PHONES + NAMES:
        assert value not in text
    assert art.report["residual_total"] == 0  # fakes (example.* emails) are not counted as left


# ---------------------------------------------------------------------- residual check


def test_residual_counts_validated_values_only():
    from tasks.pii.residual import residual

    text = (
        "card 4111 1111 1111 1111, bad card 4111 1111 1111 1112, iban DE89370400440532013000, "
        "bad iban DE00370400440532013000, ssn 219-09-9999, bad ssn 000-12-3456, ip 81.2.69.160, "
        "not ip 999.1.1.1, loopback 127.0.0.1, v6 2a02:8071:2b2:3c00::1f, mail jane@corp.de, "
        "doc mail jane@example.com"
    )
    assert residual(text) == {
        "CREDIT_CARD": 1, "IBAN_CODE": 1, "US_SSN": 1, "IP_ADDRESS": 2, "EMAIL_ADDRESS": 1,
    }  # fmt: skip
    assert residual("mail jane@corp.de", ignore={"jane@corp.de"}) == {}


def test_residual_does_not_take_sums_isbns_or_bar_codes_for_cards():
    """Luhn passes one number in ten: these Luhn-valid numbers from public sets (a DPO
    arithmetic prompt, a library record in Common Crawl) are not cards."""
    from tasks.pii.residual import luhn_ok, residual

    look_alikes = [
        "256626720691 + 1646615806005 =\n\nThe result is:\n\n4212883012996",
        "472547338\n+960397912423686\n-------\n1007411131329104\n\nSo the sum is 1007411131329104.",
        "Isbn\n9780240522043\nIsbn Type\n(pbk.)",
        "Bar code\n  • 31223125214735\n  • 31223125214768",
        "SAR QSAR Environ Res. 2009, 20: 241-266. 10.1080/10629360902949567.",
        "1054 1055 1056 1057 1058 1059 1060 1061",
    ]
    assert luhn_ok("4212883012996") and luhn_ok("9780240522043")  # the checksum alone passes them
    assert [residual(t) for t in look_alikes] == [{}] * len(look_alikes)
    for card in ("4111 1111 1111 1111", "5500-0000-0000-0004", "3782 822463 10005", "4111111111111111"):
        assert residual(f"my card: {card}.") == {"CREDIT_CARD": 1}, card


def test_residual_above_max_fails_the_stage_naming_types(store_root):
    from tuneline.errors import InputError

    recs = [Record(id="e", kind="text", text="Write to john.smith@acme-corp.com or jane@corp.de.")]
    with pytest.raises(InputError, match=r"residual gate.*2 validated PII values.*EMAIL_ADDRESS 2"):
        run_pii(store_root + "/f", recs, entities=["PERSON"])
    art = run_pii(store_root + "/ok", recs, entities=["PERSON"], max_residual=2)
    assert art.report["residual"] == {"EMAIL_ADDRESS": 2} and art.report["residual_total"] == 2
    assert "values left (max 2)" in pii.STAGE.summary(art.report)
    assert "john.smith" not in json.dumps(art.report)  # counts, never values
    clean = run_pii(store_root + "/c", recs)
    assert clean.report["residual_total"] == 0


@pytest.mark.slow
def test_workers_give_the_same_output_as_one_process(store_root, monkeypatch):
    """Ranks take turns on 3-record batches and their parts merge back in input order."""
    monkeypatch.setattr(pii, "MIN_PARALLEL", 4)
    monkeypatch.setattr(pii, "BATCH_RECORDS", 3)
    recs = [r.model_copy(update={"id": f"{r.id}-{k}"}) for k in range(3) for r in planted()]
    outs = {}
    for workers in (1, 2, 3):
        cfg = PipelineConfig.model_validate(
            {"run": {"artifact_root": f"{store_root}/{workers}", "workers": workers}}
        )
        art = run_plain(pii, cfg, [input_artifact(f"{store_root}/{workers}", "ingest", recs)])
        outs[workers] = ([r.model_dump() for r in art.records()], art.report["entities_removed"])
    assert [r["id"] for r in outs[1][0]] == [r.id for r in recs]
    assert outs[1][1]["PERSON"] > 0
    assert outs[2] == outs[1] and outs[3] == outs[1]


def test_pii_workers_setting_moved_to_run():
    with pytest.warns(DeprecationWarning, match="run.workers"):
        cfg = PipelineConfig.model_validate({"pii": {"workers": 2}})
    assert "workers" not in cfg.pii.model_dump()


def test_pattern_names_stop_at_the_first_word_that_is_no_name():
    out = scrub(
        "Thanks,\nAnneke van der Berg The longest word is here.",
        "Best regards,\nConnor O'Brien",
    )
    assert out == ["Thanks,\n<PERSON> The longest word is here.", "Best regards,\n<PERSON>"]


def test_an_allowed_word_keeps_a_longer_match_that_contains_it(tmp_path):
    cfg = PipelineConfig()
    cfg.run.artifact_root = str(tmp_path / "artifacts")
    cfg.pii.allow_list = ["Northwind"]
    text = "Thanks for your order.\n\nBest regards,\nNorthwind Outfitters Support"
    art = run_plain(pii, cfg, [input_artifact(cfg.run.artifact_root, "ingest", [Record(id="r", kind="text", text=text)])])
    assert [r.text for r in art.records()] == [text]


@pytest.mark.slow
def test_pii_on_a_local_ray_instance_matches_local_processes(store_root, monkeypatch, local_ray):
    """run.executor=ray: the ranks run as Ray tasks (DataTrove's RayPipelineExecutor) and their
    parts merge into the same artifact as with local processes."""
    monkeypatch.setattr(pii, "MIN_PARALLEL", 4)
    monkeypatch.setattr(pii, "BATCH_RECORDS", 4)
    recs = [r.model_copy(update={"id": f"{r.id}-{k}"}) for k in range(2) for r in planted()]
    outs = {}
    for executor in ("local", "ray"):
        root = f"{store_root}/{executor}"
        cfg = PipelineConfig.model_validate(
            {"run": {"artifact_root": root, "executor": executor, "workers": 2}}
        )
        art = run_plain(pii, cfg, [input_artifact(root, "ingest", recs)])
        outs[executor] = [r.model_dump() for r in art.records()], art.report["entities_removed"]
    assert outs["ray"] == outs["local"]
    assert len(outs["ray"][0]) == len(recs) and outs["ray"][1]["PERSON"] > 0
    # DataTrove's Ray executor ran the ranks: its logs are there, one per rank
    assert local_ray.is_initialized()


def test_given_names_find_names_ner_misses_and_leave_places_and_words():
    out = scrub(
        "Yesterday Giulia Romano and I went to the bank together.",
        "The meeting ran late because Aroha Ngata had more questions.",
    )
    assert out[0] == "Yesterday <PERSON> and I went to the bank together."
    assert out[1] == "The meeting ran late because <PERSON> had more questions."
    # the gazetteer itself: an English word is no given name, a place word or a verb no surname
    from tasks.pii.recognizers import GivenNameRecognizer

    rec = next(
        r
        for r in pii.analyzer_for(PipelineConfig().pii.spacy_model).registry.recognizers
        if isinstance(r, GivenNameRecognizer)
    )
    text = "Write the Charity Name here. Giulia Station is new. Ask Giulia See. The Aroha Ngata novel."
    assert [text[r.start : r.end] for r in rec.analyze(text, ["PERSON"])] == []
    ok = "Yes, Aroha Ngata came."
    assert [ok[r.start : r.end] for r in rec.analyze(ok, ["PERSON"])] == ["Aroha Ngata"]


def test_ner_runs_on_windows_around_possible_names_only():
    starters = pii.sentence_starters(pii.analyzer_for(PipelineConfig().pii.spacy_model).nlp_engine.nlp["en"])
    text = "Describe the process in detail. The weather was fine and warm today. We met Dmitri Sokolov there."
    segments = pii.ner_segments(text, starters, window=4)
    assert [seg for _, seg in segments] == ["We met Dmitri Sokolov there."]
    assert all(text[start : start + len(seg)] == seg for start, seg in segments)
    assert pii.ner_segments("the end. i think so.", starters) == []


# ------------------------------------------------------------------ second pass, shapes


@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "4111.1111.1111.1111",
     "3782 822463 10005", "378282246310005", "5500-0000-0000-0004"],
)  # fmt: skip
def test_validated_cards_are_removed_in_the_stage_in_every_format(store_root, card):
    """Whatever the analyzer misses, the second pass scrubs: the default gate then passes."""
    text = f"Please charge my card {card} for the order, thanks."
    art = run_pii(store_root, [Record(id="c", kind="text", text=text)])
    out = next(art.records()).text
    assert card not in out and "".join(c for c in card if c.isdigit()) not in out
    assert out.startswith("Please charge my card ") and out.endswith(" for the order, thanks.")
    assert art.report["residual_total"] == 0


def test_second_pass_scrubs_what_the_analyzer_left_and_counts_it(store_root):
    # CREDIT_CARD is left out of the analyzer's entities but the residual pass validates it:
    # pii.entities still names it, so the second pass scrubs it with the configured operator.
    scrubber = pii.Scrubber(PipelineConfig.model_validate({"pii": {"operators": {}}}).pii)
    new, *_, left = scrubber.scrub_batch(["dotted card 4111.1111.1111.1111 here"])[0]
    assert new == "dotted card <CREDIT_CARD> here" and left == {}
    assert scrubber.second_pass == {"CREDIT_CARD": 1}


def test_arithmetic_next_to_card_length_numbers_stays(store_root):
    texts = [
        "472547338 + 960397912423686 = 961,  the sum is 1007411131329104.",
        "Isbn\n9780240522043\nIsbn Type\n(pbk.)",
    ]
    recs = [Record(id=f"a{i}", kind="text", text=t) for i, t in enumerate(texts)]
    out = [r.text for r in run_pii(store_root, recs).records()]
    assert out == texts


def test_phone_numbers_the_library_refuses_are_still_found():
    """555-867-5309 has an unassigned exchange, so phonenumbers refuses it; its 3-3-4 shape
    (and a phone word around other shapes) says phone."""
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}}}).pii
    s = pii.Scrubber(cfg)
    texts = [
        "Jenny, I got your number: 555-867-5309.",
        "Phone: 88 165 40 96",
        "They're not answering at 96 237271",
        "Fax 730.347.5681x8340 or mobile (212) 555-0143.",
        "The answer is 555-867 = -312.",
        "Version 3.14.15 was released on 2021-03-04.",
    ]
    out = [o[0] for o in s.scrub_batch(texts)]
    assert out[:4] == [
        "<PERSON>, I got your number: <PHONE_NUMBER>.",
        "Phone: <PHONE_NUMBER>",
        "They're not answering at <PHONE_NUMBER>",
        "Fax <PHONE_NUMBER> or mobile <PHONE_NUMBER>.",
    ]
    assert out[4:] == texts[4:]


def test_names_in_text_written_without_capitals_are_found():
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}}}).pii
    s = pii.Scrubber(cfg)
    out = [o[0] for o in s.scrub_batch([
        "follow up with tracy wiśniewska in 2 months please.",
        "hi, my name is rebecca lafontaine and my order never came",
        "the mitochondria is the powerhouse of the cell and makes energy.",
    ])]  # fmt: skip
    assert "tracy" not in out[0] and "wiśniewska" not in out[0]
    assert "lafontaine" not in out[1]
    assert out[2] == "the mitochondria is the powerhouse of the cell and makes energy."


@pytest.mark.parametrize(
    "text, address",
    [
        ("Ship it to 742 Evergreen Terrace, Springfield, IL 62704 please.", "742 Evergreen Terrace, Springfield, IL 62704"),
        ("Meine Adresse: Holmevej 34, 2100 København.", "Holmevej 34"),
        ("Send a new one to P.O. Box 108 as before.", "P.O. Box 108"),
        ("Lina Berg\n12 Via dalla Staziun 87\nApt. 4\nDozwil\nSwitzerland 8580", "12 Via dalla Staziun 87\nApt. 4\nDozwil\nSwitzerland 8580"),
        ("Unit 9104 Box 2779\nDPO AP 29547", "Unit 9104 Box 2779\nDPO AP 29547"),
        ("My zip code is 49865", "49865"),
    ],
)  # fmt: skip
def test_address_grammar(text, address):
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}}}).pii
    out = pii.Scrubber(cfg).scrub_batch([text])[0][0]
    assert address not in out and "<STREET_ADDRESS>" in out, out


@pytest.mark.parametrize(
    "text",
    [
        "The laptop has a 200 GB drive and 16 GB of RAM.",
        "Upgrade from Windows 10 to Windows 11 and Python 3 to Python 4.",
        "Chapter 3 covers the way to go; see page 12.",
        "During 2020 the team grew to 45 people on 3 continents.",
    ],
)
def test_address_look_alikes_stay(text):
    cfg = PipelineConfig.model_validate({"pii": {"operators": {}}}).pii
    assert pii.Scrubber(cfg).scrub_batch([text])[0][0] == text


def test_a_name_found_in_one_record_is_scrubbed_in_all(store_root):
    """Where a cue says name ("My name is ..."), the name is found; in a bare "Invoice: ..."
    line it is not. The merge scrubs it there too; a wrong span of English words (NER's
    "Publication Note" in a catalogue line) stays in its own record."""
    alone = run_pii(store_root + "/alone", [Record(id="b", kind="text", text="Invoice: Mimount Belhaj")], operators={})
    assert next(alone.records()).text == "Invoice: Mimount Belhaj"  # missed on its own
    recs = [
        Record(id="a", kind="text", text="My name is Mimount Belhaj and I need help."),
        Record(id="b", kind="text", text="Invoice: Mimount Belhaj"),
        Record(id="c", kind="text", text="Steve Caplin Label Publication Note"),
        Record(id="d", kind="text", text="See the Publication Note on page 2."),
    ]
    art = run_pii(store_root + "/all", recs, operators={})
    out = {r.id: r.text for r in art.records()}
    assert out["a"] == "My name is <PERSON> and I need help." and out["b"] == "Invoice: <PERSON>"
    assert out["d"] == "See the Publication Note on page 2."
    assert art.report["names_scrubbed_everywhere"] >= 2  # Mimount Belhaj, Steve Caplin
