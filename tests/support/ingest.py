"""Running the ingest stage in tests: configs from a few sources, and finding planted rows."""

from __future__ import annotations

import json
from pathlib import Path

from tasks import ingest
from tasks.ingest import IngestConfig, SourceConfig
from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.config import PipelineConfig

# Filters that would get in the way of a test about shapes: keep every language, no Gopher rules.
LENIENT = {"languages": [], "quality_filter": False, "min_chars": 0}


def make_cfg(sources: list[SourceConfig | str | Path], **ingest_fields) -> PipelineConfig:
    srcs = [s if isinstance(s, SourceConfig) else SourceConfig(path=str(s)) for s in sources]
    return PipelineConfig(ingest=IngestConfig(sources=srcs, **ingest_fields))


def run_ingest(root: Path, cfg: PipelineConfig) -> Artifact:
    store = ArtifactStore(root)
    with store.writer("ingest", ingest.STAGE.key(cfg, []), [], cfg.ingest) as out:
        ingest.run([], ingest.STAGE.slice(cfg), out)
        ref = out.commit()
    return store.open(ref)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def rejected_by_text(art: Artifact) -> dict[str, dict]:
    """Rejected rows keyed by their JSON text, so a test can find a planted row by a snippet."""
    return {json.dumps(r, ensure_ascii=False): r for r in art.rejected()}


def find(rows: dict[str, dict], snippet: str) -> dict:
    hits = [r for text, r in rows.items() if snippet in text]
    assert len(hits) == 1, f"expected one row containing {snippet!r}, found {len(hits)}"
    return hits[0]
