"""The reliability round's PII probes (issue 16, item 5): a dotted card and a phone number
that phonenumbers calls invalid went through both the scrub and its residual gate."""

from __future__ import annotations

from tasks import pii
from tests.support.stages import input_artifact, run_plain
from tuneline.config import PipelineConfig
from tuneline.records import Message, Record


def test_dotted_card_and_unassigned_phone_are_scrubbed_and_the_gate_passes(tmp_path):
    root = str(tmp_path)
    rec = Record(
        id="probe",
        kind="chat",
        messages=[
            Message(role="user", content="Charge 4111.1111.1111.1111 and call me on 555-867-5309."),
            Message(role="assistant", content="Done. I will call 555-867-5309 tomorrow."),
        ],
    )
    cfg = PipelineConfig.model_validate({"run": {"artifact_root": root}})  # defaults: gate 0
    art = run_plain(pii, cfg, [input_artifact(root, "ingest", [rec])])
    text = next(art.records()).joined_text()
    for value in ("4111.1111.1111.1111", "4111", "555-867-5309", "867"):
        assert value not in text, text
    assert "<CREDIT_CARD>" in text and text.count("<PHONE_NUMBER>") == 2
    assert art.report["residual_total"] == 0
