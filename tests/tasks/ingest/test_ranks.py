"""ingest over several ranks (``tasks/ingest/ranks.py``): the merged artifact is the one a single
process writes (records, rejections with their reasons and places, ids, the report), and a user
error inside a rank reaches the user as itself."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig, ranks
from tests.support.stages import run_plain
from tests.tasks.ingest.test_fuzz import mutate, valid_files
from tuneline.config import PipelineConfig
from tuneline.errors import InputError
from tuneline.sections import RunConfig

REPO = Path(__file__).resolve().parents[3]


def _sources(tmp_path: Path) -> list[SourceConfig]:
    """The demo corpus plus a folder of valid and damaged files of every kind."""
    rng = random.Random(11)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n, (suffix, data) in enumerate(sorted(valid_files(rng).items())):
        (folder / f"ok{n}{suffix}").write_bytes(data)
        (folder / f"bad{n}{suffix}").write_bytes(mutate(rng, data, suffix))
    demo = [SourceConfig(path=str(REPO / s.path), format=s.format) for s in IngestConfig().sources]
    return [*demo, SourceConfig(path=str(folder))]


def _run(root: Path, sources: list[SourceConfig], workers: int, **ingest_cfg):
    cfg = PipelineConfig(
        run=RunConfig(artifact_root=str(root), workers=workers),
        ingest=IngestConfig(sources=sources, **ingest_cfg),
    )
    art = run_plain(ingest, cfg, [])
    report = {k: v for k, v in art.report.items() if k not in ("seconds", "ranks")}
    return art, report


def test_ranks_write_what_one_process_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(ranks, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(ranks, "BATCH_ROWS", 3)  # many batches, so the ranks interleave
    sources = _sources(tmp_path)
    outs = {}
    for workers in (1, 2, 3):
        art, report = _run(tmp_path / f"w{workers}", sources, workers)
        assert art.report["ranks"] == workers
        outs[workers] = (
            [r.model_dump() for r in art.records()],
            list(art.rejected()),
            json.dumps(report, sort_keys=True, default=str),
        )
    kept, rejected, _ = outs[1]
    assert len(kept) > 50 and len(rejected) > 20
    assert len({r["reason"] for r in rejected}) >= 5  # filters and read errors alike
    assert outs[2] == outs[1]
    assert outs[3] == outs[1]


def test_a_user_error_in_a_rank_is_raised_as_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(ranks, "MIN_PARALLEL_BYTES", 0)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "A perfectly fine sentence of plain English text."}\n' * 20)
    (folder / "b.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"b\.jsonl\.gz cannot be read"):
        _run(tmp_path / "a", [SourceConfig(path=str(folder))], 2, fail_on_unreadable=True)
