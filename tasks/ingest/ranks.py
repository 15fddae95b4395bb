"""Parallel ingest: ranks on a DataTrove executor share the rows; their parts merge in input order.

Parsing rows and running the filters (language ID, the reply rules, Gopher) is what ingest spends
its time on, and every row is independent, so for inputs of MIN_PARALLEL_BYTES or more
``run.workers`` ranks run on ``run.executor`` (``tuneline/executors.py``). Each rank reads every
source (cheap) and takes every ``world``-th batch of BATCH_ROWS rows (``sources.RankShare``);
what it keeps and rejects goes to its own part file, tagged with the batch. The stage's process
then replays the parts batch by batch into the artifact, so records, rejections, ids and the
report are the same as in one process.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.ingest.config import IngestConfig
from tasks.ingest.filters import FilterChain
from tasks.ingest.sources import RankShare, ingest_source
from tuneline.artifacts import ArtifactWriter
from tuneline.records import Record

BATCH_ROWS = 256
# Smaller inputs stay in one process: a rank's start (imports, fastText's model) costs about
# what ingesting 1 MB does.
MIN_PARALLEL_BYTES = 2_000_000


@dataclass
class Findings:
    """What the filters saw, summed over ranks (the report's languages and examples)."""

    languages: Counter = field(default_factory=Counter)
    unknown_kept: int = 0
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, filters: FilterChain) -> Findings:
        return cls(filters.languages_seen, filters.language_unknown_kept, filters.examples)


class PartWriter:
    """A rank's stand-in for the ArtifactWriter: kept and rejected rows, in order, each tagged
    with its batch; and the batch where each filter reason's example was found, so the merged
    report shows the first example in input order.

    Args:
        path: the part file.
        share: this rank's share (its ``batch`` tags the rows).
        filters: the rank's filter chain, whose examples are watched.
    """

    def __init__(self, path: Path, share: RankShare, filters: FilterChain):
        # Level 1: a part lives for one run; compressing harder costs more than it saves.
        self.fh = gzip.open(path, "wt", encoding="utf-8", compresslevel=1)
        self.share, self.filters = share, filters
        self.example_batch: dict[str, int] = {}
        self.last_batch = -1  # the batch of the last row written

    def _add(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.last_batch = row["b"]
        self._place_examples()

    def _place_examples(self) -> None:
        """Tags each example not yet placed with the batch of the last row written: every
        example is of a row this rank took, and the ones noted so far are of rows up to it."""
        if len(self.filters.examples) != len(self.example_batch):
            for reason in self.filters.examples.keys() - self.example_batch.keys():
                self.example_batch[reason] = self.last_batch

    def write(self, record: Record) -> None:
        self._add({"b": self.share.batch, "r": record.model_dump(mode="json", exclude_none=True)})

    def reject(self, record: Record | dict[str, Any], reason: str, **detail: Any) -> None:
        row = (
            record.model_dump(mode="json", exclude_none=True)
            if isinstance(record, Record)
            else record
        )
        self._add({"b": self.share.batch, "x": reason, "d": detail, "r": row})

    def close(self) -> None:
        # An example noted after the rank's last row (a caller that writes first, then notes
        # it) still gets its batch: the merge looks up the batch of every example it is handed.
        self._place_examples()
        self.fh.close()


def ingest_rank(cfg_json: str, cwd: str, work: str, size: int, rank: int, world: int) -> None:
    """One rank: its share of every source into ``parts/<rank>.jsonl.gz`` and ``<rank>.json``.

    Args:
        cfg_json: the ingest section, as JSON.
        cwd: the stage's working folder (relative source paths resolve against it; a Ray
            worker starts elsewhere).
        work: the scratch folder.
        size: rows per batch.
        rank: this rank.
        world: how many ranks.
    """
    from tuneline.executors import mark_done, rank_errors

    os.chdir(cwd)
    icfg = IngestConfig.model_validate_json(cfg_json)
    parts, done = Path(work) / "parts", Path(work) / "done"
    parts.mkdir(parents=True, exist_ok=True)
    with rank_errors(done, rank):
        filters = FilterChain.from_config(icfg)
        share = RankShare(rank, world, size)
        part = PartWriter(parts / f"{rank:05d}.jsonl.gz", share, filters)
        try:
            lines = [ingest_source(i, icfg, filters, part, share) for i in range(len(icfg.sources))]
        finally:
            part.close()
    found = Findings.of(filters)
    stats = {
        "sources": lines,
        "languages": found.languages,
        "unknown_kept": found.unknown_kept,
        "examples": found.examples,
        "example_batch": part.example_batch,
    }
    (parts / f"{rank:05d}.json").write_text(json.dumps(stats, ensure_ascii=False, default=str))
    mark_done(done, rank)


class IngestRanks:
    """The DataTrove pipeline step of a parallel ingest (a plain callable; pickles by value).

    Args:
        cfg_json: the ingest section, as JSON.
        cwd: the stage's working folder.
        work: the scratch folder.
        size: rows per batch.
    """

    def __init__(self, cfg_json: str, cwd: str, work: str, size: int):
        self.cfg_json, self.cwd, self.work, self.size = cfg_json, cwd, work, size

    def __repr__(self) -> str:  # DataTrove lists the steps of each rank in its log
        return "tuneline ingest: parse and filter this rank's batches"

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        ingest_rank(self.cfg_json, self.cwd, self.work, self.size, rank, world_size)
        return iter(())


def _merge_lines(per_rank: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each source's report line, summed over the ranks (files skipped: every rank saw them all)."""
    merged = []
    for lines in zip(*per_rank, strict=True):
        line = dict(lines[0])
        for k in ("read", "kept", "rejected"):
            line[k] = sum(x[k] for x in lines)
        kinds: Counter = Counter()
        for x in lines:
            kinds.update(x["kinds"])
        line["kinds"] = dict(sorted(kinds.items()))
        unreadable = sorted(
            (u for x in lines for u in x.get("unreadable_files", [])), key=lambda u: u["file"]
        )
        line.pop("error", None)
        line.pop("unreadable_files", None)
        if unreadable:
            line["error"] = "; ".join(f"{u['file']}: {u['error']}" for u in unreadable)[:2000]
            line["unreadable_files"] = unreadable
        merged.append(line)
    return merged


def ingest_parallel(
    icfg: IngestConfig, out: ArtifactWriter, world: int
) -> tuple[list[dict[str, Any]], Findings]:
    """Runs ``world`` ranks and replays their parts into ``out``; returns the sources' report
    lines and what the filters found.

    Args:
        icfg: the ingest section.
        out: the artifact being written.
        world: how many ranks.
    """
    from tuneline import executors
    from tuneline.scratch import scratch_dir

    with scratch_dir("ingest") as work:
        step = IngestRanks(icfg.model_dump_json(), os.getcwd(), str(work), BATCH_ROWS)
        executors.run_ranks(
            executors.make_executor([step], world, work / "logs"), work / "done", "ingest"
        )
        stats = [json.loads((work / "parts" / f"{r:05d}.json").read_text()) for r in range(world)]
        for row in executors.merged_parts(work / "parts", world):
            if "x" in row:
                out.reject(row["r"], row["x"], **row["d"])
            else:
                out.write(Record.model_validate(row["r"]))
    found = Findings()
    for st in stats:
        found.languages.update(st["languages"])
        found.unknown_kept += st["unknown_kept"]
    for reason in sorted({r for st in stats for r in st["examples"]}):
        first = min(
            (st for st in stats if reason in st["examples"]),
            key=lambda st: st["example_batch"][reason],
        )
        found.examples[reason] = first["examples"][reason]
    return _merge_lines([st["sources"] for st in stats]), found
