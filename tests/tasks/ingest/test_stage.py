"""ingest, the stage: the demo corpus end to end (planted bad rows rejected for the right
reason, nothing vanishes), every shape normalised through ``run``, and the artifact key."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig
from tasks.ingest.config import SourceFormat
from tests.support.ingest import LENIENT, find, make_cfg, rejected_by_text, run_ingest, write_jsonl
from tuneline.artifacts import Artifact
from tuneline.config import PipelineConfig
from tuneline.errors import InputError
from tuneline.shapes import SHAPES

# ------------------------------------------------------------------------------ demo corpus


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Artifact:
    repo = Path(__file__).resolve().parents[3]
    defaults = IngestConfig()
    sources = [SourceConfig(path=str(repo / s.path), format=s.format) for s in defaults.sources]
    cfg = PipelineConfig(ingest=IngestConfig(sources=sources))
    return run_ingest(tmp_path_factory.mktemp("demo"), cfg)


def test_demo_counts_add_up(demo):
    report = demo.report
    kept, rejected = list(demo.records()), list(demo.rejected())
    assert report["records_read"] == len(kept) + len(rejected) == 98
    assert [s["read"] for s in report["sources"]] == [67, 13, 14, 4]
    assert sum(s["kept"] for s in report["sources"]) == len(kept) == report["records_out"]
    assert sum(report["rejected_by_reason"].values()) == len(rejected)
    assert len({r.id for r in kept}) == len(kept), "record ids must be unique"
    assert "| rejected because |" in ingest.STAGE.summary(report)


def test_demo_planted_rows_rejected_for_the_right_reason(demo):
    rows = rejected_by_text(demo)
    planted = {
        "Cierre todas las cremalleras": ("language", "es"),
        "Vous pouvez retourner": ("language", "fr"),
        "Bürsten Sie nach jeder Tour": ("language", "de"),
        "Der Standardversand": ("language", "de"),
        "dealing with wasps": ("refusal", None),
        "I'm sorry, but I cannot help with that request.": ("refusal", None),
        "real-time information about trail crowds": ("refusal", None),
        "re-waterproof my gaiters": ("broken_utf8", None),
        "itâ€™s easy": ("broken_utf8", None),
        '"content": "Hello!"': ("too_short", None),
        '"content": "Welcome!"': ("too_short", None),
        "cheap hiking boots": ("quality", None),
        "warranty on trekking poles": ("unparseable", None),
        "Tell me about the Ember 20 sleeping bag.": ("empty", None),
    }
    for snippet, (reason, lang) in planted.items():
        row = find(rows, snippet)
        assert row["reason"] == reason, f"{snippet!r}: {row['reason']} != {reason}"
        if lang:
            assert row["lang"] == lang and row["score"] > 0.65
    # and nothing else: every clean record survived
    assert len(rows) == len(planted)


def test_demo_keeps_pii_duplicates_and_shapes_for_later_stages(demo):
    kept = list(demo.records())
    by_kind = Counter(r.kind for r in kept)
    assert by_kind == {"chat": 65, "preference": 14, "text": 5}
    joined = "\n".join(r.joined_text() for r in kept)
    for pii in (
        "maria.gonzalez@example.com",
        "+1 415-555-0123",
        "jane.doe@example.com",
        "Aisha Khan",
    ):
        assert pii in joined  # ingest keeps PII: the pii stage removes it
    # exact duplicates reach dedup unchanged
    policy = [
        r
        for r in kept
        if r.messages and r.messages[0].content == "What is Northwind Outfitters' return policy?"
    ]
    assert (
        len(policy) == 2
        and policy[0].messages == policy[1].messages
        and policy[0].id != policy[1].id
    )
    assert all(r.meta["lang"] == "en" and r.meta["lang_score"] > 0.65 for r in kept)

    tool = next(r for r in kept if r.meta.get("tools"))
    assert [m.role for m in tool.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert '"lookup_order"' in tool.messages[2].content and '"shipped"' in tool.messages[3].content

    hh = next(r for r in kept if r.kind == "preference" and len(r.messages) == 3)
    assert [m.role for m in hh.messages] == ["user", "assistant", "user"]
    assert hh.messages[-1].content == "How heavy should my pack be?"
    assert hh.chosen.startswith("For a first overnight trip") and "Human:" not in hh.chosen
    assert hh.rejected == "Heavy is fine, just bring everything you own."


def test_demo_pages_lose_their_boilerplate(demo):
    pages = [r for r in demo.records() if r.meta["format"] == "html"]
    assert sorted(r.meta["file"] for r in pages) == [
        "boot-fitting-guide.html",
        "down-jacket-care.html",
        "layering-basics.html",
        "leave-no-trace-camping.html",
    ]
    for page in pages:
        assert page.kind == "text" and len(page.text.split()) > 150
        assert page.meta["title"] and page.meta["url"].startswith(
            "https://www.northwind-outfitters.example/"
        )
        for chrome in (
            "We use cookies",
            "Subscribe to our newsletter",
            "All rights reserved",
            "Shop the story",
            "Free shipping on orders over",
            "Find a Store",
        ):
            assert chrome not in page.text, f"{page.meta['file']} kept boilerplate {chrome!r}"
    care = next(p for p in pages if p.meta["file"] == "down-jacket-care.html")
    assert "two or three clean tennis balls" in care.text


# ----------------------------------------------------------------------------------- shapes


def test_alpaca_messages_and_text_rows_normalise(tmp_path):
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {
                "instruction": "Summarize the review.",
                "input": "Great boots, but they run small.",
                "output": "Good boots that run small.",
                "system": "Be brief.",
            },
            {
                "instruction": "Name two layers.",
                "input": "",
                "output": "A base layer and a shell.",
                "history": [["What is a base layer?", "The layer next to your skin."]],
            },
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "How do I dry a tent?"}]},
                    {"role": "assistant", "content": "Hang it until it is completely dry."},
                ]
            },
            {"text": "A plain document about drying tents after a rainy weekend."},
        ],
    )
    art = run_ingest(tmp_path / "a", make_cfg([src], **LENIENT))
    alpaca, history, messages, text = list(art.records())
    assert [(m.role, m.content) for m in alpaca.messages] == [
        ("system", "Be brief."),
        ("user", "Summarize the review.\n\nGreat boots, but they run small."),
        ("assistant", "Good boots that run small."),
    ]
    assert [m.role for m in history.messages] == ["user", "assistant", "user", "assistant"]
    assert messages.messages[0].content == "How do I dry a tent?"
    assert text.kind == "text" and text.text.startswith("A plain document")
    assert [r.meta["format"] for r in (alpaca, history, messages, text)] == [
        "alpaca",
        "alpaca",
        "messages",
        "text",
    ]
    assert [r.meta["index"] for r in (alpaca, history, messages, text)] == [0, 1, 2, 3]


def test_sharegpt_tool_calls_map_to_assistant_and_tool(tmp_path, shared_data):
    rows = json.loads((shared_data / "instruction/sharegpt_toolcall_demo.json").read_text())[:5]
    src = tmp_path / "tools.json"
    src.write_text(json.dumps({"data": rows}))  # an object holding the list
    art = run_ingest(
        tmp_path / "a", make_cfg([SourceConfig(path=str(src), format="sharegpt")], **LENIENT)
    )
    records = list(art.records())
    assert len(records) == 5
    for row, rec in zip(rows, records, strict=True):
        expected = [
            {
                "human": "user",
                "gpt": "assistant",
                "function_call": "assistant",
                "observation": "tool",
            }[t["from"]]
            for t in row["conversations"]
        ]
        assert [m.role for m in rec.messages] == expected
        assert [m.content for m in rec.messages] == [t["value"] for t in row["conversations"]]
        assert rec.meta["tools"] == row["tools"]


def test_preference_pairs_from_dicts_and_hh_transcripts(tmp_path, shared_data):
    dpo = json.loads((shared_data / "preference/dpo_en_demo.json").read_text())[:5]
    with gzip.open(shared_data / "preference/hh_rlhf_harmless_test.jsonl.gz", "rt") as fh:
        hh = [json.loads(next(fh)) for _ in range(20)]
    src = write_jsonl(tmp_path / "pairs.jsonl", dpo + hh)
    art = run_ingest(
        tmp_path / "a",
        make_cfg(
            [SourceConfig(path=str(src), format="preference")], drop_refusals=False, **LENIENT
        ),
    )
    records = {r.meta["index"]: r for r in art.records()}
    for i, row in enumerate(dpo):
        rec = records[i]
        assert [m.content for m in rec.messages] == [t["value"] for t in row["conversations"]]
        assert rec.chosen == row["chosen"]["value"] and rec.rejected == row["rejected"]["value"]
    hh_kept = [records[i] for i in range(len(dpo), len(dpo) + len(hh)) if i in records]
    assert len(hh_kept) >= 18  # a transcript with an empty last reply is rejected as empty
    for rec in hh_kept:
        row = hh[rec.meta["index"] - len(dpo)]
        assert rec.messages[-1].role == "user" and rec.messages[0].role == "user"
        assert row["chosen"].rstrip().endswith(rec.chosen.strip()[-40:])
        assert row["rejected"].rstrip().endswith(rec.rejected.strip()[-40:])
        assert "\n\nHuman:" not in rec.chosen and "\n\nAssistant:" not in rec.chosen
        prompt = "".join(
            f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in rec.messages
        )
        assert row["chosen"].startswith(prompt) and row["rejected"].startswith(prompt)


def test_hh_transcripts_that_diverge_early_are_unparseable(tmp_path):
    src = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Boots?\n\nAssistant: Try the Ridgeback.",
                "rejected": "\n\nHuman: Hi\n\nAssistant: What?",
            }
        ],
    )
    art = run_ingest(tmp_path / "a", make_cfg([src], **LENIENT))
    (row,) = art.rejected()
    assert row["reason"] == "unparseable" and "diverge" in row["error"]


def test_every_configurable_format_has_a_shape_or_a_reader():
    assert set(get_args(SourceFormat)) == set(SHAPES) | {"auto", "html"}


# ------------------------------------------------------------------------------------- keys


def test_source_keys_follow_file_bytes_not_paths(tmp_path):
    src = write_jsonl(tmp_path / "rows.jsonl", [{"text": "first version of the file"}])
    cfg = make_cfg([src])
    before = ingest.source_keys(cfg)
    assert ingest.source_keys(cfg) == before
    write_jsonl(src, [{"text": "second version of the file"}])
    after = ingest.source_keys(cfg)
    assert after != before
    assert ingest.STAGE.key(cfg, []) != ingest.STAGE.key(make_cfg([src], min_chars=5), [])
    moved = tmp_path / "moved.jsonl"
    src.rename(moved)
    assert ingest.source_keys(make_cfg([moved])) == after


def test_missing_source_names_the_config_field(tmp_path):
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"text": "a perfectly fine record"}])
    cfg = make_cfg([ok, tmp_path / "nope.jsonl"])
    with pytest.raises(
        InputError, match=r"ingest\.sources\[1\]\.path: .*nope\.jsonl.* does not exist"
    ):
        ingest.source_keys(cfg)
    with pytest.raises(InputError, match=r"ingest\.sources\[1\]\.path"):
        run_ingest(tmp_path / "a", cfg)
    assert not (tmp_path / "a" / "ingest").exists() or not list(
        (tmp_path / "a" / "ingest").iterdir()
    )


def test_same_file_listed_twice_is_a_config_error(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "same bytes in both files"}])
    b = tmp_path / "b.jsonl"
    b.write_bytes(a.read_bytes())
    with pytest.raises(
        InputError, match=r"ingest\.sources\[1\]\.path .* same content as ingest\.sources\[0\]"
    ):
        ingest.source_keys(make_cfg([a, b]))


def test_run_stage_reuses_until_a_source_changes(tmp_path):
    from tuneline.stage import execute

    src = write_jsonl(
        tmp_path / "rows.jsonl",
        [{"instruction": "Is shipping free?", "output": "Yes, over $75 in the US."}],
    )
    cfg = make_cfg([src]).model_copy(
        update={
            "run": PipelineConfig().run.model_copy(update={"artifact_root": str(tmp_path / "art")})
        }
    )
    first = execute(ingest.STAGE, cfg, [])
    assert not first.reused and first.report["records_kept"] == 1
    assert execute(ingest.STAGE, cfg, []).reused
    write_jsonl(
        src, [{"instruction": "Is shipping free?", "output": "Only for Trail Points members."}]
    )
    third = execute(ingest.STAGE, cfg, [])
    assert not third.reused and third.ref.key != first.ref.key
