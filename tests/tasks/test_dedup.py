"""dedup stage: exact and MinHash near-duplicates are dropped, naming the record kept."""

from __future__ import annotations

import gzip
import json
import random

from tasks import dedup
from tests.support.stages import input_artifact, run_plain
from tuneline.artifacts import Artifact
from tuneline.config import PipelineConfig
from tuneline.records import Message, Record

WORDS = (
    "river stone garden window market silver engine harbor candle forest tiger paper cloud "
    "violin orange ladder rocket bridge pepper castle meadow lantern falcon copper island "
    "thunder marble saddle quiet yellow gentle brave narrow frozen hollow bright ancient "
    "swift humble clever rusty golden wooden hidden distant sudden patient careful runs "
    "builds carries watches paints follows gathers opens breaks counts sings whispers "
    "travels repairs measures borrows plants climbs"
).split()


def prose(seed: int, n_words: int = 300) -> str:
    """Deterministic filler text; different seeds share almost no 5-grams."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def edited(text: str, positions: tuple[int, ...] = (40, 150, 260)) -> str:
    """``text`` with a few words swapped: a near-duplicate."""
    words = text.split()
    for p in positions:
        words[p] = "zebra"
    return " ".join(words)


def run_dedup(root, records: list[Record], **dedup_cfg) -> Artifact:
    """Runs the plain stage function on ``records`` and returns the committed artifact."""
    cfg = PipelineConfig.model_validate({"run": {"artifact_root": str(root)}, "dedup": dedup_cfg})
    return run_plain(dedup, cfg, [input_artifact(str(root), "pii", records)])


def rejected_by_id(art: Artifact) -> dict[str, dict]:
    return {row["record"]["id"]: row for row in art.rejected()}


def assert_one_of_pair_dropped(rejected: dict[str, dict], pair: set[str], kept: set[str]) -> None:
    """MinHash keeps one record per cluster (not necessarily the first): the other names it."""
    (dropped,) = pair & set(rejected)
    assert rejected[dropped]["duplicate_of"] in pair - {dropped}
    assert rejected[dropped]["duplicate_of"] in kept


def mixed_records() -> list[Record]:
    base = prose(1)
    return [
        Record(id="a", kind="text", text=base),
        Record(id="b", kind="text", text=prose(2)),
        # Same text once case, punctuation and spacing are normalised away.
        Record(id="a_exact", kind="text", text="  " + base.upper().replace(" ", ",  ") + "!"),
        Record(id="b_near", kind="text", text=edited(prose(2))),
        Record(
            id="chat",
            kind="chat",
            messages=[
                Message(role="user", content="Tell me a story."),
                Message(role="assistant", content=prose(3)),
            ],
        ),
        Record(id="short1", kind="text", text="Hi there"),
        Record(id="short2", kind="text", text="Hi there, friend"),
        Record(id="empty", kind="text", text=""),
    ]


def test_exact_and_near_duplicates_are_dropped_naming_the_kept_record(store_root):
    art = run_dedup(store_root, mixed_records())
    kept = [r.id for r in art.records()]
    rej = rejected_by_id(art)
    assert set(rej) == {"a_exact", "b_near"}
    assert rej["a_exact"]["reason"] == "exact_duplicate" and rej["a_exact"]["duplicate_of"] == "a"
    assert rej["b_near"]["reason"] == "near_duplicate" and rej["b_near"]["duplicate_of"] == "b"
    # Distinct records all stay, including ones too short to shingle and an empty one.
    assert sorted(kept) == ["a", "b", "chat", "empty", "short1", "short2"]
    rep = art.report
    assert rep["records_in"] == 8 == len(kept) + len(rej)
    assert (rep["exact_duplicates"], rep["near_duplicates"], rep["minhash_clusters"]) == (1, 1, 1)
    assert rep["rejected_by_reason"] == {"exact_duplicate": 1, "near_duplicate": 1}
    assert "near" in dedup.STAGE.summary(rep)
    assert any(f.startswith("minhash/") for f in art.manifest["files"])  # DataTrove's step stats


def test_distinct_records_are_all_kept(store_root):
    records = [Record(id=f"r{i}", kind="text", text=prose(100 + i)) for i in range(20)]
    art = run_dedup(store_root, records)
    assert sorted(r.id for r in art.records()) == sorted(r.id for r in records)
    assert list(art.rejected()) == []


def test_config_switches(store_root):
    records = mixed_records()
    # Without the exact pass, MinHash still catches the identical pair (Jaccard 1).
    no_exact = rejected_by_id(run_dedup(store_root + "/x", records, exact=False))
    assert len(no_exact) == 2 and all(
        row["reason"] == "near_duplicate" for row in no_exact.values()
    )
    assert_one_of_pair_dropped(
        no_exact, {"a", "a_exact"}, kept={r.id for r in records} - set(no_exact)
    )
    assert_one_of_pair_dropped(
        no_exact, {"b", "b_near"}, kept={r.id for r in records} - set(no_exact)
    )
    # Without MinHash only the exact duplicate goes.
    no_minhash = run_dedup(store_root + "/m", records, minhash=False)
    assert set(rejected_by_id(no_minhash)) == {"a_exact"}
    assert no_minhash.report["near_duplicates"] == 0


def test_cluster_ids_name_the_kept_record_across_workers(store_root):
    """With several DataTrove tasks the kept record of a cluster may sit in a shard with
    nothing to remove; duplicate_of must still name it."""
    art = run_dedup(store_root, mixed_records(), workers=2)
    rej = rejected_by_id(art)
    kept = {r.id for r in art.records()}
    assert rej["a_exact"]["duplicate_of"] == "a"
    assert set(rej) - {"a_exact"} in ({"b"}, {"b_near"})
    assert_one_of_pair_dropped(rej, {"b", "b_near"}, kept)


def sharegpt_chats(path, limit: int) -> list[Record]:
    roles = {"human": "user", "gpt": "assistant"}
    rows = json.loads(path.read_text())[:limit]
    return [
        Record(
            id=row["id"],
            kind="chat",
            messages=[
                Message(role=roles[t["from"]], content=t["value"]) for t in row["conversations"]
            ],
        )
        for row in rows
    ]


def test_minhash_collapses_templated_chats(store_root, shared_data):
    """sharegpt_identity.json is 500 templated 'who are you' chats. On the first 300, MinHash
    drops about 80% (measured: 242 of 300, in 33 clusters); none of them are exact duplicates."""
    records = sharegpt_chats(shared_data / "instruction" / "sharegpt_identity.json", 300)
    art = run_dedup(store_root, records)
    rep = art.report
    kept = {r.id for r in art.records()}
    assert rep["records_in"] == 300 == len(kept) + rep["records_rejected"]
    assert rep["near_duplicates"] >= 200
    assert rep["minhash_clusters"] >= 10
    assert all(row["duplicate_of"] in kept for row in art.rejected())


def test_common_crawl_planted_duplicates(store_root, shared_data):
    """The Dolma CC sample holds copies of a few pages and two near-identical pairs."""
    with gzip.open(shared_data / "web" / "common_crawl_sample_697.jsonl.gz", "rt") as fh:
        records = [
            Record(id=row["id"], kind="text", text=row["text"]) for row in map(json.loads, fh)
        ]
    art = run_dedup(store_root, records)
    rej = rejected_by_id(art)
    kept = {r.id for r in art.records()}
    assert len(kept) + len(rej) == 697
    # Exact copies of a publications page and of a one-line login page.
    for dup, original in [
        ("qixj4dtdloht7k5otzbyuuifjpy2hu7q", "oxtbm4ysv2unnok7emebjytiyjksf7u4"),
        ("dom4jctw6qfjgfkaxf4j2sghprrfnpkr", "oxtbm4ysv2unnok7emebjytiyjksf7u4"),
        ("dbcbp4xol4ihuw2z3vzapen2gbr34l22", "zfydnym36p3cg7sukyuk3latg34lfl2z"),
    ]:
        assert rej[dup]["reason"] == "exact_duplicate" and rej[dup]["duplicate_of"] == original
    # Near: a 14k-char ballad page differing in a few lines, and a repository record page.
    ballads = {"hksijb2fhcbnrn3nrsxromjzmte3g4og", "s6z5enyw4xth5aduv2fl3h64lad3afwu"}
    conicet = {"2zmlwccmm6jzgimkugqlv2hv2zv3cyaz", "qq3rqf5ucttoo2ri6rle3qzyqkxtypel"}
    near_rows = {k: v for k, v in rej.items() if v["reason"] == "near_duplicate"}
    for pair in (ballads, conicet):
        assert_one_of_pair_dropped(near_rows, pair, kept)
    assert art.report["exact_duplicates"] == 35  # 26 of them are empty pages
    assert art.report["near_duplicates"] >= 2
