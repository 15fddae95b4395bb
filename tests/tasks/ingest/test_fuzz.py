"""ingest never dies on one row or one file: random bytes and mutated valid files of every kind
(truncated, bytes flipped, deep nesting inserted, a wrong type in every field of every shape)
go through the stage's ``run``, which completes with read = kept + rejected."""

from __future__ import annotations

import copy
import gzip
import io
import json
import random
from pathlib import Path

import pytest

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig
from tests.support.stages import run_plain
from tuneline.config import PipelineConfig
from tuneline.sections import RunConfig

SEED = 20261130

ROWS = [
    {
        "instruction": "How do I wash a fleece?",
        "input": "",
        "output": "Cold, gentle cycle.",
        "system": "Be brief.",
        "history": [["Hi", "Hello."]],
    },
    {
        "conversations": [
            {"from": "human", "value": "Which boots?"},
            {"from": "gpt", "value": "The Ridgeback."},
        ],
        "system": "Be brief.",
        "tools": [{"name": "stock", "parameters": {"sku": "string"}}],
    },
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Which tent?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "stock", "arguments": "{}"}}],
            },
            {"role": "tool", "content": "3 left"},
            {"role": "assistant", "content": "The Basecamp 2."},
        ]
    },
    {
        "prompt": [{"role": "user", "content": "Which stove?"}],
        "chosen": "The Kettle Pro.",
        "rejected": "Any stove.",
    },
    {
        "instruction": "Which stove?",
        "chosen": {"role": "assistant", "content": "Kettle Pro."},
        "rejected": [
            {"role": "user", "content": "Which stove?"},
            {"role": "assistant", "content": "Any."},
        ],
    },
    {
        "chosen": "\n\nHuman: Which pack?\n\nAssistant: The Ridge 40.",
        "rejected": "\n\nHuman: Which pack?\n\nAssistant: A bag.",
    },
    {"text": "A plain document about pitching a tent on level ground.", "id": 7},
]
WRONG = [None, 0, -1.5, True, "", "s", [], {}, [1, "a"], {"text": 5}, [[[[[]]]]]]


def _paths(value, path=()):
    """Every path to a value inside ``value`` (dict keys and list positions)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _set(value, path, new):
    if not path:
        return new
    out = copy.deepcopy(value)
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = new
    return out


def wrong_type_rows() -> list[str]:
    """Every row shape with each of its fields (at any depth) replaced by each wrong type."""
    lines = []
    for row in ROWS:
        for path in _paths(row):
            lines += [json.dumps(_set(row, path, w)) for w in WRONG]
    return lines


def _page(rng: random.Random) -> bytes:
    words = " ".join(rng.choice(["tent", "boot", "stove", "pack", "trail"]) for _ in range(60))
    return f"<html><head><title>Gear</title></head><body><article><p>{words}</p></article></body></html>".encode()


def _warc(pages: list[bytes]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for i, html in enumerate(pages):
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                f"http://shop.example/{i}",
                "response",
                payload=io.BytesIO(html),
                http_headers=headers,
            )
        )
    return buf.getvalue()


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def valid_files(rng: random.Random) -> dict[str, bytes]:
    """One valid file of every kind ingest reads, by suffix."""
    jsonl = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    return {
        ".jsonl": jsonl,
        ".jsonl.gz": gzip.compress(jsonl, mtime=0),
        ".json": json.dumps(ROWS).encode(),
        ".parquet": _parquet([{"text": f"A document number {i} about tents."} for i in range(5)]),
        ".html": _page(rng),
        ".warc.gz": _warc([_page(rng) for _ in range(2)]),
    }


def mutate(rng: random.Random, data: bytes, suffix: str) -> bytes:
    """One random mutation of a valid file's bytes."""
    kind = rng.choice(["truncate", "flip", "nest", "insert", "bom", "random"])
    if kind == "truncate":
        return data[: rng.randrange(len(data) + 1)]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == "nest" and suffix in (".jsonl", ".json"):
        depth = rng.choice([50, 900, 1100, 20_000])
        deep = b"[" * depth + b"]" * depth
        spots = [i for i in range(len(data)) if data[i : i + 2] in (b": ", b", ")]
        at = rng.choice(spots) + 2
        # replaces the value that starts here (or breaks the JSON around it: also a case)
        return data[:at] + deep + data[at:]
    if kind == "insert":
        at = rng.randrange(len(data) + 1)
        junk = rng.choice([b"\x00", b"\n", b"\r\n", b"\xff\xfe", b'"', b"{", b"\xc3", b"\n\n\n"])
        return data[:at] + junk * rng.randint(1, 5) + data[at:]
    if kind == "bom":
        return rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\xef\xbb\xbf\xef\xbb\xbf"]) + data
    return rng.randbytes(rng.randrange(0, 3000))


def _cfg(root: Path, sources: list[Path]) -> PipelineConfig:
    ingest_cfg = IngestConfig(
        sources=[SourceConfig(path=str(s)) for s in sources],
        languages=[],
        quality_filter=False,
        min_chars=0,
        max_row_bytes=64 * 1024,
    )
    return PipelineConfig(run=RunConfig(artifact_root=str(root)), ingest=ingest_cfg)


def _check(root: Path, sources: list[Path]) -> dict:
    art = run_plain(ingest, _cfg(root, sources), [])
    report = art.report
    assert report["records_read"] == report["records_out"] + report["records_rejected"]
    for s in report["sources"]:
        assert s["read"] == s["kept"] + s["rejected"], s
    return report


def test_fuzzed_files_never_stop_the_stage_and_every_row_is_accounted_for(tmp_path):
    rng = random.Random(SEED)
    valid = valid_files(rng)
    cases: list[tuple[str, bytes]] = []
    for n in range(300):
        suffix = rng.choice(list(valid))
        if suffix in (".html", ".warc.gz") and rng.random() < 0.6:
            suffix = ".jsonl"  # pages go through trafilatura: keep them to a few dozen cases
        cases.append((f"case{n:03d}{suffix}", mutate(rng, valid[suffix], suffix)))
    cases.append(("wrong_types.jsonl", "\n".join(wrong_type_rows()).encode()))
    cases.append(
        ("wrong_types.json", json.dumps([json.loads(x) for x in wrong_type_rows()]).encode())
    )
    # folders of 50 files, so a few hundred cases are a few runs of the stage
    folders = []
    for start in range(0, len(cases), 50):
        folder = tmp_path / "in" / f"batch{start // 50}"
        folder.mkdir(parents=True)
        for name, data in cases[start : start + 50]:
            (folder / name).write_bytes(data)
        folders.append(folder)
    try:
        report = _check(tmp_path / "a", folders)
    except Exception:  # name the file that broke the stage (seeded: it reproduces)
        for folder in folders:
            for f in sorted(folder.iterdir()):
                try:
                    _check(tmp_path / "one" / f.name, [f])
                except Exception as e:
                    pytest.fail(f"seed {SEED}: ingest failed on {f.name}: {type(e).__name__}: {e}")
        raise
    assert report["records_read"] > len(wrong_type_rows())  # the wrong-type rows were all read
    unreadable = sum(len(s.get("unreadable_files", [])) for s in report["sources"])
    assert 0 < unreadable < len(cases)
