"""ingest.readers: each kind of source yields rows, one bad row costs one record, and the
HTML reader keeps a page's main text."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from tasks import ingest
from tasks.ingest import SourceConfig
from tasks.ingest.readers import RAW_KEEP_CHARS, ReadLog, read_source
from tests.support.ingest import LENIENT, make_cfg, run_ingest, write_jsonl
from tuneline.errors import InputError

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
    (row,) = read_source(tmp_path / "none.json", "auto")  # one file: reported, not raised
    assert row.error == "unreadable_file" and row.file == "none.json"
    assert "without a list of records" in row.detail


def test_pages_are_a_folder_sorted_by_path_or_a_single_file(tmp_path):
    (tmp_path / "site" / "b").mkdir(parents=True)
    for name in ("b/z.htm", "a.HTML", "notes.txt"):
        (tmp_path / "site" / name).write_text(f"<p>{name}</p>")
    log = ReadLog()
    rows = list(read_source(tmp_path / "site", "auto", log=log))
    assert [(r.index, r.raw) for r in rows] == [(0, "a.HTML"), (1, "b/z.htm")]
    assert [f["file"] for f in log.skipped_files] == ["notes.txt"]
    assert rows[1].html == b"<p>b/z.htm</p>"
    (one,) = read_source(tmp_path / "site" / "b" / "z.htm", "html")
    assert one.raw == "z.htm"


def test_unknown_file_types_and_html_without_pages_say_what_is_accepted(tmp_path):
    (tmp_path / "rows.csv").write_text("text\nhello\n")
    (tmp_path / "rows.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(ValueError, match=r"unsupported file type; use one of \.jsonl"):
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


# ------------------------------------------------------- rows and files that cannot be read


def _rejected(art) -> list[dict]:
    return sorted(art.rejected(), key=lambda r: (r["record"].get("file", ""), r["record"]["index"]))


def test_rows_that_break_a_shape_are_rejected_with_file_line_and_error(tmp_path):
    good = {"instruction": "How do I wash a fleece?", "output": "Cold, gentle cycle."}
    deep = "[" * 5000 + "]" * 5000
    lines = [
        json.dumps(good),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
        json.dumps({"instruction": "Hi", "output": "Hello there.", "history": 7}),
        json.dumps({"instruction": "Hi", "output": "Hello there.", "history": "not pairs"}),
        '{"text": ' + deep + "}",
        json.dumps({"conversations": [{"from": 3, "value": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": _nested(200)}),
        '{"id": 1' + "0" * 5000 + ', "text": "a huge id"}',
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n\n")
    art = run_ingest(tmp_path / "a", make_cfg([tmp_path / "bad.jsonl"], **LENIENT))
    assert [r.meta["index"] for r in art.records()] == [0]
    rejected = _rejected(art)
    assert [r["record"]["line"] for r in rejected] == [2, 3, 4, 5, 6, 7, 8]
    assert all(
        r["reason"] == "unparseable" and r["record"]["file"] == "bad.jsonl" for r in rejected
    )
    errors = [r["error"] for r in rejected]
    assert "content part text must be a string, got int" in errors[0]
    assert "history must be a list of [question, answer] pairs, got int" in errors[1]
    assert "history must be a list" in errors[2]
    assert "nested too deeply" in errors[3]
    assert "unknown speaker 3" in errors[4]
    assert "tools is nested more than 64 levels deep" in errors[5]
    assert "bad JSON" in errors[6]
    assert art.report["records_read"] == 8


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_file_that_cannot_be_read_is_reported_and_the_other_sources_go_on(tmp_path):
    (tmp_path / "plain.jsonl.gz").write_text('{"text": "not gzip at all"}\n')
    (tmp_path / "cut.json").write_text('[{"text": "a document that was cut')
    (tmp_path / "fake.parquet").write_bytes(b"PAR1 but not really")
    rows = b"".join(b'{"text": "row %d of a gzip file that ends early"}\n' % i for i in range(500))
    (tmp_path / "trunc.jsonl.gz").write_bytes(gzip.compress(rows)[:-300])
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a document that reads fine"}])
    names = ["plain.jsonl.gz", "cut.json", "fake.parquet", "trunc.jsonl.gz"]
    cfg = make_cfg([*(tmp_path / n for n in names), good], **LENIENT)
    art = run_ingest(tmp_path / "a", cfg)
    report = art.report
    errors = [s.get("error", "") for s in report["sources"]]
    assert "named .gz but not gzip" in errors[0]
    assert "the JSON list breaks" in errors[1]  # its complete items (none here) kept
    assert "ArrowInvalid" in errors[2] or "Parquet" in errors[2]
    assert errors[3] and report["sources"][3]["kept"] > 0  # rows before the cut are kept
    assert report["sources"][4] == {**report["sources"][4], "kept": 1, "rejected": 0}
    unreadable = [r for r in art.rejected() if r["reason"] == "unreadable_file"]
    assert sorted(r["record"]["file"] for r in unreadable) == sorted(names)
    assert report["records_read"] == report["records_out"] + report["records_rejected"]

    strict = make_cfg([good, tmp_path / "plain.jsonl.gz"], fail_on_unreadable=True, **LENIENT)
    with pytest.raises(
        InputError, match=r"ingest.sources\[1\].path: .*plain.jsonl.gz cannot be read"
    ):
        run_ingest(tmp_path / "b", strict)


def test_a_folder_reads_every_kind_it_knows_and_lists_what_it_skipped(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    mixed = tmp_path / "mixed"
    (mixed / "sub").mkdir(parents=True)
    write_jsonl(mixed / "a.jsonl", [{"text": "a document from jsonl"}])
    (mixed / "b.json").write_text(json.dumps([{"text": "a document from json"}]))
    pq.write_table(pa.Table.from_pylist([{"text": "a document from parquet"}]), mixed / "c.parquet")
    (mixed / "sub" / "d.html").write_text(_page("A page about tents in the folder"))
    _write_warc(mixed / "e.warc.gz", [("http://shop.example/tents", _page("A page from a crawl"))])
    (mixed / "notes.txt").write_text("not data")
    (mixed / ".DS_Store").write_bytes(b"\0\0")
    (mixed / "broken.jsonl.gz").write_text("not gzip")
    art = run_ingest(tmp_path / "a", make_cfg([mixed], **LENIENT))
    (source,) = art.report["sources"]
    assert {r.meta["file"] for r in art.records()} == {
        "a.jsonl",
        "b.json",
        "c.parquet",
        "sub/d.html",
        "e.warc.gz",
    }
    assert [(f["file"], f["reason"].split(" (")[0]) for f in source["skipped_files"]] == [
        (".DS_Store", "hidden file"),
        ("notes.txt", "unknown file type"),
    ]
    assert source["unreadable_files"][0]["file"] == "broken.jsonl.gz"
    assert source["read"] == 6 and source["kept"] == 5 and source["rejected"] == 1
    # the stage summary names the unreadable file, the skipped ones, and an example of the reason
    md = ingest.STAGE.summary(art.report)
    assert "Could not read `broken.jsonl.gz`" in md
    assert "`.DS_Store` (hidden file)" in md and "`notes.txt` (unknown file type" in md
    assert art.report["examples"]["unreadable_file"]["snippet"].startswith("broken.jsonl.gz")
    # format html reads the pages and crawls of a folder and lists the rest as skipped
    html = run_ingest(
        tmp_path / "b", make_cfg([SourceConfig(path=str(mixed), format="html")], **LENIENT)
    )
    assert {r.meta["file"] for r in html.records()} == {"sub/d.html", "e.warc.gz"}
    assert len(html.report["sources"][0]["skipped_files"]) == 6


def test_byte_order_marks_cost_no_row(tmp_path):
    rows = [{"text": "first row after the mark"}, {"text": "second row"}]
    jsonl_text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl_text.encode())
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    (tmp_path / "wide.json").write_bytes(json.dumps(rows[:1]).encode("utf-16"))
    for name, n in (("bom.jsonl", 2), ("bom.json", 2), ("wide.json", 1)):
        got = list(read_source(tmp_path / name, "auto"))
        assert [r.value for r in got] == rows[:n], name
    (tmp_path / "wide.jsonl").write_bytes(jsonl_text.encode("utf-16"))
    (row,) = read_source(tmp_path / "wide.jsonl", "auto")
    assert row.error == "unreadable_file" and "convert it to UTF-8" in row.detail


def test_an_oversized_row_is_rejected_before_parsing_with_a_bounded_preview(tmp_path):
    import time

    big = '{"text": "' + "x" * (50 * 1024 * 1024) + '"}'
    path = tmp_path / "big.jsonl"
    path.write_text(
        json.dumps({"text": "a small row before"}) + "\n" + big + "\n" + '{"text": "after"}\n'
    )
    started = time.perf_counter()
    art = run_ingest(tmp_path / "a", make_cfg([path], **LENIENT))
    assert time.perf_counter() - started < 5  # it took 19 s when the line was parsed and stored
    (row,) = art.rejected()
    assert row["reason"] == "oversized" and row["record"]["line"] == 2
    assert row["record"]["size"] == len(big) and len(row["record"]["raw"]) == RAW_KEEP_CHARS
    assert "max_row_bytes" in row["error"]
    assert [r.text for r in art.records()] == ["a small row before", "after"]
    # the same bound for a JSON list item, a page and a WARC payload
    (tmp_path / "rows.json").write_text(json.dumps([{"text": "y" * 2000}, {"text": "ok"}]))
    (tmp_path / "page.html").write_text(_page("z " * 1000))
    _write_warc(tmp_path / "crawl.warc", [("http://a.example/", _page("w " * 1000))])
    for name in ("rows.json", "page.html", "crawl.warc"):
        first = next(iter(read_source(tmp_path / name, "auto", max_row_bytes=1000)))
        assert first.error == "oversized" and first.size > 1000, name


# ---------------------------------------------------------------------------------- WARC


def _page(text: str) -> str:
    return (
        f"<html><head><title>{text[:20]}</title></head><body><nav>Home | Shop | Cart</nav>"
        f"<article><h1>{text[:20]}</h1><p>{text}. "
        + "Pitch it on level ground. " * 8
        + "</p></article><footer>Copyright Trailhead Outfitters</footer></body></html>"
    )


def _write_warc(path, pages, extra=True):
    """A WARC (gzip when the name ends in .gz) with an HTML response per page; with ``extra``
    also a warcinfo, a request and a non-HTML response that are not rows."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=path.name.endswith(".gz"))
        if extra:
            writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for url, html in pages:
            headers = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            body = BytesIO(html.encode())
            writer.write_record(
                writer.create_warc_record(url, "response", payload=body, http_headers=headers)
            )
            if extra:
                req = StatusAndHeaders(
                    "GET / HTTP/1.1", [("Host", "example")], is_http_request=True
                )
                writer.write_record(
                    writer.create_warc_record(
                        url, "request", payload=BytesIO(b""), http_headers=req
                    )
                )
        if extra:
            png = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    "http://a.example/logo.png",
                    "response",
                    payload=BytesIO(b"\x89PNG"),
                    http_headers=png,
                )
            )


@pytest.mark.parametrize("name", ["crawl.warc", "crawl.warc.gz"])
def test_warc_html_responses_are_pages_and_the_rest_is_counted(tmp_path, name):
    pages = [
        ("http://shop.example/tents", _page("The Basecamp 2 tent sleeps two hikers")),
        ("http://shop.example/boots", _page("The Ridgeback boots run half a size small")),
    ]
    _write_warc(tmp_path / name, pages)
    art = run_ingest(tmp_path / "a", make_cfg([tmp_path / name], **LENIENT))
    records = list(art.records())
    assert [r.meta["url"] for r in records] == [u for u, _ in pages]
    assert "Basecamp 2 tent" in records[0].text and "Copyright" not in records[0].text
    assert {r.meta["format"] for r in records} == {"html"}
    (source,) = art.report["sources"]
    assert source["read"] == 2
    assert source["skipped"] == {"warc_non_html_response": 1, "warc_request": 2, "warc_warcinfo": 1}


def _arc(url: bytes, html: bytes, gz: bool) -> bytes:
    """An ARC v1 file: its filedesc record, then one HTTP response (each record its own gzip
    member when ``gz``, as crawlers write .arc.gz)."""
    desc = b"1 0 tuneline\nURL IP-address Archive-date Content-type Archive-length\n"
    head = b"filedesc://crawl.arc 0.0.0.0 20260101000000 text/plain %d\n" % len(desc)
    http = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + html
    response = b"%s 1.2.3.4 20260101000000 text/html %d\n" % (url, len(http)) + http + b"\n"
    records = [head + desc + b"\n", response]
    return b"".join(gzip.compress(r) if gz else r for r in records)


@pytest.mark.parametrize("name", ["crawl.arc", "crawl.arc.gz"])
def test_arc_responses_are_pages_too(tmp_path, name):
    html = _page("The Kettle Pro stove boils a litre fast").encode()
    (tmp_path / name).write_bytes(_arc(b"http://shop.example/stoves", html, name.endswith(".gz")))
    log = ReadLog()
    (row,) = read_source(tmp_path / name, "html", log=log)
    assert row.url == "http://shop.example/stoves" and b"Kettle Pro" in row.html
    assert log.skipped == {"warc_warcinfo": 1}
