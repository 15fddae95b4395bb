"""How many rewritten duplicates dedup finds, at what precision and speed.

Planted pairs: documents from ../shared/data (common-crawl pages, alpaca answers) and a copy
of each rewritten by replacing, deleting and inserting a share of its words, searched until the
pair's Jaccard similarity (over the stage's own word 5-gram shingles, DataTrove's) falls in a
chosen bin: 0.3-0.4, ..., 0.9-1.0. Ground truth is the brute-force Jaccard of every pair of the
corpus (sparse matrix product). For each dedup setting it prints recall per bin (the copy is
dropped naming its original), precision (dropped records whose true Jaccard with the record
they name is >= 0.6) and records/s of the stage. Then the real duplicates found in
sharegpt_identity.json and the common-crawl sample, and the "rewritten answers" case: alpaca
records repeated with the same instruction and a rewritten answer, on the record and on the
prompt. Last, the same pair recall with the pii stage (defaults) run before dedup and without.

    .venv/bin/python bench/dedup_bench.py [--per-bin 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TUNELINE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402

from tasks import dedup  # noqa: E402
from tuneline.artifacts import ArtifactStore  # noqa: E402
from tuneline.config import PipelineConfig  # noqa: E402
from tuneline.records import Message, Record  # noqa: E402
from tuneline.stage import key_config  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BINS = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
DUP = 0.6  # what counts as a duplicate for precision and the recall target

SETTINGS = {  # label -> dedup config
    "14x8 no verify (old)": {"num_buckets": 14, "hashes_per_bucket": 8, "threshold": 0.0},
    "14x4 no verify": {"num_buckets": 14, "hashes_per_bucket": 4, "threshold": 0.0},
    "14x8 verify 0.6": {"num_buckets": 14, "hashes_per_bucket": 8, "threshold": 0.6},
    "14x4 verify 0.6": {"num_buckets": 14, "hashes_per_bucket": 4, "threshold": 0.6},
    "24x4 verify 0.6": {"num_buckets": 24, "hashes_per_bucket": 4, "threshold": 0.6},
    "14x3 verify 0.6": {"num_buckets": 14, "hashes_per_bucket": 3, "threshold": 0.6},
    "20x3 verify 0.6 (new)": {},
}

_SIG = None


def shingles(text: str) -> np.ndarray:
    """The stage's own shingles: DataTrove's hashed word 5-grams, unique and sorted."""
    global _SIG
    if _SIG is None:
        from datatrove.pipeline.dedup import MinhashDedupSignature

        _SIG = MinhashDedupSignature(
            output_folder=tempfile.mkdtemp(), config=dedup.minhash_config(dedup.DedupConfig())
        )
    return np.unique(_SIG.get_shingles(text).ravel())


def rewrite(
    text: str, lo: float, hi: float, vocab: list[str], rng: random.Random, keep_layout: bool = False
) -> str | None:
    """A copy of ``text`` whose Jaccard with it lies in [lo, hi): the first k of a random list
    of word edits (replace 50 %, delete 25 %, insert 25 %), k found by bisection. The copy is
    one line unless ``keep_layout``, which keeps the line breaks and blanks between words
    (dedup's shingles ignore them; the pii stage's sentence and NER context does not)."""
    words = text.split()
    seps = re.findall(r"\s+", text.strip()) + [""]
    base = shingles(text)
    if len(words) < 20 or base.size == 0:
        return None
    target = rng.uniform(lo, hi)
    pos = rng.sample(range(len(words)), len(words))
    ops = [(p, rng.choice("rrdi"), rng.choice(vocab)) for p in pos]

    def apply(k: int) -> tuple[str, float]:
        out = list(words)
        gaps = list(seps) if keep_layout else [" "] * (len(words) - 1) + [""]
        for p, op, w in sorted(ops[:k], reverse=True):
            if op == "r":
                out[p] = w
            elif op == "d":
                del out[p]
                del gaps[p]
            else:
                out.insert(p, w)
                gaps.insert(p, " ")
        new = "".join(w + g for w, g in zip(out, gaps, strict=True)).strip()
        return new, dedup.jaccard(base, shingles(new))

    a, b = 0, len(ops)
    while a < b:
        k = (a + b) // 2
        if apply(k)[1] > target:
            a = k + 1
        else:
            b = k
    for k in (a, a - 1, a + 1, a - 2, a + 2):
        if 0 <= k <= len(ops):
            new, sim = apply(k)
            if lo <= sim < hi and new != text:
                return new
    return None


def rewritten(it, lo, hi, n, vocab, rng, keep_layout: bool = False) -> list[tuple[str, str]]:
    """Up to ``n`` (id, copy) pairs: the next documents of ``it`` rewritten to a Jaccard in
    [lo, hi) (``rewrite``); documents no rewrite reaches are skipped."""
    out: list[tuple[str, str]] = []
    if n <= 0:
        return out
    for rid, text in it:
        new = rewrite(text, lo, hi, vocab, rng, keep_layout=keep_layout)
        if new is not None:
            out.append((rid, new))
            if len(out) == n:
                break
    return out


def dedup_run(records: list[Record], root: str, **cfg) -> tuple[dict, dict, float]:
    """Runs the dedup stage on ``records``; returns (rejected rows by id, report, seconds)."""
    pc = PipelineConfig.model_validate({"run": {"artifact_root": root}, "dedup": cfg})
    store = ArtifactStore(root)
    with store.writer("pii", "0" * 64, [], {}) as w:
        w.write_all(records)
        ref = w.commit()
    sliced = dedup.STAGE.slice(pc)
    key = f"{abs(hash(json.dumps(cfg, sort_keys=True))):064d}"[-64:]
    t0 = time.perf_counter()
    with store.writer("dedup", key, [ref], key_config(sliced)) as out:
        dedup.STAGE.run([store.open(ref)], sliced, out)
        art_ref = out.commit()
    secs = time.perf_counter() - t0
    art = store.open(art_ref)
    return {row["record"]["id"]: row for row in art.rejected()}, art.report, secs


def all_pairs_jaccard(sets: list[np.ndarray]) -> sparse.csr_matrix:
    """Brute force: the Jaccard of every pair of ``sets`` with any shared shingle (upper triangle)."""
    vocab: dict[int, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for h in s.tolist():
            cols.append(vocab.setdefault(h, len(vocab)))
            rows.append(i)
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(sets), len(vocab))
    )
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    size = np.array([s.size for s in sets], dtype=np.float64)
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    return sparse.csr_matrix((jac, (inter.row, inter.col)), shape=(len(sets), len(sets)))


def true_j(jm: sparse.csr_matrix, index: dict[str, int], a: str, b: str) -> float:
    i, j = sorted((index[a], index[b]))
    return float(jm[i, j]) if i != j else 1.0


def precision(rej: dict, jm, index, key_of=None) -> tuple[int, int]:
    """(dropped records whose true Jaccard with the record named is >= DUP, dropped records)."""
    good = total = 0
    for rid, row in rej.items():
        total += 1
        if true_j(jm, index, rid, row["duplicate_of"]) >= DUP:
            good += 1
    return good, total


def load_sources() -> tuple[list[str], list[dict]]:
    with gzip.open(DATA / "web" / "common_crawl_sample_697.jsonl.gz", "rt") as fh:
        cc = [row for row in map(json.loads, fh)]
    alpaca = json.loads((DATA / "instruction" / "alpaca_en_demo.json").read_text())
    return cc, alpaca


def planted(args, cc, alpaca) -> None:
    rng = random.Random(args.seed)
    vocab = [w for row in alpaca[:300] for w in row["output"].split()]
    docs = [(f"cc{i}", row["text"]) for i, row in enumerate(cc) if row["text"].strip()]
    docs += [(f"al{i}", row["output"]) for i, row in enumerate(alpaca) if row["output"].strip()]
    sources = {
        "cc": [d for d in docs if d[0].startswith("cc")],
        "al": [d for d in docs if d[0].startswith("al")],
    }
    for pool in sources.values():
        rng.shuffle(pool)
    pairs: list[tuple[str, str, int]] = []  # (original id, copy id, bin)
    copies: list[tuple[str, str]] = []
    for pool in sources.values():
        it = iter(pool)
        for b, (lo, hi) in enumerate(BINS):
            for rid, new in rewritten(it, lo, hi, args.per_bin, vocab, rng):
                pairs.append((rid, rid + "~", b))
                copies.append((rid + "~", new))
    corpus = docs + copies  # originals first: keep-first keeps them
    index = {rid: i for i, (rid, _) in enumerate(corpus)}
    t0 = time.perf_counter()
    jm = all_pairs_jaccard([shingles(t) for _, t in corpus])
    n_true = int((jm.data >= DUP).sum())
    print(
        f"\n## Planted pairs: {len(pairs)} rewrites of {len(docs)} documents "
        f"({len(corpus)} records; {n_true} pairs at true Jaccard >= {DUP}, brute force "
        f"{time.perf_counter() - t0:.1f} s)\n"
    )
    per_bin = [sum(1 for p in pairs if p[2] == b) for b in range(len(BINS))]
    head = "| setting | " + " | ".join(f"{lo:.1f}-{hi:.1f}" for lo, hi in BINS)
    print(head + " | recall J>=0.6 | near precision | near dropped | records/s |")
    print("|---" * (len(BINS) + 5) + "|")
    print("| pairs per bin | " + " | ".join(str(n) for n in per_bin) + " | | | | |")
    records = [Record(id=rid, kind="text", text=t) for rid, t in corpus]
    for label, cfg in SETTINGS.items():
        root = tempfile.mkdtemp(prefix="dedup-bench-")
        rej, rep, secs = dedup_run(records, root, **cfg)
        found = [0] * len(BINS)
        for orig, copy, b in pairs:
            named = rej.get(copy, {}).get("duplicate_of")
            # the copy names its original, or the record its original was dropped for
            if named is not None and named in (orig, rej.get(orig, {}).get("duplicate_of")):
                found[b] += 1
            elif rej.get(orig, {}).get("duplicate_of") == copy:
                found[b] += 1
        hi_found = sum(found[3:])
        hi_total = sum(per_bin[3:])
        near = {k: v for k, v in rej.items() if v["reason"] == "near_duplicate"}
        good, total = precision(near, jm, index)
        print(
            f"| {label} | "
            + " | ".join(f"{f / n:.2f}" if n else "-" for f, n in zip(found, per_bin, strict=True))
            + f" | {hi_found / hi_total:.3f} | {good / total if total else 1:.3f} ({total - good} false)"
            f" | {total} | {len(records) / secs:.0f} |"
        )


def real(label: str, records: list[Record], settings: dict) -> None:
    index = {r.id: i for i, r in enumerate(records)}
    jm = all_pairs_jaccard([shingles(r.joined_text()) for r in records])
    for name, cfg in settings.items():
        rej, rep, secs = dedup_run(records, tempfile.mkdtemp(prefix="dedup-bench-"), **cfg)
        near = {k: v for k, v in rej.items() if v["reason"] == "near_duplicate"}
        good, total = precision(near, jm, index)
        print(
            f"| {label} | {name} | {rep['exact_duplicates']} | {rep['near_duplicates']} | "
            f"{rep['minhash_clusters']} | {good / total if total else 1:.3f} ({total - good} false) | "
            f"{rep.get('candidate_pairs', '-')}/{rep.get('candidate_pairs_refused', '-')} | "
            f"{len(records) / secs:.0f} |"
        )


def real_sets(cc) -> None:
    print("\n## Real duplicates (on the record)\n")
    print(
        "| set | setting | exact | near | clusters | near precision (J>=0.6 with kept) | candidates/refused | records/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    roles = {"human": "user", "gpt": "assistant"}
    share = [
        Record(
            id=row["id"],
            kind="chat",
            messages=[
                Message(role=roles[t["from"]], content=t["value"]) for t in row["conversations"]
            ],
        )
        for row in json.loads((DATA / "instruction" / "sharegpt_identity.json").read_text())
    ]
    web = [Record(id=row["id"], kind="text", text=row["text"]) for row in cc]
    pick = {
        k: SETTINGS[k] for k in ("14x8 no verify (old)", "14x4 no verify", "20x3 verify 0.6 (new)")
    }
    real("sharegpt_identity (500)", share, pick)
    real("common_crawl (697)", web, pick)


def rewritten_answers(args, alpaca) -> None:
    """Alpaca records twice: same instruction, answer rewritten to Jaccard 0.55-0.70."""
    rng = random.Random(args.seed + 1)
    vocab = [w for row in alpaca[:300] for w in row["output"].split()]
    recs, copies, pairs = [], [], []
    for i, row in enumerate(alpaca):
        prompt = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
        recs.append(
            Record(
                id=f"a{i}",
                kind="chat",
                messages=[
                    Message(role="user", content=prompt),
                    Message(role="assistant", content=row["output"]),
                ],
            )
        )
        if len(pairs) < args.answers:
            new = rewrite(row["output"], 0.55, 0.70, vocab, rng)
            if new is not None:
                copies.append(
                    Record(
                        id=f"a{i}~",
                        kind="chat",
                        messages=[
                            Message(role="user", content=prompt),
                            Message(role="assistant", content=new),
                        ],
                    )
                )
                pairs.append((f"a{i}", f"a{i}~"))
    records = recs + copies
    print(
        f"\n## Rewritten answers: {len(pairs)} alpaca records repeated with the same instruction and the answer rewritten (answer Jaccard 0.55-0.70), among {len(records)} records\n"
    )
    print("| setting | on | copies found | other records dropped | records/s |")
    print("|---|---|---|---|---|")
    copy_ids = {c for _, c in pairs}
    for label in ("14x8 no verify (old)", "20x3 verify 0.6 (new)"):
        for on in ("record", "prompt"):
            rej, rep, secs = dedup_run(
                records, tempfile.mkdtemp(prefix="dedup-bench-"), on=on, **SETTINGS[label]
            )
            found = sum(1 for o, c in pairs if rej.get(c, {}).get("duplicate_of") == o)
            other = len(set(rej) - copy_ids)
            print(
                f"| {label} | {on} | {found}/{len(pairs)} ({found / len(pairs):.2f}) | {other} | {len(records) / secs:.0f} |"
            )


def pii_on_off(args, cc, alpaca) -> None:
    """Pair recall of the default dedup with and without the pii stage before it (as the
    pipeline runs): pii's surrogates are one per value across the corpus, so a scrubbed copy
    must stay as close to its scrubbed original as the raw copy was to the raw original."""
    rng = random.Random(args.seed + 1)
    vocab = [w for row in alpaca[:300] for w in row["output"].split()]
    # documents with names, numbers or addresses in them: what pii rewrites
    docs = [
        (f"cc{i}", row["text"]) for i, row in enumerate(cc) if len(row["text"].split()) >= 40
    ]
    rng.shuffle(docs)
    for keep_layout in (True, False):
        pii_pairs(args, docs, vocab, random.Random(args.seed + 1), keep_layout)


def pii_pairs(args, docs, vocab, rng, keep_layout: bool) -> None:
    from tasks import pii

    copies, pairs = [], []
    it = iter(docs)
    for lo, hi in BINS[3:]:  # true duplicates: Jaccard 0.6-1.0
        for rid, new in rewritten(it, lo, hi, args.per_bin, vocab, rng, keep_layout):
            copies.append((rid + "~", new))
            pairs.append((rid, rid + "~"))
    corpus = [Record(id=rid, kind="text", text=t) for rid, t in docs + copies]
    from tuneline.records import dump_jsonl_gz

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the stage's own path: analyze, then merge
        shard = Path(tmp) / "00000.jsonl.gz"
        with open(shard, "wb") as fh:
            dump_jsonl_gz((r.model_dump(mode="json", exclude_none=True) for r in corpus), fh)
        totals = pii.Totals()
        scrubbed = [
            rec
            for _, rec, _ in pii.scrub_shards(PipelineConfig().pii, [shard], len(corpus), totals)
        ]
    secs = time.perf_counter() - t0
    changed = sum(a.text != b.text for a, b in zip(corpus, scrubbed, strict=True))
    print(
        f"\n## pii before dedup: {len(pairs)} rewritten copies (true Jaccard 0.6-1.0) of "
        f"common-crawl pages, {'line breaks kept' if keep_layout else 'flattened to one line'}; pii (defaults) changed {changed} of {len(corpus)} records "
        f"in {secs:.1f} s ({totals.names_everywhere} names scrubbed wherever they occur)\n"
    )
    print("| input to dedup | pairs found | recall |")
    print("|---|---:|---:|")
    for label, recs in (("raw (pii off)", corpus), ("scrubbed (pii on)", scrubbed)):
        with tempfile.TemporaryDirectory() as tmp:
            rej, _, _ = dedup_run(recs, tmp)
        found = sum(1 for a, b in pairs if rej.get(b, {}).get("duplicate_of") == a)
        print(f"| {label} | {found} / {len(pairs)} | {found / max(1, len(pairs)):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-bin", type=int, default=40, help="planted pairs per bin and source")
    ap.add_argument("--answers", type=int, default=300, help="rewritten-answer copies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["planted", "real", "answers", "pii"], default=None)
    args = ap.parse_args()
    cc, alpaca = load_sources()
    if args.only in (None, "planted"):
        planted(args, cc, alpaca)
    if args.only in (None, "real"):
        real_sets(cc)
    if args.only in (None, "answers"):
        rewritten_answers(args, alpaca)
    if args.only in (None, "pii"):
        pii_on_off(args, cc, alpaca)


if __name__ == "__main__":
    main()
