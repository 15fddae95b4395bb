"""dedup: drops exact and near-duplicate records, so no example is trained on many times over.

Duplicates waste compute, skew the data mix and make a model memorise. What is compared is the
record's *key* (``dedup.on``):

- ``record``: ``Record.joined_text()``, every string of the record (a chat and a preference
  pair are compared as a whole);
- ``prompt``: only the user turns before the final assistant reply (the instruction of an
  Alpaca record, the prompt of a preference pair; system prompts are left out, since one
  system prompt shared by a whole set would make every record look alike). Two answers to one
  question are then duplicates, which is what SFT wants. A text record, or a record without a
  user turn, is keyed by its whole text.

Two passes run over the key:

1. exact: the key lowercased, without punctuation, whitespace collapsed. The first occurrence
   is kept; later ones are rejected as ``exact_duplicate`` with ``duplicate_of`` its id.
2. near: DataTrove computes MinHash signatures of the key's word n-grams and the LSH buckets
   (records whose signatures agree on a whole band are candidates). Every candidate pair is
   then *verified*: the exact Jaccard similarity of the two records' n-gram sets (the same
   shingles DataTrove hashes) must reach ``dedup.threshold``. Records are taken in input order:
   a record is rejected as ``near_duplicate`` when it reaches the threshold with a record
   already kept (``duplicate_of`` that record, ``jaccard`` the similarity measured), otherwise it
   is kept. So every dropped record is at least ``threshold`` similar to the record it names,
   and a chain A~B~C never drops C for A's sake when C and A are not alike. A cluster is a kept
   record with the records dropped for it (``cluster_sizes`` in the report).

Verification is what lets the bands be loose: with the default 20 bands x 3 rows, a pair at
Jaccard 0.6 becomes a candidate with probability 0.99 (0.94 at 0.5, 0.42 at 0.3); pairs below
the threshold are refused by the check instead of being merged. ``bench/dedup_bench.py``
measured the defaults (recall per similarity bin, precision, records/s).

A record with fewer words than ``dedup.n_grams`` has no shingles: MinHash cannot compare it and
keeps it. DataTrove's work files (signatures, buckets) live in a scratch folder; its per-step
stats are kept in the artifact under ``minhash/``. The signatures are computed by ``run.workers``
DataTrove tasks (``tuneline.executors``: local processes or Ray), one input shard each; the
output does not depend on how many.

Records come out in input order, except that those MinHash does not see (empty key, or
``dedup.minhash`` off) are written first. Memory stays flat in the number of records: the
records travel through the shards on disk, and the n-gram sets that verification compares
against are kept in a scratch file, not in memory; what is held per record is bookkeeping
(the exact pass's digests, the candidate groups).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datatrove.utils.word_tokenizers import WordTokenizer
from pydantic import Field, model_validator

from tuneline import executors
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.executors import make_executor, quiet_datatrove, run_ranks
from tuneline.progress import track
from tuneline.records import Record
from tuneline.scratch import new_scratch_dir
from tuneline.sections import Section
from tuneline.stage import Stage

# --------------------------------------------------------------------------------- dedup


class DedupConfig(Section):
    @model_validator(mode="before")
    @classmethod
    def check_on_is_not_a_boolean(cls, data: Any) -> Any:
        """YAML 1.1 (PyYAML) reads an unquoted `on:` key as True: take it as `on`."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="before")
    @classmethod
    def check_workers_moved_to_run(cls, data: Any) -> Any:
        """`dedup.workers` became `run.workers` (shared by the data stages and outside the
        artifact key): an old config still loads, with a warning, instead of failing as a typo."""
        if isinstance(data, dict) and "workers" in data:
            data = {k: v for k, v in data.items() if k != "workers"}
            message = (
                "dedup.workers is deprecated and ignored: the number of parallel workers is "
                "run.workers now (empty: one per CPU core)"
            )
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            # DeprecationWarning is hidden outside __main__ and tests: say it in the log too.
            logging.getLogger("tuneline").warning(message)
        return data

    exact: bool = Field(default=True, description="Drop records whose normalised key is identical.")
    minhash: bool = Field(
        default=True,
        description="Drop near-duplicates: DataTrove MinHash LSH, verified by Jaccard.",
    )
    on: Literal["record", "prompt"] = Field(
        default="record",
        description=(
            "What two records are compared on (exact and near): `record` = every string of the "
            "record; `prompt` = the user turns before the final assistant reply, so two answers "
            "to one question are duplicates."
        ),
    )
    n_grams: int = Field(default=5, ge=1, description="Word n-gram size of the MinHash shingles.")
    # bench/dedup_bench.py (2026-11-30, 420 planted rewrites of common-crawl pages and alpaca
    # answers): 20x3 + verification finds 1.00 of pairs at Jaccard 0.6-0.7 (old 14x8: 0.23;
    # 14x4: 0.92), none below 0.6, precision 1.00; 14x3 and 24x4 scored the same, 20x3 has the
    # most margin at 0.6 (candidate probability 0.99) for 60 hashes.
    num_buckets: int = Field(default=20, ge=1, description="LSH bands.")
    hashes_per_bucket: int = Field(
        default=3, ge=1, description="Rows per band (higher: fewer candidates, lower recall)."
    )
    # 0.6: the duplicate definition the bench's recall target uses; sharegpt_identity's
    # templated chats above it are re-worded copies of one answer (410 of 500 dropped, 0 false).
    threshold: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description=(
            "Jaccard similarity of the n-gram sets at or above which an LSH candidate pair is a "
            "duplicate (0: every candidate is, i.e. no verification)."
        ),
    )


_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


# ------------------------------------------------------------------------------------ keys


def prompt_text(record: Record) -> str:
    """The user turns before the final assistant reply ("" when there are none).

    A text record has no prompt: its whole text is returned.
    """
    if record.kind == "text":
        return record.text or ""
    msgs = record.messages or []
    if record.kind == "chat":
        last = max((i for i, m in enumerate(msgs) if m.role == "assistant"), default=len(msgs))
        msgs = msgs[:last]
    return "\n".join(m.content for m in msgs if m.role == "user")


def key_text(record: Record, on: str = "record") -> str:
    """What dedup compares for ``record`` under ``dedup.on`` (see the module doc)."""
    if on == "prompt":
        prompt = prompt_text(record)
        if prompt.strip():
            return prompt
    return record.joined_text()


# --------------------------------------------------------------------------------- exact


def normalise(text: str) -> str:
    """The form exact dedup compares: lowercase, no punctuation, single spaces.

    Args:
        text: a record's key text.
    """
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


def exact_key(record: Record, on: str = "record") -> bytes:
    """A digest of the normalised key: what exact dedup remembers per kept record."""
    text = key_text(record, on)
    # All-punctuation text normalises to "": compare such records as they are instead.
    norm = normalise(text) or text
    return hashlib.sha256(norm.encode("utf-8")).digest()


# --------------------------------------------------------------------------------- minhash


class SpaceWordTokenizer(WordTokenizer):
    """Words for MinHash shingles: the whitespace-separated tokens of the text, which DataTrove
    has already lower-cased and stripped of punctuation (``simplify_text``) before it asks.

    DataTrove's default for English, a spaCy tokenizer, finds the same words at 1.9 ms per
    1 KB record, most of dedup's time; this split takes microseconds.
    """

    def __init__(self) -> None:
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


def minhash_config(dcfg: DedupConfig):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(
        hash_config=HashConfig(precision=64),
        num_buckets=dcfg.num_buckets,
        hashes_per_bucket=dcfg.hashes_per_bucket,
        n_grams=dcfg.n_grams,
    )


def to_document(record: Record, on: str = "record"):
    """A DataTrove Document: the key text to hash, the whole record riding in metadata."""
    from datatrove.data import Document

    return Document(
        text=key_text(record, on),
        id=record.id,
        metadata={"record": record.model_dump(mode="json", exclude_none=True)},
    )


def run_lsh(work: Path, dcfg: DedupConfig, shards: int) -> None:
    """Runs DataTrove's MinHash signature and bucket steps over ``work/input``.

    Writes ``work/buckets/*.dups``: per band, the documents whose band signatures are equal.

    Args:
        work: the work folder; ``input/`` holds the ``shards`` JSONL shards of ``exact_pass``.
        dcfg: the dedup config (n-grams, bands, rows per band).
        shards: the number of input shards: one signature task each.
    """
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupSignature
    from datatrove.pipeline.readers import JsonlReader

    mh = minhash_config(dcfg)
    logs = work / "logs"
    # Two runs rather than depends=: each one's ranks are then checked on their own (a Ray rank
    # that fails is only logged, and the buckets would read a missing signature file as empty).
    signatures = make_executor(
        [
            JsonlReader(str(work / "input")),
            MinhashDedupSignature(
                output_folder=str(work / "signatures"), config=mh, language=SpaceWordTokenizer()
            ),
        ],
        tasks=shards,
        logging_dir=logs / "1_signatures",
    )
    run_ranks(signatures, logs / "1_signatures" / "completions", "dedup: MinHash signatures")
    # The bucket step only merges the sorted signature files (milliseconds per band): on Ray it
    # would start an actor for each of its ranks, so it runs on local processes whatever
    # run.executor says.
    with executors.using(executors.settings().model_copy(update={"executor": "local"})):
        buckets = make_executor(
            [
                MinhashDedupBuckets(
                    input_folder=str(work / "signatures"),
                    output_folder=str(work / "buckets"),
                    config=mh,
                )
            ],
            tasks=mh.num_buckets,  # one task per band: DataTrove requires a multiple of num_buckets
            logging_dir=logs / "2_buckets",
        )
        run_ranks(buckets, logs / "2_buckets" / "completions", "dedup: MinHash buckets")


def position(shard: int, index: int, shards: int) -> int:
    """A document's place in the MinHash input, from DataTrove's (shard, index in shard).

    ``exact_pass`` deals the n-th document to shard ``n % shards``; numbering documents by
    this position rather than by (shard, index) is what keeps every decision independent of
    the number of shards.
    """
    return index * shards + shard


def candidate_groups(buckets_dir: Path, shards: int) -> list[tuple[int, ...]]:
    """The groups of documents that share a band signature, read from DataTrove's .dups files.

    DataTrove writes the members of a group as a chain of pairs (a, b), (b, c), ... in sorted
    order; a document has one signature per band, so a pair that starts where the previous
    one ended continues its group. A group repeated in several bands is returned once.

    Args:
        buckets_dir: DataTrove's bucket step output.
        shards: the number of input shards, to turn (shard, index) into input positions.

    Returns:
        the groups as sorted tuples of input positions, sorted.
    """
    from datatrove.utils.binaryio import read_tuples_from_file

    groups: set[tuple[int, ...]] = set()

    def add(chain: list[tuple[int, int]]) -> None:
        groups.add(tuple(sorted(position(f, d, shards) for f, d in chain)))

    for dups in sorted(buckets_dir.glob("*.dups")):
        chain: list[tuple[int, int]] = []
        with dups.open("rb") as fh:
            for f1, d1, f2, d2 in read_tuples_from_file(fh, "4I", lines_to_buffer=1024):
                if chain and chain[-1] == (f1, d1):
                    chain.append((f2, d2))
                else:
                    if chain:
                        add(chain)
                    chain = [(f1, d1), (f2, d2)]
        if chain:
            add(chain)
    return sorted(groups)


def read_in_order(work: Path, shards: int) -> Iterator[tuple[int, Any]]:
    """The documents of ``work/input`` as (position, Document), in the order ``exact_pass``
    wrote them: one from each shard in turn, the way they were dealt.

    Each shard is read as DataTrove's signature step read it, so index i of shard s is the
    document its .dups files call (s, i).

    Args:
        work: the work folder of ``exact_pass``.
        shards: the number of input shards.
    """
    from datatrove.pipeline.readers import JsonlReader

    with quiet_datatrove():
        readers = [
            JsonlReader(str(work / "input")).run(rank=rank, world_size=shards)
            for rank in range(shards)
        ]
        pos = 0
        while (doc := next(readers[pos % shards], None)) is not None:
            yield pos, doc
            pos += 1
        # Dealt round-robin, the shards run out one after the other: a shard with documents
        # left means the numbering above was wrong.
        if any(next(reader, None) is not None for reader in readers):
            raise RuntimeError(f"dedup: the {shards} input shards were not dealt round-robin")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique arrays (1.0 for two empty ones)."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


class ShingleStore:
    """The n-gram sets of kept candidate documents, in a scratch file rather than in memory.

    Verification compares each candidate with the records kept before it, which may lie
    anywhere earlier in the input; holding every kept candidate's set would grow with the data
    (about 8 bytes per word of each record). Sets are appended to ``path`` and read back on
    demand through a small cache of the most recently used, bounded in bytes, which catches
    the common case of one kept record and its run of duplicates.

    Args:
        path: the scratch file.
        cache_bytes: the most the cache holds.
    """

    def __init__(self, path: Path, cache_bytes: int = 64 << 20):
        self._fh = path.open("w+b")
        self._where: dict[int, tuple[int, int]] = {}  # position -> (offset, count)
        self._end = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0
        self._limit = cache_bytes

    def put(self, pos: int, shingles: np.ndarray) -> None:
        """Stores the set of the document at ``pos`` (a sorted unique uint64 array)."""
        self._fh.seek(self._end)
        self._fh.write(shingles.tobytes())
        self._where[pos] = (self._end, shingles.size)
        self._end += shingles.nbytes
        self._remember(pos, shingles)

    def get(self, pos: int) -> np.ndarray:
        """The set stored for ``pos``."""
        hit = self._cache.get(pos)
        if hit is not None:
            self._cache.move_to_end(pos)
            return hit
        offset, count = self._where[pos]
        self._fh.seek(offset)
        shingles = np.frombuffer(self._fh.read(count * 8), dtype=np.uint64)
        self._remember(pos, shingles)
        return shingles

    def _remember(self, pos: int, shingles: np.ndarray) -> None:
        self._cache[pos] = shingles
        self._cached += shingles.nbytes
        while self._cached > self._limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes

    def close(self) -> None:
        self._fh.close()


class Verifier:
    """Decides, document by document in input order, which candidates are duplicates:
    keep-first over verified pairs.

    A document is a duplicate when its Jaccard similarity with a document already kept that
    shares one of its groups reaches ``threshold``; it then names the most similar such
    document (the earliest, on a tie). Decisions need only the documents before, so they are
    made while the shards are read once, in order.

    Args:
        groups: the candidate groups, as sorted tuples of input positions.
        threshold: the Jaccard similarity at or above which a candidate is a duplicate.
        store: where the n-gram sets of kept candidates are kept for later comparisons.
    """

    def __init__(self, groups: list[tuple[int, ...]], threshold: float, store: ShingleStore):
        self.groups_of: dict[int, list[int]] = {}
        for gi, group in enumerate(groups):
            for pos in group:
                self.groups_of.setdefault(pos, []).append(gi)
        self.last_of = [group[-1] for group in groups]
        self.kept_in: list[list[int]] = [[] for _ in groups]
        self.kept_ids: dict[int, str] = {}  # kept candidates a later document may name
        self.threshold = threshold
        self.store = store
        self.checked = self.refused = 0

    def is_candidate(self, pos: int) -> bool:
        """Whether the document at ``pos`` is in any candidate group."""
        return pos in self.groups_of

    def decide(self, pos: int, doc_id: str, shingles: np.ndarray) -> tuple[int, float] | None:
        """(position of the kept document it duplicates, Jaccard), or None when it is kept;
        ``kept_ids`` names the kept document.

        Args:
            pos: the document's input position; documents come in increasing order.
            doc_id: its record id.
            shingles: its n-gram set (a sorted unique uint64 array).
        """
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for gi in self.groups_of[pos]:
            for other in self.kept_in[gi]:
                if other in seen:
                    continue
                seen.add(other)
                sim = jaccard(shingles, self.store.get(other))
                self.checked += 1
                if sim < self.threshold:
                    self.refused += 1
                elif best is None or sim > best[1] or (sim == best[1] and other < best[0]):
                    best = (other, sim)
        if best is not None:
            return best
        later = False
        for gi in self.groups_of[pos]:
            self.kept_in[gi].append(pos)
            later = later or self.last_of[gi] > pos
        if later:  # only a document still to come can be compared with this one
            self.store.put(pos, shingles)
            self.kept_ids[pos] = doc_id
        return None

    def counts(self) -> dict[str, int]:
        return {"candidate_pairs": self.checked, "candidate_pairs_refused": self.refused}


# ----------------------------------------------------------------------------------- stage


def _snippet(record: Record, n: int = 70) -> str:
    """The start of a record, safe in a markdown table cell (placeholders like <PERSON> are
    not HTML tags, and a | would end the cell)."""
    text = " ".join(record.joined_text().split())
    text = text[:n] + ("..." if len(text) > n else "")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def summary(report: dict[str, Any]) -> str:
    """Duplicates dropped, cluster sizes, with a few examples and what each duplicates."""
    lines = [
        f"Read **{report['records_in']}** records: kept **{report['records_kept']}**, dropped "
        f"**{report['exact_duplicates']}** exact and **{report['near_duplicates']}** near duplicates "
        f"(in {report['minhash_clusters']} MinHash clusters; compared on the "
        f"{report.get('on', 'record')}).",
    ]
    sizes = report.get("cluster_sizes") or {}
    if sizes:
        lines += [
            "",
            "Near-duplicate clusters by size (kept record included): "
            + ", ".join(f"{n} of {size}" for size, n in sizes.items())
            + ".",
        ]
    if report.get("candidate_pairs"):
        lines += [
            "",
            f"LSH candidate pairs checked: {report['candidate_pairs']}; refused below Jaccard "
            f"{report.get('threshold')}: {report.get('candidate_pairs_refused', 0)}.",
        ]
    examples = report.get("examples", [])
    if examples:
        lines += ["", "| dropped | reason | duplicate of | Jaccard |", "|---|---|---|---|"]
        for ex in examples:
            sim = ex.get("jaccard")
            cell = f"{sim:.2f}" if isinstance(sim, int | float) else ""
            lines.append(
                f"| `{ex['id']}` {ex['snippet']} | {ex['reason']} | `{ex['duplicate_of']}` | {cell} |"
            )
    return "\n".join(lines)


def exact_pass(
    records, dcfg: DedupConfig, out: ArtifactWriter, work: Path, examples: list, shards: int
) -> tuple[int, int]:
    """Rejects exact duplicates; hands the rest to MinHash (as DataTrove shards) or keeps them.

    Args:
        records: the input records, streamed.
        dcfg: the dedup config (``exact``, ``minhash``, ``on``).
        out: the writer; exact duplicates are rejected here, records MinHash will not see kept.
        work: the work folder; ``input/`` receives the shards, one per DataTrove task.
        examples: collects a few (reason, record, kept id, jaccard) for the summary.
        shards: how many shards; the n-th MinHash document goes to shard ``n % shards``
            (``position`` and ``read_in_order`` rely on it).

    Returns:
        (records read, records written for MinHash).
    """
    from datatrove.pipeline.writers import JsonlWriter

    seen: dict[bytes, str] = {}  # digest of the normalised key -> id of the record kept
    n_in = n_minhash = 0
    with JsonlWriter(str(work / "input")) as writer:
        for record in track(records, "dedup: exact pass"):
            n_in += 1
            if dcfg.exact:
                key = exact_key(record, dcfg.on)
                if key in seen:
                    out.reject(record, "exact_duplicate", duplicate_of=seen[key], jaccard=1.0)
                    if len(examples) < 3:
                        examples.append(("exact_duplicate", record, seen[key], 1.0))
                    continue
                seen[key] = record.id
            # DataTrove's reader skips empty documents: they cannot be near-duplicates anyway,
            # so they are kept here rather than lost there.
            if dcfg.minhash and key_text(record, dcfg.on).strip():
                writer.write(to_document(record, dcfg.on), rank=n_minhash % shards)
                n_minhash += 1
            else:
                out.write(record)
    return n_in, n_minhash


def near_pass(
    dcfg: DedupConfig, out: ArtifactWriter, work: Path, examples: list, shards: int
) -> dict[str, Any]:
    """Runs MinHash LSH over the shards in ``work/input``, verifies the candidates, and keeps
    the first record of each cluster.

    Args:
        dcfg: the dedup config.
        out: the writer; survivors are kept, the others rejected as ``near_duplicate``.
        work: the work folder of ``exact_pass``.
        examples: collects a few (reason, record, kept id, jaccard) for the summary.
        shards: the number of shards ``exact_pass`` wrote.

    Returns:
        report fields: clusters, cluster sizes, candidate pairs checked and refused.
    """
    from datatrove.pipeline.dedup import MinhashDedupSignature

    run_lsh(work, dcfg, shards)
    groups = candidate_groups(work / "buckets", shards)
    # The same shingles DataTrove hashed, so a verified pair is the pair LSH proposed.
    sig = MinhashDedupSignature(
        output_folder=str(work / "verify"), config=minhash_config(dcfg), language=SpaceWordTokenizer()
    )
    store = ShingleStore(work / "shingles.bin")
    verifier = Verifier(groups, dcfg.threshold, store)
    del groups  # the verifier holds them by document
    per_keeper: Counter[int] = Counter()  # kept position -> records dropped for it
    n_examples = len(examples)
    try:
        for pos, doc in read_in_order(work, shards):
            record = Record.model_validate(doc.metadata["record"])
            hit = None
            if verifier.is_candidate(pos):
                shingles = np.unique(sig.get_shingles(doc.text).ravel())
                hit = verifier.decide(pos, doc.id, shingles)
            if hit is None:
                out.write(record)
                continue
            kept_pos, sim = hit
            kept_id = verifier.kept_ids[kept_pos]
            per_keeper[kept_pos] += 1
            sim = round(sim, 4)
            out.reject(record, "near_duplicate", duplicate_of=kept_id, jaccard=sim)
            if len(examples) < n_examples + 3:
                examples.append(("near_duplicate", record, kept_id, sim))
    finally:
        store.close()
    _keep_stats(work / "logs", out)
    sizes = Counter(n + 1 for n in per_keeper.values())
    return {
        "minhash_clusters": len(per_keeper),
        "cluster_sizes": {str(size): sizes[size] for size in sorted(sizes)},
        **verifier.counts(),
    }


# Records from which the signatures are shared out to run.workers processes (each starts in
# ~1 s; 10,000 records take ~4 s of signatures with whitespace words).
MIN_PARALLEL = 2000


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Writes the records of ``inputs[0]`` to ``out`` without exact or near duplicates.

    Args:
        inputs: the pii artifact.
        cfg: the ``dedup`` section (the stage's config slice).
        out: the writer; kept records, rejected duplicates (with ``duplicate_of`` and
            ``jaccard``) and the report.
    """
    dcfg = cfg.dedup
    work = new_scratch_dir("dedup")  # removed below; by a later run's sweep if killed
    examples: list[tuple[str, Record, str, float]] = []
    near_report: dict[str, Any] = {"minhash_clusters": 0, "cluster_sizes": {}}
    # As many shards as workers, so every worker has a share of the signatures to compute;
    # one for small inputs, where starting worker processes costs more than it saves.
    shards = executors.workers() if inputs[0].count >= MIN_PARALLEL else 1
    try:
        n_in, n_minhash = exact_pass(inputs[0].records(), dcfg, out, work, examples, shards)
        exact = out.counts["rejected"]
        if n_minhash:
            near_report = near_pass(dcfg, out, work, examples, shards)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    near = out.counts["rejected"] - exact
    kept = out.counts["data"]
    # The invariant the rejected shards exist for: every record read is kept or rejected.
    if kept + exact + near != n_in:
        raise RuntimeError(
            f"dedup lost records: read {n_in}, kept {kept}, rejected {exact} exact + {near} near"
        )
    out.report.update(
        records_in=n_in,
        records_kept=kept,
        exact_duplicates=exact,
        near_duplicates=near,
        minhash_records=n_minhash,
        on=dcfg.on,
        threshold=dcfg.threshold,
        minhash=(
            f"{dcfg.n_grams}-grams, {dcfg.num_buckets} bands x {dcfg.hashes_per_bucket} rows, "
            f"verified at Jaccard >= {dcfg.threshold}"
            if dcfg.minhash
            else "off"
        ),
        **near_report,
    )
    out.report["examples"] = [
        {
            "id": rec.id,
            "snippet": _snippet(rec),
            "reason": reason,
            "duplicate_of": kept_id,
            "jaccard": sim,
        }
        for reason, rec, kept_id, sim in examples
    ]


def _keep_stats(logs: Path, out: ArtifactWriter) -> None:
    """Copies DataTrove's per-step stats.json into the artifact (``minhash/<step>.json``)."""
    for stats in sorted(logs.glob("*/stats.json")):
        out.file(f"minhash/{stats.parent.name}.json").write_text(
            json.dumps(json.loads(stats.read_text()), indent=2)
        )


STAGE = Stage(
    name="dedup",
    version=2,
    config=DedupConfig,
    run=run,
    summary=summary,
    inputs=("pii",),
    description="Exact and MinHash deduplication, LSH candidates verified by Jaccard.",
)
