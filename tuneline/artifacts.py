"""Content-addressed artifact store: the source of truth between stages.

An artifact lives at ``<root>/<stage>/<key>/``. Its key hashes everything that decides its
content: the stage name, the stage's ``VERSION``, the canonical JSON of the stage's resolved
config, and the keys of its inputs (an input *file* contributes the hash of its bytes, not its
path). So a second run with nothing changed finds every artifact and does no work, and a change
anywhere invalidates exactly the artifacts downstream of it.

Layout of one artifact::

    manifest.json         written last: an artifact without it is incomplete and never read
    report.json           counts and metrics, shown in the Prefect UI and by `tuneline status`
    data/*.jsonl.gz       records kept (tuneline.records schema)
    rejected/*.jsonl.gz   every record dropped, with ``reason`` (nothing vanishes silently)
    ...                   stage files: tokenizer/, adapter/, plots, exports

A writer fills a private staging directory and renames it into place in one step, so a crash
at any point leaves either the whole artifact or nothing. The root is an fsspec URL: a local
path by default, ``s3://bucket/prefix`` and friends for shared storage; remote artifacts are
uploaded whole before their manifest, and read through a local cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from tuneline.records import Record, dump_jsonl_gz, load_jsonl_gz

SHARD_SIZE = 50_000  # records per shard: keeps one shard small enough to stream and resume


class ArtifactRef(BaseModel):
    """The only thing stages hand each other: where an artifact is, never its data."""

    stage: str = Field(description="The stage that wrote it.")
    key: str = Field(description="Content key (sha256 hex).")
    uri: str = Field(description="Directory URL of the artifact.")

    @property
    def short(self) -> str:
        return self.key[:12]


def canonical_json(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_bytes_of(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a directory's (relative names + file hashes)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            h.update(hash_bytes_of(f).encode())
        return h.hexdigest()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_key(stage: str, version: int, config: Any, input_keys: Iterable[str]) -> str:
    h = hashlib.sha256()
    h.update(f"stage={stage}\nversion={version}\n".encode())
    h.update(b"config=" + canonical_json(config).encode() + b"\n")
    for k in input_keys:
        h.update(b"input=" + k.encode() + b"\n")
    return h.hexdigest()


class ArtifactStore:
    """Artifacts under one fsspec root."""

    def __init__(self, root: str | os.PathLike):
        self.root = str(root).rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = (
            Path(self._root_path)
            if self.local
            else Path(os.environ.get("TUNELINE_CACHE", Path.home() / ".cache" / "tuneline"))
        )

    # -- addressing --

    def _dir(self, stage: str, key: str) -> str:
        return f"{self._root_path}/{stage}/{key}"

    def uri(self, stage: str, key: str) -> str:
        return f"{self.root}/{stage}/{key}"

    def ref(self, stage: str, key: str) -> ArtifactRef:
        return ArtifactRef(stage=stage, key=key, uri=self.uri(stage, key))

    def exists(self, stage: str, key: str) -> bool:
        """Complete artifacts only: a directory without manifest.json is a crashed write."""
        return self.fs.exists(f"{self._dir(stage, key)}/manifest.json")

    def list(self, stage: str) -> list[str]:
        base = f"{self._root_path}/{stage}"
        if not self.fs.exists(base):
            return []
        keys = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return [k for k in keys if not k.startswith(".") and self.exists(stage, k)]

    # -- writing --

    def writer(self, stage: str, key: str, inputs: list[ArtifactRef], config: Any) -> ArtifactWriter:
        return ArtifactWriter(self, stage, key, inputs, config)

    # -- reading --

    def open(self, ref: ArtifactRef) -> Artifact:
        stage, key = ref.stage, ref.key
        if not self.exists(stage, key):
            raise FileNotFoundError(
                f"artifact {stage}/{key[:12]} is missing or incomplete under {self.root}; "
                f"run the `{stage}` stage first (tuneline run --only {stage})"
            )
        if self.local:
            return Artifact(ref, Path(self._dir(stage, key)))
        local = self.cache_dir / stage / key
        if not (local / "manifest.json").exists():
            tmp = local.with_name(f".{key}.{uuid.uuid4().hex[:8]}")
            self.fs.get(self._dir(stage, key) + "/", str(tmp), recursive=True)
            tmp.rename(local)
        return Artifact(ref, local)


class Artifact:
    """A complete artifact on local disk, read-only."""

    def __init__(self, ref: ArtifactRef, path: Path):
        self.ref = ref
        self.path = path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def report(self) -> dict[str, Any]:
        p = self.path / "report.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def _rows(self, sub: str) -> Iterator[dict[str, Any]]:
        for shard in sorted((self.path / sub).glob("*.jsonl.gz")):
            with open(shard, "rb") as fh:
                yield from load_jsonl_gz(fh)

    def records(self, sub: str = "data") -> Iterator[Record]:
        for row in self._rows(sub):
            yield Record.model_validate(row)

    def rejected(self) -> Iterator[dict[str, Any]]:
        """Dropped records: ``{"reason": ..., "record": {...}, ...}``."""
        return self._rows("rejected")


class ArtifactWriter:
    """Fills a staging directory; ``commit()`` publishes it atomically, manifest last.

    Use as a context manager: leaving the block with an exception discards the staging
    directory, leaving the store exactly as it was.
    """

    def __init__(self, store: ArtifactStore, stage: str, key: str, inputs: list[ArtifactRef], config: Any):
        self.store, self.stage, self.key = store, stage, key
        self.inputs, self.config = inputs, config
        if store.local:
            parent = Path(store._root_path) / stage
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=parent))
        else:
            self.path = Path(tempfile.mkdtemp(prefix=f"tuneline-{stage}-"))
        self.report: dict[str, Any] = {}
        self._buffers: dict[str, list[dict[str, Any]]] = {"data": [], "rejected": []}
        self._shards: dict[str, int] = {"data": 0, "rejected": 0}
        self.counts: dict[str, int] = {"data": 0, "rejected": 0}
        self.reasons: dict[str, int] = {}
        self.started = time.time()
        self.committed = False

    # -- records --

    def write(self, record: Record) -> None:
        self._add("data", record.model_dump(mode="json", exclude_none=True))

    def write_all(self, records: Iterable[Record]) -> None:
        for r in records:
            self.write(r)

    def reject(self, record: Record | dict[str, Any], reason: str, **detail: Any) -> None:
        """Keeps a dropped record with why it was dropped (and e.g. which record it duplicates)."""
        row = record.model_dump(mode="json", exclude_none=True) if isinstance(record, Record) else record
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self._add("rejected", {"reason": reason, **detail, "record": row})

    def _add(self, sub: str, row: dict[str, Any]) -> None:
        self._buffers[sub].append(row)
        self.counts[sub] += 1
        if len(self._buffers[sub]) >= SHARD_SIZE:
            self._flush(sub)

    def _flush(self, sub: str) -> None:
        rows = self._buffers[sub]
        if not rows:
            return
        d = self.path / sub
        d.mkdir(exist_ok=True)
        with open(d / f"{self._shards[sub]:05d}.jsonl.gz", "wb") as fh:
            dump_jsonl_gz(rows, fh)
        self._shards[sub] += 1
        self._buffers[sub] = []

    # -- files --

    def file(self, name: str) -> Path:
        """A path inside the artifact for stage files (parents created)."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- publishing --

    def commit(self) -> ArtifactRef:
        for sub in ("data", "rejected"):
            self._flush(sub)
        self.report.setdefault("records_out", self.counts["data"])
        self.report.setdefault("records_rejected", self.counts["rejected"])
        if self.reasons:
            self.report.setdefault("rejected_by_reason", dict(sorted(self.reasons.items())))
        self.report.setdefault("seconds", round(time.time() - self.started, 2))
        (self.path / "report.json").write_text(json.dumps(self.report, indent=2, default=str))
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "inputs": [i.model_dump() for i in self.inputs],
            "config": json.loads(canonical_json(self.config)),
            "counts": dict(self.counts),
            "files": sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        store = self.store
        final = store._dir(self.stage, self.key)
        if store.local:
            # The manifest goes in before the rename; the rename is what publishes.
            (self.path / "manifest.json").write_text(json.dumps(manifest, indent=2))
            final_p = Path(final)
            if final_p.exists():  # a forced re-run replaces the old artifact
                old = final_p.with_name(f".{self.key[:12]}.old.{uuid.uuid4().hex[:8]}")
                final_p.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            self.path.rename(final_p)
        else:
            if store.fs.exists(final):
                store.fs.rm(final, recursive=True)
            store.fs.put(str(self.path) + "/", final, recursive=True)
            with store.fs.open(f"{final}/manifest.json", "w") as fh:  # last: publishes
                fh.write(json.dumps(manifest, indent=2))
            shutil.rmtree(self.path, ignore_errors=True)
        self.committed = True
        return store.ref(self.stage, self.key)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()
