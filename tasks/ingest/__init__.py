"""ingest: read every configured source, normalise it to tuneline records, drop what cannot train.

Sources are JSONL (plain or gzip), JSON, Parquet, HTML and WARC/ARC files, or folders of them.
Each row is recognised as one of the common fine-tuning shapes (Alpaca, ShareGPT, OpenAI messages,
preference pairs including hh-rlhf transcripts, raw text) and turned into a
:class:`tuneline.records.Record`; HTML pages go through trafilatura, which keeps the main text
and strips navigation and footers. Then cheap filters run before expensive ones: broken UTF-8,
empty / too short / too long, refusals, language (fastText lid.176 through datatrove's
LanguageFilter) and, for text documents, datatrove's Gopher quality and repetition rules.

Nothing vanishes: a row that does not decode or parse, and every record a filter drops, is kept
in the artifact's ``rejected/`` shards with its reason, so the report's counts always add up
(read = kept + rejected). Files are read as bytes and decoded line by line, so one bad line costs
one record, not the file.

Where things are:

- ``config``: the ``ingest`` section (``IngestConfig``, ``SourceConfig``);
- ``readers/``: one module per kind of file (``jsonl``, ``json_file``, ``parquet``, ``html``,
  ``warc``), and the folder walk;
- ``tuneline.shapes``: the row shapes (parse here, dump in format's exports);
- ``filters/``: one module per rejection reason, and the chain that orders them;
- ``sources``: one source end to end (read -> parse -> filter -> write);
- ``ranks``: the same over ``run.workers`` ranks on a DataTrove executor, for large inputs.

Heavy libraries (trafilatura, datatrove, fastText, ftfy) are imported where they are used, so
importing the stage (the registry does, to build the config) stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.ingest import ranks
from tasks.ingest.config import IngestConfig, SourceConfig
from tasks.ingest.filters import FilterChain
from tasks.ingest.ranks import Findings, ingest_parallel
from tasks.ingest.sources import ingest_source, source_path
from tuneline.artifacts import Artifact, ArtifactWriter, hash_bytes_of
from tuneline.errors import InputError
from tuneline.stage import Stage

__all__ = ["STAGE", "IngestConfig", "SourceConfig", "run", "source_keys", "summary"]


def source_keys(cfg) -> list[str]:
    """sha256 of each source's bytes, so editing a file at the same path invalidates ingest.

    Args:
        cfg: the stage's config slice; only ``cfg.ingest.sources`` is read.

    Raises:
        InputError: a source path does not exist (the message names ingest.sources[i].path).
        InputError: two sources hold the same bytes (their records would get the same ids).
    """
    keys: list[str] = []
    for i in range(len(cfg.ingest.sources)):
        key = hash_bytes_of(source_path(cfg.ingest, i))
        if key in keys:
            j = keys.index(key)
            raise InputError(
                f"ingest.sources[{i}].path ({cfg.ingest.sources[i].path}) has the same content as "
                f"ingest.sources[{j}].path ({cfg.ingest.sources[j].path}); list it once"
            )
        keys.append(key)
    return keys


def summary(report: dict[str, Any]) -> str:
    """Records read, kept and rejected, per source and per reason."""
    reasons = report.get("rejected_by_reason", {})
    read, kept = report["records_read"], report["records_kept"]
    lines = [
        "## ingest",
        "",
        f"Read **{read}** records from {len(report['sources'])} sources: "
        + f"kept **{kept}**, rejected **{read - kept}**.",
        "",
        "| source | format | read | kept | rejected |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {s['path']} | {s['format']} | {s['read']} | {s['kept']} | {s['rejected']} |"
        for s in report["sources"]
    ]
    if reasons:
        examples = report.get("examples", {})

        def shown(reason: str) -> str:
            ex = examples.get(reason)
            if not ex:
                return ""
            text = str(ex.get("snippet") or ex.get("sample") or "").replace("|", "\\|")
            return f"`{ex.get('rule') or ex.get('lang') or ''}` {text}".replace("`` ", "")

        lines += ["", "| rejected because | records | example |", "|---|---:|---|"]
        by_count = sorted(reasons.items(), key=lambda x: -x[1])
        lines += [f"| {r} | {n} | {shown(r)} |" for r, n in by_count]
    for src in report["sources"]:
        if src.get("empty"):
            lines += ["", f"Source `{src['path']}` holds no rows (empty)."]
        for u in src.get("unreadable_files", []):
            lines += ["", f"Could not read `{u['file'] or src['path']}` ({src['path']}): {u['error']}"]
        skipped = src.get("skipped_files", [])
        if skipped:
            shown_files = ", ".join(f"`{f['file']}` ({f['reason']})" for f in skipped[:10])
            more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            lines += ["", f"Skipped in {src['path']}: {shown_files}{more}."]
    if report.get("language_unknown_kept"):
        lines += [
            "",
            f"Kept **{report['language_unknown_kept']}** records whose language could not be "
            "told (too short or too symbolic), because their source declares a wanted language.",
        ]
    if report["languages"]:
        langs = ", ".join(f"{k} {v}" for k, v in report["languages"].items())
        lines += ["", f"Languages seen (fastText lid.176): {langs}."]
    return "\n".join(lines)


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Reads every source in ``cfg.ingest.sources`` into ``out``, rejecting what cannot train.

    Args:
        inputs: unused (ingest is the first stage); kept for the stage contract.
        cfg: the stage's config slice; ``cfg.ingest`` is the ingest section.
        out: the artifact writer that receives kept records, rejections and the report.
    """
    icfg = cfg.ingest
    source_keys(cfg)  # fail fast, naming the config field, before reading anything
    world = _ranks(icfg)
    if world == 1:
        filters = FilterChain.from_config(icfg)
        sources = [ingest_source(i, icfg, filters, out) for i in range(len(icfg.sources))]
        found = Findings.of(filters)
    else:
        sources, found = ingest_parallel(icfg, out, world)
    empty = _flag_empty(sources)
    read = sum(s["read"] for s in sources)
    kept = sum(s["kept"] for s in sources)
    # The invariant the rejected shards exist for: every row read is either kept or rejected.
    rejected = out.counts["rejected"]
    assert kept + rejected == read, (
        f"ingest lost records: read {read}, kept {kept}, rejected {rejected}"
    )
    out.report.update(
        records_read=read,
        records_kept=kept,
        sources=sources,
        languages=dict(found.languages.most_common()),
        language_unknown_kept=found.unknown_kept,
        examples=found.examples,  # the first rejected record of each filter's reason
        empty_sources=empty,
        ranks=world,
    )


def _flag_empty(sources: list[dict[str, Any]]) -> int:
    """Marks the report lines of sources that held no row at all (``empty: true``), with a
    warning naming each, and returns how many: an empty file, or a folder with nothing a
    reader takes, is more often a wrong path or a failed export than an intended input."""
    n = 0
    for src in sources:
        if src["read"] == 0:
            src["empty"] = True
            n += 1
            files = len(src.get("skipped_files", []))
            skipped = f" ({files} files in it skipped)" if files else ""
            logging.getLogger("tuneline").warning(
                "ingest: source %s holds no rows%s; check that it is the file you meant and "
                "that it was written completely", src["path"], skipped,
            )
    return n


def _ranks(icfg: IngestConfig) -> int:
    """How many ranks share the rows: ``run.workers`` from MIN_PARALLEL_BYTES of input up."""
    from tuneline import executors

    size = 0
    for i in range(len(icfg.sources)):
        path = source_path(icfg, i)
        size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return 1 if size < ranks.MIN_PARALLEL_BYTES else executors.workers()


STAGE = Stage(
    name="ingest",
    # 2: folders of every kind, WARC, oversized rows, unreadable files reported
    # 3: filters by record kind (reply rules, Gopher words without punctuation, CJK lengths),
    #    language ID on the prose part with "unknown", examples per reason in the report
    # 4: a JSON list cut part-way keeps its items before the cut; NaN/Infinity literals and
    #    ShareGPT value lists are unparseable; empty sources flagged in the report
    version=4,
    config=IngestConfig,
    run=run,
    summary=summary,
    source_keys=source_keys,
    description="Reading and filtering sources.",
)
