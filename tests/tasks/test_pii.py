"""pii stage: planted emails, phone numbers and names leave every field; config is respected."""

from __future__ import annotations

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
    art = run_pii(store_root, planted())
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
    first = list(run_pii(store_root + "/a", planted()).records())
    second = run_pii(store_root + "/b", first)
    assert [r.joined_text() for r in second.records()] == [r.joined_text() for r in first]
    assert second.report["entities_removed_total"] == 0


def test_mask_and_hash_change_the_output_form(store_root):
    masked = everything(run_pii(store_root + "/m", planted(), operator="mask"))
    assert "*" * len("john.smith@example.com") in masked
    assert "<EMAIL_ADDRESS>" not in masked and "john.smith" not in masked

    hashed_art = run_pii(store_root + "/h", planted(), operator="hash")
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
        for r in run_pii(store_root + "/r", planted(), operator="redact").records()
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
    real = pii.Scrubber.scrub_batch

    def flaky(self, texts):
        if any("mitochondria" in t for t in texts):
            raise ValueError("boom")
        return real(self, texts)

    monkeypatch.setattr(pii.Scrubber, "scrub_batch", flaky)
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
