"""A rejected row anywhere in a source, the last one included, costs that row only: with one
process or several ranks, the run goes on, the row is rejected with its file and line, and the
other sources' records are kept (issue 16: a large source whose last line was cut crashed the
parallel merge with ``KeyError: 'unparseable'``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig, ranks
from tests.support.ingest import LENIENT, make_cfg, run_ingest, write_jsonl
from tests.support.stages import run_plain
from tuneline.config import PipelineConfig
from tuneline.sections import RunConfig

# Enough for the default threshold to share the rows between ranks, as a real large file is.
LARGE_BYTES = ranks.MIN_PARALLEL_BYTES + 100_000


def _text(i: int) -> str:
    return f"Record {i} says the tent packs down to the size of a loaf and weighs two kilograms."


def _large_jsonl(path: Path, last_line: bytes) -> Path:
    """A JSONL source of LARGE_BYTES or more whose final line is ``last_line``."""
    line = json.dumps({"text": _text(0)}) + "\n"
    n = LARGE_BYTES // len(line) + 1
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write((json.dumps({"text": _text(i)}) + "\n").encode())
        fh.write(last_line)
    return path


def _small_jsonl(path: Path) -> Path:
    rows = [
        {"instruction": f"Name item {i} of the kit.", "output": f"Item {i} is a stove."}
        for i in range(5)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tmp_path: Path, workers: int, sources: list[Path], **ingest_cfg):
    cfg = PipelineConfig(
        run=RunConfig(artifact_root=str(tmp_path / f"w{workers}"), workers=workers),
        ingest=IngestConfig(
            sources=[SourceConfig(path=str(p)) for p in sources], **{**LENIENT, **ingest_cfg}
        ),
    )
    return run_plain(ingest, cfg, [])


def _check(art, big: Path, small: Path, reason: str, line: int, workers: int) -> dict:
    assert art.report["ranks"] == workers
    by_path = {s["path"]: s for s in art.report["sources"]}
    assert by_path[str(small)]["kept"] == 5, "the other source's records are lost"
    rejected = [r for r in art.rejected() if r["reason"] == reason]
    assert len(rejected) == 1, rejected
    row = rejected[0]["record"]
    assert (row["source"], row["file"], row["line"]) == (str(big), big.name, line)
    assert art.report["examples"][reason]["snippet"].startswith(f"{big.name}:{line}:")
    assert by_path[str(big)]["rejected"] == 1
    return rejected[0]


@pytest.mark.parametrize("workers", [2, 1])
def test_large_source_with_a_cut_last_line(tmp_path, workers):
    big = _large_jsonl(tmp_path / "big.jsonl", b'{"text": "The stove boils a litre in th')
    small = _small_jsonl(tmp_path / "small.jsonl")
    lines = big.read_bytes().count(b"\n") + 1
    art = _run(tmp_path, workers, [small, big])
    rej = _check(art, big, small, "unparseable", lines, workers)
    assert "bad JSON" in rej["error"]


@pytest.mark.parametrize("workers", [2, 1])
def test_large_source_with_an_oversized_last_line(tmp_path, workers):
    # Over ingest.max_row_bytes as a 50 MB line is over the default 10 MB, at a test's cost.
    big = _large_jsonl(tmp_path / "big.jsonl", json.dumps({"text": "x" * 5000}).encode() + b"\n")
    small = _small_jsonl(tmp_path / "small.jsonl")
    lines = big.read_bytes().count(b"\n")
    art = _run(tmp_path, workers, [small, big], max_row_bytes=4096)
    rej = _check(art, big, small, "oversized", lines, workers)
    assert rej["record"]["size"] > 4096


# ------------------------------------------------------------------ damaged and odd sources


def test_a_json_list_cut_part_way_keeps_its_complete_items(tmp_path):
    items = [{"text": _text(i)} for i in range(3)]
    whole = json.dumps(items, indent=1)
    cut = whole[: whole.index(_text(2)) + 20]  # inside the third item's text
    (tmp_path / "cut.json").write_text(cut)
    art = run_ingest(tmp_path / "a", make_cfg([tmp_path / "cut.json"], **LENIENT))
    assert [r.text for r in art.records()] == [_text(0), _text(1)]
    (rest,) = art.rejected()
    assert rest["reason"] == "unreadable_file" and rest["record"]["file"] == "cut.json"
    start = cut.index("{", cut.index(_text(1)))  # where the unread third item starts
    assert f"(char {start})" in rest["error"] and "cut short?" not in rest["error"]
    assert "the 2 complete items before it were read" in rest["error"]
    assert art.report["sources"][0]["error"] == f"cut.json: {rest['error']}"


def test_nan_and_infinity_literals_are_unparseable(tmp_path):
    scores = ["NaN", "Infinity", "-Infinity", "1.5"]
    lines = [f'{{"text": "{_text(i)}", "score": {c}}}' for i, c in enumerate(scores)]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "rows.json").write_text("[" + ",".join(lines) + "]")
    for name in ("rows.jsonl", "rows.json"):
        art = run_ingest(tmp_path / f"art-{name}", make_cfg([tmp_path / name], **LENIENT))
        assert [r.text for r in art.records()] == [_text(3)]
        rejected = list(art.rejected())
        assert [r["reason"] for r in rejected] == ["unparseable"] * 3
        for r, literal in zip(rejected, scores[:3], strict=True):
            assert r["error"].startswith(f"bad JSON: {literal} is not a JSON number"), r["error"]


def test_a_sharegpt_value_list_is_rejected_not_joined(tmp_path):
    def chat(question):
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": "The Ember 2."}]
        return {"conversations": turns}

    path = write_jsonl(tmp_path / "chats.jsonl", [chat(["Which ", "stove?"]), chat("Which tent?")])
    cfg = make_cfg([SourceConfig(path=str(path), format="sharegpt")], **LENIENT)
    art = run_ingest(tmp_path / "a", cfg)
    assert [r.messages[0].content for r in art.records()] == ["Which tent?"]
    (rej,) = art.rejected()
    assert rej["reason"] == "unparseable" and rej["record"]["line"] == 1
    assert "conversations[0].value must be a string, got a list of 2" in rej["error"]


def test_an_empty_source_is_warned_about_and_counted(tmp_path, caplog):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "empty.json").write_text("[]")
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": _text(0)}])
    cfg = make_cfg([tmp_path / "empty.jsonl", good, tmp_path / "empty.json"], **LENIENT)
    with caplog.at_level(logging.WARNING, logger="tuneline"):
        art = run_ingest(tmp_path / "a", cfg)
    assert art.report["empty_sources"] == 2
    assert [s.get("empty", False) for s in art.report["sources"]] == [True, False, True]
    warned = [r.getMessage() for r in caplog.records if "holds no rows" in r.getMessage()]
    names = [str(tmp_path / n) for n in ("empty.jsonl", "empty.json")]
    assert [m.split()[2] for m in warned] == names
    assert "holds no rows" in ingest.summary(art.report)
