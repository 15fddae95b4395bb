"""dedup stage: exact and MinHash near-duplicates are dropped, naming the record kept."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

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


def run_dedup(root, records: list[Record], workers: int = 1, **dedup_cfg) -> Artifact:
    """Runs the plain stage function on ``records`` with ``workers`` DataTrove tasks and
    returns the committed artifact.

    Args:
        root: the artifact root.
        records: the pii records to deduplicate.
        workers: ``run.workers``; 1 (in-process) unless a test is about workers, since
            starting worker processes costs seconds per run.
        dedup_cfg: the dedup section.
    """
    cfg = PipelineConfig.model_validate(
        {"run": {"artifact_root": str(root), "workers": workers}, "dedup": dedup_cfg}
    )
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


def cluster_records() -> list[Record]:
    """Clusters whose kept record and dropped members fall in different shards however the
    records are dealt, one whose first record is the edited copy, and a record too short to
    shingle."""
    a, b = prose(31), prose(32)
    return [
        *mixed_records(),
        Record(id="c_b2", kind="text", text=every(b, 30, 7)),
        Record(id="c_a", kind="text", text=a),
        Record(id="c_b", kind="text", text=b),
        Record(id="c_a2", kind="text", text=every(a, 40, 5)),
        Record(id="c_a3", kind="text", text=every(a, 25, 3)),
        Record(id="c_b_far", kind="text", text=every(b, 8)),
        Record(id="c_a_exact", kind="text", text=a.upper()),
        Record(id="c_short", kind="text", text="too short"),
        Record(id="c_a4", kind="text", text=every(a, 35, 11)),
    ]


def outputs(art: Artifact) -> tuple:
    """Everything dedup decides: kept records in order, rejected rows in order, the report
    without its timing."""
    report = {k: v for k, v in art.report.items() if k != "seconds"}
    return [r.model_dump() for r in art.records()], list(art.rejected()), report


def test_cluster_ids_name_the_kept_record_across_workers(store_root, monkeypatch):
    """With several DataTrove tasks the kept record of a cluster may sit in a shard with
    nothing to remove; duplicate_of must still name it, and the output is the same whatever
    the number of workers (shards are numbered per worker, decisions by input order)."""
    monkeypatch.setattr(dedup, "MIN_PARALLEL", 0)  # shard even these few records
    loose = {"num_buckets": 40, "hashes_per_bucket": 1}  # many candidates, some refused
    runs = {
        n: run_dedup(f"{store_root}/w{n}", cluster_records(), workers=n, **loose) for n in (1, 2, 3)
    }
    one = outputs(runs[1])
    for n in (2, 3):
        assert outputs(runs[n]) == one, f"{n} workers differ from 1"
    art = runs[2]
    rej = rejected_by_id(art)
    kept = {r.id for r in art.records()}
    assert rej["a_exact"]["duplicate_of"] == "a"
    assert rej["b_near"]["duplicate_of"] == "b"  # keep-first: the earlier record stays
    assert rej["c_a_exact"]["reason"] == "exact_duplicate"
    for rid in ("c_a2", "c_a3", "c_a4"):
        assert rej[rid]["reason"] == "near_duplicate" and rej[rid]["duplicate_of"] == "c_a"
    # c_b2 comes before c_b: it is kept and c_b names it.
    assert rej["c_b"]["duplicate_of"] == "c_b2" and "c_b2" in kept
    assert "c_b_far" in kept
    assert all(row["duplicate_of"] in kept for row in art.rejected())
    # Kept records leave in input order, except the empty one MinHash never sees, first.
    order = [r.id for r in art.records()]
    assert order == ["empty"] + [r.id for r in cluster_records() if r.id in kept - {"empty"}]
    assert art.report["cluster_sizes"] == {"2": 2, "4": 1}


def test_dedup_workers_in_an_old_config_loads_with_a_warning():
    """dedup.workers moved to run.workers: an old config is not refused as a typo."""
    with pytest.warns(DeprecationWarning, match="run.workers"):
        cfg = PipelineConfig.model_validate({"dedup": {"workers": 4, "threshold": 0.7}})
    assert cfg.dedup.threshold == 0.7
    assert "workers" not in cfg.dedup.model_dump()


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
    """sharegpt_identity.json is 500 templated 'who are you' chats; none of them are exact
    duplicates. With 20x3 bands verified at Jaccard 0.6, all 500 lose 410 (bench/dedup_bench.py),
    every one at least 0.6 similar to the record it names."""
    records = sharegpt_chats(shared_data / "instruction" / "sharegpt_identity.json", 300)
    art = run_dedup(store_root, records)
    rep = art.report
    kept = {r.id for r in art.records()}
    assert rep["records_in"] == 300 == len(kept) + rep["records_rejected"]
    assert rep["near_duplicates"] >= 200
    assert rep["minhash_clusters"] >= 10
    assert all(row["duplicate_of"] in kept for row in art.rejected())
    assert all(row["jaccard"] >= 0.6 for row in art.rejected())


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


# ------------------------------------------------------------- verification, on, clusters


def shingle_jaccard(a: str, b: str, n_grams: int = 5) -> float:
    """The Jaccard similarity the stage verifies with (DataTrove's shingles)."""
    from datatrove.pipeline.dedup import MinhashDedupSignature

    cfg = dedup.minhash_config(dedup.DedupConfig(n_grams=n_grams))
    sig = MinhashDedupSignature(output_folder="/tmp", config=cfg)
    sa, sb = (np.unique(sig.get_shingles(t).ravel()) for t in (a, b))
    return dedup.jaccard(sa, sb)


def every(text: str, step: int, offset: int = 0) -> str:
    """``text`` with every ``step``-th word replaced: lower Jaccard as ``step`` shrinks."""
    return edited(text, tuple(range(offset, len(text.split()), step)))


def test_verification_refuses_a_low_jaccard_lsh_collision(store_root):
    base = prose(7)
    far = every(base, 9)  # about a third of the 5-grams survive
    sim = shingle_jaccard(base, far)
    assert 0.2 < sim < 0.5
    records = [Record(id="base", kind="text", text=base), Record(id="far", kind="text", text=far)]
    # 40 bands of one row: a pair at Jaccard ~0.3 collides in some band almost surely.
    loose = {"num_buckets": 40, "hashes_per_bucket": 1}
    unverified = run_dedup(store_root + "/u", records, threshold=0.0, **loose)
    assert rejected_by_id(unverified)["far"]["duplicate_of"] == "base"  # LSH did collide
    verified = run_dedup(store_root + "/v", records, threshold=0.6, **loose)
    assert sorted(r.id for r in verified.records()) == ["base", "far"]
    assert verified.report["candidate_pairs"] >= 1
    assert verified.report["candidate_pairs_refused"] == verified.report["candidate_pairs"]
    assert verified.report["near_duplicates"] == 0 and verified.report["cluster_sizes"] == {}


def test_pairs_above_threshold_are_dropped_naming_the_kept_record_with_their_jaccard(store_root):
    a, b = prose(11), prose(12)
    records = [
        Record(id="a", kind="text", text=a),
        Record(id="b", kind="text", text=b),
        Record(id="a2", kind="text", text=every(a, 40, 5)),  # J ~0.75 with a
        Record(id="a3", kind="text", text=every(a, 25, 3)),  # J ~0.6-0.7 with a
        Record(id="b2", kind="text", text=every(b, 30, 7)),
        Record(id="b_far", kind="text", text=every(b, 8)),  # J < 0.4: not a duplicate
    ]
    sims = {r.id: shingle_jaccard((a if r.id.startswith("a") else b), r.text) for r in records}
    assert sims["a3"] >= 0.6 and sims["b2"] >= 0.6 and sims["b_far"] < 0.4
    art = run_dedup(store_root, records, num_buckets=40, hashes_per_bucket=1)  # loose on purpose
    rej = rejected_by_id(art)
    assert set(rej) == {"a2", "a3", "b2"}
    for rid, kept in (("a2", "a"), ("a3", "a"), ("b2", "b")):
        assert rej[rid]["reason"] == "near_duplicate" and rej[rid]["duplicate_of"] == kept
        assert rej[rid]["jaccard"] == pytest.approx(sims[rid], abs=1e-3)
        assert rej[rid]["jaccard"] >= 0.6
    rep = art.report
    assert rep["cluster_sizes"] == {"2": 1, "3": 1} and rep["minhash_clusters"] == 2
    assert rep["threshold"] == 0.6 and rep["on"] == "record"
    text = dedup.STAGE.summary(rep)
    assert "2 of 1" in text or "1 of 2" in text
    assert "Jaccard" in text


def qa(rid: str, question: str, answer: str, system: str | None = None) -> Record:
    msgs = [Message(role="system", content=system)] if system else []
    msgs += [Message(role="user", content=question), Message(role="assistant", content=answer)]
    return Record(id=rid, kind="chat", messages=msgs)


def test_on_prompt_drops_two_answers_to_one_question_on_record_keeps_them(store_root):
    question = "Explain how a " + prose(21, 40)
    records = [
        qa("q1", question, prose(22)),
        qa("q2", question, prose(23), system="You are a helpful assistant."),
        qa("q3", every(question, 40, 20), prose(24)),  # the question lightly edited
        qa("other", "Explain how a " + prose(25, 40), prose(26)),
    ]
    on_prompt = rejected_by_id(run_dedup(store_root + "/p", records, on="prompt"))
    assert set(on_prompt) == {"q2", "q3"}
    assert (
        on_prompt["q2"]["reason"] == "exact_duplicate" and on_prompt["q2"]["duplicate_of"] == "q1"
    )
    assert on_prompt["q3"]["reason"] == "near_duplicate" and on_prompt["q3"]["duplicate_of"] == "q1"
    on_record = run_dedup(store_root + "/r", records, on="record")
    assert list(on_record.rejected()) == []
    assert on_record.report["records_kept"] == 4


def test_prompt_text_is_the_user_turns_before_the_last_reply():
    chat = Record(
        id="c",
        kind="chat",
        messages=[
            Message(role="system", content="sys"),
            Message(role="user", content="first"),
            Message(role="assistant", content="reply one"),
            Message(role="user", content="second"),
            Message(role="assistant", content="final"),
        ],
    )
    assert dedup.prompt_text(chat) == "first\nsecond"
    pref = Record(
        id="p",
        kind="preference",
        messages=[Message(role="user", content="ask")],
        chosen="good",
        rejected="bad",
    )
    assert dedup.prompt_text(pref) == "ask"
    text = Record(id="t", kind="text", text="plain text")
    assert dedup.key_text(text, "prompt") == "plain text"
    # No user turn: the whole record is the key.
    lone = Record(id="l", kind="chat", messages=[Message(role="assistant", content="hello")])
    assert dedup.key_text(lone, "prompt") == "hello"


def test_an_unquoted_on_key_in_yaml_means_dedup_on(tmp_path):
    """PyYAML reads `on:` as the boolean True; the config takes it as the `on` field."""
    from tuneline.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("dedup:\n  on: prompt\n")
    assert load_config(p).dedup.on == "prompt"
