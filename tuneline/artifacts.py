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
path by default, ``s3://bucket/prefix`` and friends for shared storage. A remote artifact is
uploaded whole before its manifest (the manifest's upload is what publishes it), and read
through a local cache (``$TUNELINE_CACHE``, default ``~/.cache/tuneline``): its manifest and
report are read on their own, its files are downloaded on first use of ``Artifact.path``, and
a cached copy is used only while its manifest matches the store's.
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
        if self.local:
            self.cache_dir = Path(self._root_path)
        else:
            # Other machines publish into a shared root: a cached directory listing would hide
            # their artifacts (or show replaced ones), so every existence check asks the store.
            self.fs, self._root_path = fsspec.core.url_to_fs(self.root, use_listings_cache=False)
            base = Path(os.environ.get("TUNELINE_CACHE") or Path.home() / ".cache" / "tuneline")
            scheme = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
            # One cache folder per root, so two roots never mix copies of the same key.
            self.cache_dir = base / scheme / self._root_path.strip("/")

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

    def _missing(self, stage: str, key: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"artifact {stage}/{key[:12]} is missing or incomplete under {self.root}; "
            f"run the `{stage}` stage first (tuneline run --only {stage})"
        )

    def open(self, ref: ArtifactRef) -> Artifact:
        stage, key = ref.stage, ref.key
        if not self.exists(stage, key):
            raise self._missing(stage, key)
        if self.local:
            return Artifact(ref, Path(self._dir(stage, key)))
        return Artifact(ref, store=self)  # files come down on first use of .path

    def read_remote(self, ref: ArtifactRef, name: str) -> bytes:
        """One file of a remote artifact, without fetching the rest (its manifest, its report)."""
        return self.fs.cat_file(f"{self._dir(ref.stage, ref.key)}/{name}")

    def fetch(self, ref: ArtifactRef) -> Path:
        """The local copy of a remote artifact: the cached one while its manifest matches the
        store's, else the files the manifest lists, downloaded into a private directory that is
        renamed into place with the manifest last (so a crash never leaves a copy that looks whole)."""
        stage, key = ref.stage, ref.key
        try:
            manifest = self.read_remote(ref, "manifest.json")
        except FileNotFoundError:
            raise self._missing(stage, key) from None
        local = self.cache_dir / stage / key
        if _same_manifest(local, manifest):
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=local.parent))
        try:
            files = json.loads(manifest)["files"]
            for name in files:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if files:
                remote = self._dir(stage, key)
                self.fs.get([f"{remote}/{n}" for n in files], [str(tmp / n) for n in files])
            (tmp / "manifest.json").write_bytes(manifest)
            _place(tmp, local, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
        return local


def _same_manifest(local: Path, manifest: bytes) -> bool:
    p = local / "manifest.json"
    return p.is_file() and p.read_bytes() == manifest


def _place(tmp: Path, local: Path, manifest: bytes) -> None:
    """Renames a complete copy ``tmp`` into the cache at ``local``, replacing a stale copy (the
    artifact was rewritten by a forced re-run) but keeping a current one another process put there."""
    if local.exists():
        if _same_manifest(local, manifest):
            return
        old = local.with_name(f".{local.name[:12]}.old.{uuid.uuid4().hex[:8]}")
        try:
            local.rename(old)
        except FileNotFoundError:  # another process moved it away first
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(local)
    except OSError:  # another process renamed its copy into place between our check and ours
        if not _same_manifest(local, manifest):
            raise


class Artifact:
    """A complete artifact, read-only. A local one is read in place; a remote one (``store``
    given, no ``path``) reads its manifest and report from the store and is fetched into the
    local cache on first use of ``path``, so reusing a stage or showing its report downloads no data."""

    def __init__(self, ref: ArtifactRef, path: Path | None = None, store: ArtifactStore | None = None):
        if path is None and store is None:
            raise ValueError("an Artifact needs its local path or the store to fetch it from")
        self.ref = ref
        self._path = path
        self._store = store
        self._small: dict[str, bytes | None] = {}

    @property
    def path(self) -> Path:
        if self._path is None:
            assert self._store is not None
            self._path = self._store.fetch(self.ref)
        return self._path

    def _read_small(self, name: str) -> bytes | None:
        """A small top-level file, or None when the artifact has none."""
        if self._path is not None:
            p = self._path / name
            return p.read_bytes() if p.exists() else None
        if name not in self._small:
            assert self._store is not None
            try:
                self._small[name] = self._store.read_remote(self.ref, name)
            except FileNotFoundError:
                self._small[name] = None
        return self._small[name]

    @property
    def manifest(self) -> dict[str, Any]:
        if self._path is not None:
            return json.loads((self._path / "manifest.json").read_text())
        body = self._read_small("manifest.json")
        if body is None:
            assert self._store is not None
            raise self._store._missing(self.ref.stage, self.ref.key)
        return json.loads(body)

    @property
    def report(self) -> dict[str, Any]:
        body = self._read_small("report.json")
        return json.loads(body) if body is not None else {}

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
            # Staged in the local cache: after the upload it is renamed into place there as this
            # machine's copy, so the next stage reads it without downloading it again.
            parent = store.cache_dir / stage
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=parent))
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
            fs, body = store.fs, json.dumps(manifest, indent=2).encode()
            # A forced re-run replaces the artifact. Unpublish the old one first (manifest, then
            # the rest) so a reader elsewhere sees it missing, never a mix of old and new files.
            if fs.exists(f"{final}/manifest.json"):
                fs.rm_file(f"{final}/manifest.json")
            if fs.exists(final):
                fs.rm(final, recursive=True)
            fs.put(str(self.path) + "/", final, recursive=True)
            fs.pipe_file(f"{final}/manifest.json", body)  # last: publishes
            (self.path / "manifest.json").write_bytes(body)
            _place(self.path, store.cache_dir / self.stage / self.key, body)
            shutil.rmtree(self.path, ignore_errors=True)  # gone already unless a current copy was cached
        self.committed = True
        return store.ref(self.stage, self.key)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()
