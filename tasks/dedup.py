"""dedup: drops exact and near-duplicate records, so no example is trained on many times over.

Duplicates waste compute, skew the data mix and make a model memorise. Two passes run over
``Record.joined_text()`` (every string of the record, so a chat and a preference pair are
compared as a whole):

1. exact: the text lowercased, without punctuation, whitespace collapsed. The first occurrence
   is kept; later ones are rejected as ``exact_duplicate`` with ``duplicate_of`` its id.
2. near (MinHash LSH, DataTrove's four-step pipeline): signatures of word n-grams ->
   buckets of colliding bands -> clusters of connected duplicates -> filter that keeps one record
   per cluster. The rest are rejected as ``near_duplicate`` with ``duplicate_of`` the record kept
   in their cluster (read from the cluster ids DataTrove writes into each document).
   With the default 14 bands x 8 rows, a pair whose 5-gram sets have Jaccard similarity 0.8 is
   caught with probability 0.92 (0.99 at 0.85, 0.65 at 0.72, 0.05 at 0.5).

A record with fewer words than ``dedup.n_grams`` has no shingles: MinHash cannot compare it and
keeps it. DataTrove's work files (signatures, buckets, clusters) live in a temporary folder
(``$TMPDIR``); its per-step stats are kept in the artifact under ``minhash/``. With
``dedup.workers`` > 1 DataTrove runs its tasks in forkserver processes, which log on their own.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.progress import track
from tuneline.records import Record
from tuneline.scratch import new_scratch_dir
from tuneline.sections import Section
from tuneline.stage import Stage

# --------------------------------------------------------------------------------- dedup


class DedupConfig(Section):
    exact: bool = Field(default=True, description="Drop records whose normalised text is identical.")
    minhash: bool = Field(default=True, description="Drop near-duplicates with DataTrove MinHash LSH.")
    n_grams: int = Field(default=5, ge=1, description="Word n-gram size of the MinHash shingles.")
    num_buckets: int = Field(default=14, ge=1, description="LSH bands.")
    hashes_per_bucket: int = Field(default=8, ge=1, description="Rows per band (higher: stricter).")
    workers: int = Field(default=1, ge=1, description="Parallel DataTrove tasks.")



_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


# --------------------------------------------------------------------------------- exact


def normalise(text: str) -> str:
    """The form exact dedup compares: lowercase, no punctuation, single spaces.

    Args:
        text: a record's joined text.
    """
    return _SPACE.sub(" ", _PUNCT.sub("", text.lower())).strip()


def exact_key(record: Record) -> bytes:
    """A digest of the normalised joined text: what exact dedup remembers per kept record."""
    text = record.joined_text()
    # All-punctuation text normalises to "": compare such records as they are instead.
    norm = normalise(text) or text
    return hashlib.sha256(norm.encode("utf-8")).digest()


# --------------------------------------------------------------------------------- minhash


@contextmanager
def quiet_datatrove():
    """Mutes DataTrove's loguru output (every step logs at INFO to stderr) inside the block.

    Its per-step stats.json files are the useful record and are written regardless; errors
    still raise. Worker processes (``dedup.workers`` > 1) set up their own logging.
    """
    from datatrove.utils.logging import logger

    logger.disable("datatrove")
    try:
        yield
    finally:
        logger.enable("datatrove")


def minhash_config(dcfg: DedupConfig):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    return MinhashConfig(
        hash_config=HashConfig(precision=64),
        num_buckets=dcfg.num_buckets,
        hashes_per_bucket=dcfg.hashes_per_bucket,
        n_grams=dcfg.n_grams,
    )


def to_document(record: Record):
    """A DataTrove Document: the joined text to hash, the whole record riding in metadata."""
    from datatrove.data import Document

    return Document(
        text=record.joined_text(),
        id=record.id,
        metadata={"record": record.model_dump(mode="json", exclude_none=True)},
    )


def run_minhash(work: Path, dcfg: DedupConfig) -> None:
    """Runs DataTrove's MinHash signature -> buckets -> cluster -> filter over ``work/input``.

    Writes the kept documents to ``work/kept`` and the dropped ones to ``work/removed``, each
    with ``metadata["minhash_cluster_id"]`` (-1 for a document in no cluster).

    Args:
        work: the work folder; ``input/`` holds one JSONL shard per worker.
        dcfg: the dedup config (n-grams, bands, rows per band, workers).
    """
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    mh = minhash_config(dcfg)
    shards = dcfg.workers
    logs = work / "logs"

    def executor(name: str, pipeline: list, tasks: int, depends=None) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(dcfg.workers, tasks),
            logging_dir=str(logs / name),
            depends=depends,
        )

    signatures = executor(
        "1_signatures",
        [
            JsonlReader(str(work / "input")),
            MinhashDedupSignature(output_folder=str(work / "signatures"), config=mh),
        ],
        tasks=shards,
    )
    buckets = executor(
        "2_buckets",
        [
            MinhashDedupBuckets(
                input_folder=str(work / "signatures"),
                output_folder=str(work / "buckets"),
                config=mh,
            )
        ],
        tasks=mh.num_buckets,  # one task per band: DataTrove requires a multiple of num_buckets
        depends=signatures,
    )
    clusters = executor(
        "3_clusters",
        [
            MinhashDedupCluster(
                input_folder=str(work / "buckets"),
                output_folder=str(work / "remove"),
                config=mh,
                save_cluster_id=True,
            )
        ],
        tasks=1,  # union-find over all pairs: one task by design
        depends=buckets,
    )
    filtered = executor(
        "4_filter",
        [
            JsonlReader(str(work / "input")),
            MinhashDedupFilter(
                input_folder=str(work / "remove"),
                exclusion_writer=JsonlWriter(str(work / "removed")),
                load_cluster_ids=True,
            ),
            JsonlWriter(str(work / "kept")),
        ],
        tasks=shards,
    )
    with quiet_datatrove():
        clusters.run()  # runs signatures and buckets first, through depends=
        _fill_missing_rank_files(work / "remove", shards)
        filtered.run()


def _fill_missing_rank_files(remove_dir: Path, shards: int) -> None:
    """Gives every rank a (possibly empty) .remove and .clusters file.

    The cluster step writes them only for ranks that hold a clustered document, and the filter
    skips its cluster-id annotation for a rank without a .remove file: the kept record of a
    cluster would then carry no id to name it by.
    """
    remove_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(shards):
        for ext in ("remove", "clusters"):
            (remove_dir / f"{rank:06d}.{ext}").touch(exist_ok=True)


def _read_docs(folder: Path):
    """The documents DataTrove wrote under ``folder`` (none if it wrote nothing)."""
    from datatrove.pipeline.readers import JsonlReader

    if not folder.exists() or not any(folder.glob("*.jsonl*")):
        return
    with quiet_datatrove():
        yield from JsonlReader(str(folder)).run()


# ----------------------------------------------------------------------------------- stage


def _snippet(record: Record, n: int = 70) -> str:
    """The start of a record, safe in a markdown table cell (placeholders like <PERSON> are
    not HTML tags, and a | would end the cell)."""
    text = " ".join(record.joined_text().split())
    text = text[:n] + ("..." if len(text) > n else "")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def summary(report: dict[str, Any]) -> str:
    """Duplicates dropped, with a few examples and what each duplicates."""
    lines = [
        f"Read **{report['records_in']}** records: kept **{report['records_kept']}**, dropped "
        f"**{report['exact_duplicates']}** exact and **{report['near_duplicates']}** near duplicates "
        f"(in {report['minhash_clusters']} MinHash clusters).",
    ]
    examples = report.get("examples", [])
    if examples:
        lines += ["", "| dropped | reason | duplicate of |", "|---|---|---|"]
        for ex in examples:
            lines.append(f"| `{ex['id']}` {ex['snippet']} | {ex['reason']} | `{ex['duplicate_of']}` |")
    return "\n".join(lines)


def exact_pass(
    records, dcfg: DedupConfig, out: ArtifactWriter, work: Path, examples: list
) -> tuple[int, int]:
    """Rejects exact duplicates; hands the rest to MinHash (as DataTrove shards) or keeps them.

    Args:
        records: the input records, streamed.
        dcfg: the dedup config (``exact``, ``minhash``, ``workers``).
        out: the writer; exact duplicates are rejected here, records MinHash will not see kept.
        work: the work folder; ``input/`` receives one JSONL shard per DataTrove task.
        examples: collects a few (reason, record, kept id) for the summary.

    Returns:
        (records read, records written for MinHash).
    """
    from datatrove.pipeline.writers import JsonlWriter

    seen: dict[bytes, str] = {}  # digest of the normalised text -> id of the record kept
    n_in = n_minhash = 0
    with JsonlWriter(str(work / "input")) as shards:
        for record in track(records, "dedup: exact pass"):
            n_in += 1
            if dcfg.exact:
                key = exact_key(record)
                if key in seen:
                    out.reject(record, "exact_duplicate", duplicate_of=seen[key])
                    if len(examples) < 3:
                        examples.append(("exact", record, seen[key]))
                    continue
                seen[key] = record.id
            # DataTrove's reader skips empty documents: they cannot be near-duplicates anyway,
            # so they are kept here rather than lost there.
            if dcfg.minhash and record.joined_text().strip():
                shards.write(to_document(record), rank=n_minhash % dcfg.workers)
                n_minhash += 1
            else:
                out.write(record)
    return n_in, n_minhash


def near_pass(dcfg: DedupConfig, out: ArtifactWriter, work: Path, examples: list) -> int:
    """Runs MinHash over the shards in ``work/input``; keeps one record per cluster.

    Args:
        dcfg: the dedup config.
        out: the writer; survivors are kept, the others rejected as ``near_duplicate``.
        work: the work folder of ``exact_pass``.
        examples: collects a few (reason, record, kept id) for the summary.

    Returns:
        the number of clusters that lost records.
    """
    run_minhash(work, dcfg)
    keeper: dict[int, str] = {}  # cluster id -> id of the record kept from it
    for doc in _read_docs(work / "kept"):
        cid = doc.metadata.get("minhash_cluster_id", -1)
        if cid != -1:
            keeper[cid] = doc.id
        out.write(Record.model_validate(doc.metadata["record"]))
    clusters: set[int] = set()
    n_examples = len(examples)
    for doc in _read_docs(work / "removed"):
        cid = doc.metadata["minhash_cluster_id"]
        clusters.add(cid)
        record = Record.model_validate(doc.metadata["record"])
        out.reject(record, "near_duplicate", duplicate_of=keeper.get(cid), cluster=cid)
        if len(examples) < n_examples + 3:
            examples.append(("near", record, keeper.get(cid)))
    _keep_stats(work / "logs", out)
    return len(clusters)


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Writes the records of ``inputs[0]`` to ``out`` without exact or near duplicates.

    Args:
        inputs: the pii artifact.
        cfg: the ``dedup`` section (the stage's config slice).
        out: the writer; kept records, rejected duplicates (with ``duplicate_of``) and the report.
    """
    dcfg = cfg.dedup
    work = new_scratch_dir("dedup")  # removed below; by a later run's sweep if killed
    examples: list[tuple[str, Record, str]] = []
    try:
        n_in, n_minhash = exact_pass(inputs[0].records(), dcfg, out, work, examples)
        exact = out.counts["rejected"]
        clusters = near_pass(dcfg, out, work, examples) if n_minhash else 0
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
        minhash_clusters=clusters,
        minhash_records=n_minhash,
        minhash=(
            f"{dcfg.n_grams}-grams, {dcfg.num_buckets} bands x {dcfg.hashes_per_bucket} rows"
            if dcfg.minhash
            else "off"
        ),
    )
    out.report["examples"] = [
        {"id": rec.id, "snippet": _snippet(rec), "reason": reason, "duplicate_of": kept_id}
        for reason, rec, kept_id in examples
    ]


def _keep_stats(logs: Path, out: ArtifactWriter) -> None:
    """Copies DataTrove's per-step stats.json into the artifact (``minhash/<step>.json``)."""
    for stats in sorted(logs.glob("*/stats.json")):
        out.file(f"minhash/{stats.parent.name}.json").write_text(
            json.dumps(json.loads(stats.read_text()), indent=2)
        )


STAGE = Stage(
    name="dedup",
    version=1,
    config=DedupConfig,
    run=run,
    summary=summary,
    inputs=("pii",),
    description="Exact and MinHash deduplication.",
)
