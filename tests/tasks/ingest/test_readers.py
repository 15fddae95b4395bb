"""ingest.readers: each kind of source yields rows, one bad row costs one record, and the
HTML reader keeps a page's main text."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from tasks.ingest import SourceConfig
from tasks.ingest.readers import RAW_KEEP_CHARS, read_source
from tests.support.ingest import LENIENT, make_cfg, run_ingest

# ---------------------------------------------------------------------------------- dispatch


def test_jsonl_rows_skip_blank_lines_and_keep_bad_ones_as_errors(tmp_path):
    path = tmp_path / "rows.ndjson"
    path.write_bytes(b'{"text": "one"}\r\n\n  \n{"text": "two"}\n{"cut\n\xff\n')
    rows = list(read_source(path, "auto"))
    assert [r.index for r in rows] == [0, 1, 2, 3]  # blank lines are not rows
    assert [r.value for r in rows[:2]] == [{"text": "one"}, {"text": "two"}]
    assert rows[2].error == "unparseable" and rows[2].raw == '{"cut'
    assert rows[3].error == "broken_utf8" and rows[3].detail == "invalid UTF-8 at byte 0"


def test_json_rows_come_from_a_list_or_the_first_list_in_an_object(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"text": "a"}, {"text": "b" * 5000}]))
    (tmp_path / "obj.json").write_text(json.dumps({"version": 2, "rows": [{"text": "c"}]}))
    rows = list(read_source(tmp_path / "list.json", "auto"))
    assert [r.value["text"][:1] for r in rows] == ["a", "b"]
    assert len(rows[1].raw) == RAW_KEEP_CHARS  # the rejected shard keeps a bounded excerpt
    assert [r.value for r in read_source(tmp_path / "obj.json", "auto")] == [{"text": "c"}]
    (tmp_path / "none.json").write_text(json.dumps({"version": 2}))
    with pytest.raises(ValueError, match="without a list of records"):
        list(read_source(tmp_path / "none.json", "auto"))


def test_pages_are_a_folder_sorted_by_path_or_a_single_file(tmp_path):
    (tmp_path / "site" / "b").mkdir(parents=True)
    for name in ("b/z.htm", "a.HTML", "notes.txt"):
        (tmp_path / "site" / name).write_text(f"<p>{name}</p>")
    rows = list(read_source(tmp_path / "site", "auto"))  # a folder is pages whatever the format
    assert [(r.index, r.raw) for r in rows] == [(0, "a.HTML"), (1, "b/z.htm")]
    assert rows[1].html == b"<p>b/z.htm</p>"
    (one,) = read_source(tmp_path / "site" / "b" / "z.htm", "html")
    assert one.raw == "z.htm"


def test_unknown_file_types_and_html_without_pages_say_what_is_accepted(tmp_path):
    (tmp_path / "rows.csv").write_text("text\nhello\n")
    (tmp_path / "rows.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(ValueError, match=r"unsupported file type; use \.jsonl"):
        read_source(tmp_path / "rows.csv", "auto")
    with pytest.raises(ValueError, match="format html needs a folder of .html/.htm pages"):
        read_source(tmp_path / "rows.jsonl", "html")


# ------------------------------------------------------------------------ through the stage


def test_parquet_and_gzip_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    conv = [
        {"from": "human", "value": "Do the Ridgeback boots run small?"},
        {"from": "gpt", "value": "Yes, about half a size; most people size up."},
    ]
    pq.write_table(
        pa.Table.from_pylist([{"conversations": conv, "id": "c1"}]), tmp_path / "chats.parquet"
    )
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as fh:
        fh.write(
            json.dumps({"instruction": "Is shipping free?", "output": "Over $75 it is, in the US."})
            + "\n"
        )
    art = run_ingest(
        tmp_path / "a",
        make_cfg([tmp_path / "chats.parquet", tmp_path / "rows.jsonl.gz"], **LENIENT),
    )
    parquet, gz = list(art.records())
    assert [m.role for m in parquet.messages] == ["user", "assistant"] and parquet.meta[
        "source_id"
    ] == "c1"
    assert gz.messages[1].content == "Over $75 it is, in the US."


def test_bad_rows_are_rejected_one_by_one(tmp_path):
    good = {"instruction": "How do I wash a fleece?", "output": "Cold, gentle cycle, no softener."}
    lines = [
        json.dumps(good).encode(),
        b'{"instruction": "caf\xe9 \xff", "output": "x"}',  # not UTF-8
        b'{"instruction": "cut off',  # not JSON
        json.dumps({"instruction": "Rate it", "output": ["not", "a", "string"]}).encode(),
        json.dumps({"conversations": [{"from": "narrator", "value": "Once upon a time"}]}).encode(),
        json.dumps({"title": "no known keys"}).encode(),
        json.dumps(["a list, not an object"]).encode(),
        json.dumps(
            {"instruction": "Any refund?", "output": "I\u2019m sorry, but I cannot help with that."}
        ).encode(),
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    art = run_ingest(tmp_path / "a", make_cfg([tmp_path / "bad.jsonl"], languages=[]))
    assert [r.meta["index"] for r in art.records()] == [0]
    rejected = sorted(
        art.rejected(),
        key=lambda r: r["record"].get("index", r["record"].get("meta", {}).get("index")),
    )
    assert [r["reason"] for r in rejected] == [
        "broken_utf8",
        "unparseable",
        "unparseable",
        "unparseable",
        "unparseable",
        "unparseable",
        "refusal",
    ]
    errors = [r.get("error", "") for r in rejected]
    assert "bad JSON" in errors[1]
    assert "output must be a string" in errors[2]
    assert "unknown speaker 'narrator'" in errors[3]
    assert "cannot tell the shape" in errors[4]
    assert "JSON object" in errors[5]
    assert rejected[0]["record"]["raw"].startswith(
        '{"instruction": "caf\\xe9'
    )  # the bad bytes stay visible


def test_broken_bytes_in_a_json_file_cost_one_record(tmp_path):
    rows = [
        {
            "instruction": f"Question number {i} about tents?",
            "output": f"Answer number {i} about tents.",
        }
        for i in range(3)
    ]
    raw = json.dumps(rows).encode().replace(b"Answer number 1", b"Answer n\xfamber 1")
    (tmp_path / "rows.json").write_bytes(raw)
    art = run_ingest(tmp_path / "a", make_cfg([tmp_path / "rows.json"], **LENIENT))
    assert [r.meta["index"] for r in art.records()] == [0, 2]
    (row,) = art.rejected()
    assert row["reason"] == "broken_utf8" and "\ufffd" in row["sample"]


def test_trafilatura_keeps_main_text_and_drops_boilerplate(tmp_path, shared_data):
    base = shared_data / "web/trafilatura_eval_subset"
    expected = sorted(
        json.loads((base / "evaldata_subset120.json").read_text()).values(), key=lambda e: e["file"]
    )[:20]
    pages = tmp_path / "pages"
    pages.mkdir()
    for e in expected:
        shutil.copy(base / "html" / e["file"], pages / e["file"])
    art = run_ingest(
        tmp_path / "a", make_cfg([SourceConfig(path=str(pages), format="html")], **LENIENT)
    )
    texts = {r.meta["file"]: r.text for r in art.records()}
    with_ok = sum(any(s in texts.get(e["file"], "") for s in e["with"]) for e in expected)
    clean = sum(
        e["file"] in texts and not any(s in texts[e["file"]] for s in e["without"])
        for e in expected
    )
    leaked = sum(s in texts.get(e["file"], "") for e in expected for s in e["without"])
    assert with_ok >= 18, f"main text found on {with_ok}/20 pages"
    # favor_precision: 19 clean pages and 3 leaked snippets here; trafilatura's default gives 17 and 6
    assert clean >= 18 and leaked <= 4, (
        f"boilerplate kept on {20 - clean}/20 pages ({leaked} snippets)"
    )
