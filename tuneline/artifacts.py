"""Content-addressed artifact store: the source of truth between stages.

An artifact's key hashes everything that decides its content: the stage name, the stage's
``VERSION``, the canonical JSON of the stage's resolved config, and the keys of its inputs (an
input *file* contributes the hash of its bytes, not its path). So a second run with nothing
changed finds every artifact and does no work, and a change anywhere invalidates exactly the
artifacts downstream of it.

Layout of one key, ``<root>/<stage>/<key>/``::

    current.json          the pointer: which generation is published (replaced atomically)
    g<UTC time>-<hex>/    one generation: a complete, immutable copy of the artifact
        manifest.json     every file with its size and sha256, inputs, config, library
                          versions and git commit (``tuneline.provenance``, outside the key)
        report.json       counts and metrics, shown in the Prefect UI and by `tuneline status`
        data/*.jsonl.gz   records kept (tuneline.records schema)
        rejected/*.jsonl.gz  every record dropped, with ``reason`` (nothing vanishes silently)
        ...               stage files: tokenizer/, adapter/, plots, exports

Publishing. A writer fills a private staging folder (``<stage>/.staging.<pid>.<key>.<rand>@<host>``,
named after its owner), moves it into a new generation folder, and then replaces the pointer: on a
local root with ``os.replace``, on an object store with one object put (the files and the
generation's manifest are uploaded first, so the pointer's upload is what publishes). A reader
opens whatever generation the pointer names and keeps reading that one, so a forced re-run
(a new generation of the same key) never takes an artifact away from under a reader: it sees
the old generation or the new one, never none and never a mix. A crash at any point leaves the
previous state: a folder the pointer does not name is never read.

Removing old generations. The pointer remembers when each replaced generation stopped being
current. The next commit of that key removes those replaced more than ``GRACE_SECONDS`` (10
minutes) ago, and generations that were never published (a crashed writer) once older than
``ORPHAN_SECONDS`` (a day). A reader therefore has at least 10 minutes after a replacement to
finish reading the generation it opened.

Leftover staging folders. Each new writer on a root removes the staging folders of that root
whose owner process is gone on this host, and those of other hosts older than a day.

Verification. Reusing an artifact checks every file's size against the manifest (cheap: a stat
locally, one listing on an object store); ``Artifact.records()``/``rejected()`` check each
shard's sha256 while reading it; ``Artifact.path`` checks the stage files (everything but the
record shards) before handing out the folder, and ``verified_path``/``open_verified`` check one
file. A mismatch raises ``CorruptArtifact`` naming the stage, key and files: the pipeline runner
then recomputes that artifact and re-runs the stage that read it (``tuneline.runner``).

Remote roots. The root is an fsspec URL: a local path by default, ``s3://bucket/prefix`` and
friends for shared storage. A remote artifact is read through a local cache (``$TUNELINE_CACHE``,
default ``~/.cache/tuneline``, folder ``<stage>/<key>/<generation>``): its manifest and report are
read on their own (reuse downloads nothing), its files are downloaded on first use of
``Artifact.path`` and checked against the manifest; a cached copy that fails the check is
downloaded again. Cached copies of replaced generations follow the same grace rule.
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from tuneline.errors import TunelineError
from tuneline.locks import FileKeyLock, KeyLock, LeaseKeyLock, hostname, pid_alive
from tuneline.provenance import environment
from tuneline.records import Record, load_jsonl_gz
from tuneline.redaction import redact_urls

SHARD_SIZE = 50_000  # records per shard: keeps one shard small enough to stream and resume
SHARD_DIRS = ("data", "rejected")
POINTER = "current.json"
MANIFEST = "manifest.json"
STAGING = ".staging."
GRACE_SECONDS = 600.0  # a replaced generation stays readable this long after it was replaced
ORPHAN_SECONDS = 86_400.0  # never-published generations, other hosts' staging folders: removed after this
LAYOUT = 2  # manifest layout: generations, files with size and sha256


class ArtifactRef(BaseModel):
    """The only thing stages hand each other: where an artifact is, never its data."""

    stage: str = Field(description="The stage that wrote it.")
    key: str = Field(description="Content key (sha256 hex).")
    uri: str = Field(description="Directory URL of the artifact's key (its generations live below).")

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


# --------------------------------------------------------------------------- integrity


@dataclass(frozen=True)
class FileProblem:
    """One file of an artifact that does not match its manifest."""

    name: str
    state: Literal["missing", "changed"]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name} {self.state}" + (f" ({self.detail})" if self.detail else "")


class CorruptArtifact(TunelineError):
    """An artifact's files do not match its manifest (deleted, truncated or edited after it was
    published). Carries ``stage``, ``key``, ``generation`` and the ``problems``, so the pipeline
    runner can recompute exactly that artifact.

    Args:
        stage: the stage that wrote the artifact.
        key: its key.
        generation: the generation that was read.
        problems: the files that do not match.
    """

    def __init__(self, stage: str, key: str, generation: str, problems: Iterable[FileProblem]):
        self.stage, self.key, self.generation = stage, key, generation
        self.problems = tuple(problems)
        super().__init__(
            f"artifact {stage}/{key[:12]} (generation {generation}) does not match its manifest: "
            f"{'; '.join(map(str, self.problems))}. It must be recomputed: a pipeline run does that "
            f"by itself (run the same command again), or run `tuneline run --force {stage}`"
        )

    @property
    def files(self) -> list[str]:
        return [p.name for p in self.problems]

    def __reduce__(self) -> tuple[Any, ...]:  # keeps its fields across pickling (task results)
        return (type(self), (self.stage, self.key, self.generation, self.problems))


def corrupt_artifact(exc: BaseException | None) -> CorruptArtifact | None:
    """The ``CorruptArtifact`` behind ``exc`` (itself, or one it was raised from), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, CorruptArtifact):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def file_entry(path: Path) -> dict[str, Any]:
    """A manifest's record of one file: its size and sha256."""
    return {"size": path.stat().st_size, "sha256": hash_bytes_of(path)}


def check_local_files(
    directory: Path, files: dict[str, dict[str, Any]], names: Iterable[str], hashes: bool
) -> list[FileProblem]:
    """The files among ``names`` under ``directory`` that do not match ``files`` (a manifest's).

    Args:
        directory: a generation folder (or its cached copy).
        files: the manifest's ``files``.
        names: which of them to check.
        hashes: also compare sha256 (else sizes only).
    """
    problems = []
    for name in names:
        want, p = files[name], directory / name
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            problems.append(FileProblem(name, "missing"))
            continue
        if size != want["size"]:
            problems.append(FileProblem(name, "changed", f"{size} bytes, the manifest says {want['size']}"))
        elif hashes and hash_bytes_of(p) != want["sha256"]:
            problems.append(FileProblem(name, "changed", "same size, different sha256"))
    return problems


class HashingReader:
    """A binary file read sequentially while its bytes are hashed (``finish`` reads the rest).

    Args:
        raw: an open binary file.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def finish(self) -> tuple[int, str]:
        """Reads what the consumer left and returns the file's ``(size, sha256)``."""
        while self.read(1 << 20):
            pass
        return self.size, self._sha.hexdigest()


def is_shard(name: str) -> bool:
    """A record shard (``data/*.jsonl.gz``, ``rejected/*.jsonl.gz``): checked while read."""
    head, _, rest = name.partition("/")
    return head in SHARD_DIRS and "/" not in rest and rest.endswith(".jsonl.gz")


# --------------------------------------------------------------------------- generations


def new_generation(now: float | None = None) -> str:
    """A generation's folder name: its UTC creation time (names sort by age) and a random tail."""
    t = time.time() if now is None else now
    micro = int(round((t % 1) * 1e6)) % 1_000_000
    return f"g{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t))}.{micro:06d}Z-{uuid.uuid4().hex[:6]}"


_GENERATION = re.compile(r"g(\d{8}T\d{6})\.(\d{6})Z-[0-9a-f]+")


def generation_time(name: str) -> float | None:
    """When generation ``name`` was created (None for a name that is not a generation)."""
    m = _GENERATION.fullmatch(name)
    if m is None:
        return None
    return calendar.timegm(time.strptime(m[1], "%Y%m%dT%H%M%S")) + int(m[2]) / 1e6


def is_generation(name: str) -> bool:
    return _GENERATION.fullmatch(name) is not None


@dataclass
class Pointer:
    """``<key>/current.json``: the published generation (None after ``invalidate``) and when
    each replaced generation stopped being current (what the grace period counts from)."""

    generation: str | None
    published: float
    retired: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        body = {"generation": self.generation, "published": self.published, "retired": self.retired}
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Pointer | None:
        """The pointer in ``body``, or None for one that is not (a torn or foreign file)."""
        try:
            d = json.loads(body)
            return cls(d["generation"], float(d["published"]), {str(g): float(t) for g, t in d["retired"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


# --------------------------------------------------------------------------- staging folders


def make_staging_dir(parent: Path, label: str) -> Path:
    """A private folder under ``parent`` whose name says who owns it: ``.staging.<pid>.<label>.<rand>@<host>``."""
    return Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}.{label}.", suffix=f"@{hostname()}", dir=parent))


def staging_owner(name: str) -> tuple[int, str] | None:
    """``(pid, host)`` of a staging folder's name, or None for any other name."""
    if not name.startswith(STAGING) or "@" not in name:
        return None
    head, host = name[len(STAGING) :].rsplit("@", 1)
    pid = head.split(".", 1)[0]
    return (int(pid), host) if pid.isdigit() else None


def is_abandoned(path: Path, now: float | None = None) -> bool:
    """A staging folder whose owner is gone: a dead process on this host, or (for another
    host, whose processes cannot be asked) one untouched for ``ORPHAN_SECONDS``."""
    owner = staging_owner(path.name)
    if owner is None:
        return False
    pid, host = owner
    if host == hostname():
        return not pid_alive(pid)
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > ORPHAN_SECONDS


def sweep_staging(base: Path) -> list[Path]:
    """Removes abandoned staging folders in every stage folder under ``base``; returns them."""
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    with os.scandir(base) as stages:
        stage_dirs = [Path(e.path) for e in stages if not e.name.startswith(".") and e.is_dir()]
    for stage_dir in stage_dirs:
        try:
            with os.scandir(stage_dir) as entries:
                leftovers = [Path(e.path) for e in entries if e.name.startswith(STAGING)]
        except FileNotFoundError:
            continue
        for p in leftovers:
            if is_abandoned(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _discard(path: Path, stage_dir: Path) -> None:
    """Removes a folder: first renamed to a staging name (one step, so no reader finds it half
    deleted, and a crash mid-delete leaves a leftover the next sweep removes), then deleted."""
    trash = stage_dir / f"{STAGING}{os.getpid()}.trash.{uuid.uuid4().hex[:8]}@{hostname()}"
    try:
        path.rename(trash)
    except FileNotFoundError:  # another process removed it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def _same_manifest(local: Path, manifest: bytes) -> bool:
    p = local / MANIFEST
    return p.is_file() and p.read_bytes() == manifest


def _place(tmp: Path, local: Path, manifest: bytes) -> None:
    """Renames a complete copy ``tmp`` into the cache at ``local`` (``<stage>/<key>/<generation>``),
    replacing a copy with another manifest, keeping a current one another process put there."""
    local.parent.mkdir(parents=True, exist_ok=True)
    if local.exists():
        if _same_manifest(local, manifest):
            return
        _discard(local, local.parents[1])
    try:
        tmp.rename(local)
    except OSError:  # another process renamed its copy into place between our check and ours
        if not _same_manifest(local, manifest):
            raise


# --------------------------------------------------------------------------- the store


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

    def _key_dir(self, stage: str, key: str) -> str:
        return f"{self._root_path}/{stage}/{key}"

    def _gen_dir(self, stage: str, key: str, generation: str) -> str:
        return f"{self._key_dir(stage, key)}/{generation}"

    def _cached(self, stage: str, key: str, generation: str) -> Path:
        """Where a generation lives on this machine: in place (local root) or its cached copy."""
        return self.cache_dir / stage / key / generation

    @property
    def staging_base(self) -> Path:
        """Where writers stage (next to the artifacts locally, in the cache for a remote root)."""
        return self.cache_dir

    def uri(self, stage: str, key: str) -> str:
        return f"{self.root}/{stage}/{key}"

    def ref(self, stage: str, key: str) -> ArtifactRef:
        return ArtifactRef(stage=stage, key=key, uri=self.uri(stage, key))

    # -- the pointer --

    def pointer(self, stage: str, key: str) -> Pointer | None:
        """The key's pointer, or None when nothing was ever published there."""
        try:
            return Pointer.from_bytes(self.fs.cat_file(f"{self._key_dir(stage, key)}/{POINTER}"))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def current(self, stage: str, key: str) -> str | None:
        """The published generation of ``stage``/``key`` (complete: its manifest is there), or None."""
        p = self.pointer(stage, key)
        if p is None or p.generation is None:
            return None
        return p.generation if self.fs.exists(f"{self._gen_dir(stage, key, p.generation)}/{MANIFEST}") else None

    def exists(self, stage: str, key: str) -> bool:
        """Published artifacts only: staging folders and unpublished generations are never read."""
        return self.current(stage, key) is not None

    def list(self, stage: str) -> list[str]:
        base = f"{self._root_path}/{stage}"
        if not self.fs.exists(base):
            return []
        keys = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return [k for k in keys if not k.startswith(".") and self.exists(stage, k)]

    def list_runs(self) -> list[str]:
        """The paths of the run lineage records (``<root>/runs/*.json``, see tuneline.runner)."""
        base = f"{self._root_path}/runs"
        if not self.fs.exists(base):
            return []
        names = [p.rstrip("/") for p in self.fs.ls(base, detail=False)]
        return sorted(p for p in names if p.endswith(".json") and not p.rsplit("/", 1)[-1].startswith("."))

    def read_run(self, path: str) -> bytes:
        """One lineage record's bytes (a path from ``list_runs``)."""
        return self.fs.cat_file(path)

    def generations(self, stage: str, key: str) -> list[str]:
        """Every generation folder of a key (published, replaced, or never published), oldest first."""
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._key_dir(stage, key), detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if is_generation(n))

    # -- locking --

    def lock(self, stage: str, key: str, logger: Any = None) -> KeyLock:
        """The lock of one key (see ``tuneline.locks``): a lock file locally, a lease remotely."""
        what = f"{stage}/{key[:12]}"
        if self.local:
            return FileKeyLock(Path(self._root_path) / ".locks" / stage / f"{key}.lock", what, logger)
        return LeaseKeyLock(self.fs, f"{self._root_path}/.locks/{stage}/{key}.lease", what, logger)

    # -- writing --

    def writer(
        self, stage: str, key: str, inputs: list[ArtifactRef], config: Any, fence: Callable[[], None] | None = None
    ) -> ArtifactWriter:
        """A writer for a new generation of ``stage``/``key``.

        Args:
            stage, key: what it writes.
            inputs: the input artifacts (recorded in the manifest).
            config: the config that keys it (recorded in the manifest).
            fence: called just before publishing; raises if this run may no longer publish
                (``KeyLock.check``: its lease was taken over).
        """
        return ArtifactWriter(self, stage, key, inputs, config, fence)

    def sweep_staging(self) -> list[Path]:
        """Removes this root's abandoned staging folders (see ``is_abandoned``)."""
        return sweep_staging(self.staging_base)

    def _write_pointer(self, stage: str, key: str, pointer: Pointer) -> None:
        """Replaces the pointer in one step: ``os.replace`` locally, one object put remotely."""
        if not self.local:
            self.fs.pipe_file(f"{self._key_dir(stage, key)}/{POINTER}", pointer.to_bytes())
            return
        d = Path(self._key_dir(stage, key))
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".current.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pointer.to_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, d / POINTER)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _publish(self, stage: str, key: str, generation: str) -> list[str]:
        """Makes ``generation`` current, then removes the generations past their time (see the
        module docstring); returns those removed."""
        now = time.time()
        old = self.pointer(stage, key)
        retired = dict(old.retired) if old else {}
        if old is not None and old.generation not in (None, generation):
            retired[old.generation] = now
        expired = sorted(g for g, t in retired.items() if now - t > GRACE_SECONDS)
        for g in expired:
            del retired[g]
        new = Pointer(generation, now, retired)
        self._write_pointer(stage, key, new)
        orphans = [
            g
            for g in self.generations(stage, key)
            if g != generation and g not in retired and now - (generation_time(g) or now) > ORPHAN_SECONDS
        ]
        doomed = sorted(set(expired) | set(orphans))
        for g in doomed:
            self._remove_generation(stage, key, g)
        if not self.local:
            self._prune_cache(stage, key, new)
        return doomed

    def _remove_generation(self, stage: str, key: str, generation: str) -> None:
        if self.local:
            _discard(Path(self._gen_dir(stage, key, generation)), Path(self._root_path) / stage)
            return
        try:
            self.fs.rm(self._gen_dir(stage, key, generation), recursive=True)
        except FileNotFoundError:
            pass

    def invalidate(self, stage: str, key: str, generation: str, logger: Any = None) -> bool:
        """Unpublishes ``generation`` of ``stage``/``key`` if it is still the current one (a corrupt
        artifact: the next run recomputes it); False when it was already replaced.

        Args:
            stage, key: the artifact.
            generation: the generation found corrupt.
            logger: where a wait for the key's lock is logged.
        """
        with self.lock(stage, key, logger):
            p = self.pointer(stage, key)
            if p is None or p.generation != generation:
                return False
            now = time.time()
            self._write_pointer(stage, key, Pointer(None, now, {**p.retired, generation: now}))
            return True

    # -- reading --

    def _missing(self, stage: str, key: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"artifact {stage}/{key[:12]} is missing or incomplete under {self.root}; "
            f"run the `{stage}` stage first (tuneline run --only {stage})"
        )

    def open(self, ref: ArtifactRef) -> Artifact:
        """The published generation of ``ref``; reading it stays on that generation."""
        stage, key = ref.stage, ref.key
        p = self.pointer(stage, key)
        if p is None or p.generation is None:
            raise self._missing(stage, key)
        try:
            manifest = self.fs.cat_file(f"{self._gen_dir(stage, key, p.generation)}/{MANIFEST}")
        except FileNotFoundError:
            raise self._missing(stage, key) from None
        return Artifact(ref, p.generation, self, manifest, p)

    def read_file(self, art: Artifact, name: str) -> bytes:
        """One file of a generation, read from the store without fetching the rest."""
        return self.fs.cat_file(f"{self._gen_dir(art.ref.stage, art.ref.key, art.generation)}/{name}")

    def check(self, art: Artifact, hashes: bool = False) -> list[FileProblem]:
        """The files of ``art`` in the store that do not match its manifest.

        Args:
            art: an opened artifact.
            hashes: also compare sha256 (reads every file; a remote one is streamed from the
                store, not from the cache); else sizes only (a stat or one listing).
        """
        files = art.files
        if self.local:
            return check_local_files(art.local_dir, files, files, hashes)
        base = self.fs._strip_protocol(self._gen_dir(art.ref.stage, art.ref.key, art.generation)).rstrip("/")
        sizes = {
            self.fs._strip_protocol(p)[len(base) + 1 :]: info["size"]
            for p, info in self.fs.find(base, detail=True).items()
            if self.fs._strip_protocol(p).startswith(base + "/")
        }
        problems = []
        for name, want in files.items():
            if name not in sizes:
                problems.append(FileProblem(name, "missing"))
            elif sizes[name] != want["size"]:
                problems.append(FileProblem(name, "changed", f"{sizes[name]} bytes, the manifest says {want['size']}"))
            elif hashes and self._remote_sha256(f"{base}/{name}") != want["sha256"]:
                problems.append(FileProblem(name, "changed", "same size, different sha256"))
        return problems

    def _remote_sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def fetch(self, art: Artifact) -> Path:
        """The local copy of a remote generation: the cached one while its manifest matches the
        store's, else the files the manifest lists, downloaded into a private folder that is
        renamed into place with the manifest last (so a crash never leaves a copy that looks whole)."""
        stage, key = art.ref.stage, art.ref.key
        local = self._cached(stage, key, art.generation)
        if _same_manifest(local, art.manifest_bytes):
            return local
        parent = self.cache_dir / stage
        parent.mkdir(parents=True, exist_ok=True)
        tmp = make_staging_dir(parent, key[:12])
        try:
            names = list(art.files)
            for name in names:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if names:
                remote = self._gen_dir(stage, key, art.generation)
                try:
                    self.fs.get([f"{remote}/{n}" for n in names], [str(tmp / n) for n in names])
                except FileNotFoundError:
                    pass  # a file deleted from the store: the check after the download names it
            (tmp / MANIFEST).write_bytes(art.manifest_bytes)
            _place(tmp, local, art.manifest_bytes)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
        if art.pointer is not None:
            self._prune_cache(stage, key, art.pointer)
        return local

    def drop_cached(self, art: Artifact) -> None:
        """Removes this machine's cached copy of ``art`` (it failed its check)."""
        _discard(self._cached(art.ref.stage, art.ref.key, art.generation), self.cache_dir / art.ref.stage)

    def _prune_cache(self, stage: str, key: str, pointer: Pointer) -> None:
        """Removes cached copies of generations older than the current one once they are past
        their grace period (or no longer in the store)."""
        d = self.cache_dir / stage / key
        if pointer.generation is None or not d.is_dir():
            return
        now = time.time()
        for child in d.iterdir():
            g = child.name
            # Only older ones: a newer copy is another process's generation published after we looked.
            if not is_generation(g) or g >= pointer.generation:
                continue
            retired_at = pointer.retired.get(g)
            if retired_at is None or now - retired_at > GRACE_SECONDS:
                _discard(child, self.cache_dir / stage)


class Artifact:
    """One published generation of an artifact, read-only. A local one is read in place; a
    remote one reads its manifest and report from the store and is fetched into the local cache
    on first use of ``path``, so reusing a stage or showing its report downloads no data."""

    def __init__(
        self, ref: ArtifactRef, generation: str, store: ArtifactStore, manifest: bytes, pointer: Pointer | None = None
    ):
        self.ref, self.generation, self.pointer = ref, generation, pointer
        self._store = store
        self.manifest_bytes = manifest
        self._manifest: dict[str, Any] | None = None
        self._small: dict[str, bytes | None] = {}
        self._path: Path | None = None  # the checked folder, once ``path`` was used
        self._verified: set[str] = set()  # files whose sha256 matched while this object read them

    def parents(self) -> list[Artifact]:
        """The artifacts this one was made from (its manifest's ``inputs``), opened from the
        same store: how a model card walks back from a train artifact to ingest."""
        return [self._store.open(ArtifactRef.model_validate(i)) for i in self.manifest.get("inputs", [])]

    @property
    def uri(self) -> str:
        """URL of this generation's folder."""
        return f"{self.ref.uri}/{self.generation}"

    @property
    def local_dir(self) -> Path:
        """The generation's folder on this machine, unchecked (a remote one is fetched)."""
        if self._store.local:
            return Path(self._store._gen_dir(self.ref.stage, self.ref.key, self.generation))
        return self.path

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = json.loads(self.manifest_bytes)
        return self._manifest

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """``{relative name: {"size", "sha256"}}`` of every file but the manifest."""
        return self.manifest["files"]

    def corrupt(self, problems: Iterable[FileProblem]) -> CorruptArtifact:
        return CorruptArtifact(self.ref.stage, self.ref.key, self.generation, problems)

    def check_sizes(self) -> list[FileProblem]:
        """Files whose size in the store differs from the manifest's (or that are gone): cheap."""
        return self._store.check(self)

    def verify(self) -> list[FileProblem]:
        """Files in the store whose size or sha256 differs from the manifest's (reads them all)."""
        return self._store.check(self, hashes=True)

    # -- files --

    @property
    def path(self) -> Path:
        """The generation's folder on this machine, with its stage files (everything but the
        record shards, which ``records()`` checks as it reads them) checked against the
        manifest first; a remote one is fetched and checked whole.

        Raises:
            CorruptArtifact: a file is missing or changed (for a remote artifact: also in a
                fresh download from the store).
        """
        if self._path is None:
            self._path = self._checked_dir()
        return self._path

    def _checked_dir(self) -> Path:
        if self._store.local:
            d = self.local_dir
            names = [n for n in self.files if not is_shard(n)]
            problems = check_local_files(d, self.files, names, hashes=True)
            if problems:
                raise self.corrupt(problems)
            self._verified.update(names)
            return d
        d = self._store.fetch(self)
        problems = check_local_files(d, self.files, self.files, hashes=True)
        if problems:  # this machine's copy changed, or the store's: download it again to tell which
            self._store.drop_cached(self)
            d = self._store.fetch(self)
            problems = check_local_files(d, self.files, self.files, hashes=True)
            if problems:
                raise self.corrupt(problems)
        self._verified.update(self.files)
        return d

    def verified_path(self, name: str) -> Path:
        """The local path of file or folder ``name``, its files checked against the manifest.

        Args:
            name: a relative name (``adapter``, ``splits/train.jsonl.gz``).

        Raises:
            CorruptArtifact: a file under ``name`` is missing or changed.
        """
        if not self._store.local:
            return self.path / name
        prefix = name.rstrip("/") + "/"
        names = [n for n in self.files if (n == name or n.startswith(prefix)) and n not in self._verified]
        problems = check_local_files(self.local_dir, self.files, names, hashes=True)
        if problems:
            raise self.corrupt(problems)
        self._verified.update(names)
        return self.local_dir / name

    @contextmanager
    def open_verified(self, name: str) -> Iterator[HashingReader | BinaryIO]:
        """Opens file ``name`` for one sequential read, checking its sha256 as it is read: when
        the block ends (or fails, e.g. on a damaged gzip stream), a mismatch raises.

        Args:
            name: a relative name listed in the manifest.

        Raises:
            CorruptArtifact: the file is missing, has another size, or other bytes.
            FileNotFoundError: the manifest does not list ``name``.
        """
        want = self.files.get(name)
        if want is None:
            raise FileNotFoundError(f"artifact {self.ref.stage}/{self.ref.short} has no file {name!r}")
        d = self.local_dir
        if name in self._verified:  # checked already (a fetched remote copy)
            with open(d / name, "rb") as fh:
                yield fh
            return
        problems = check_local_files(d, self.files, [name], hashes=False)
        if problems:
            raise self.corrupt(problems)
        with open(d / name, "rb") as raw:
            reader = HashingReader(raw)
            try:
                yield reader
            except Exception as e:
                if reader.finish() != (want["size"], want["sha256"]):
                    raise self.corrupt([FileProblem(name, "changed", "different sha256; it no longer reads")]) from e
                raise
            if reader.finish() != (want["size"], want["sha256"]):
                raise self.corrupt([FileProblem(name, "changed", "same size, different sha256")])
        self._verified.add(name)

    # -- small files and records --

    def _read_small(self, name: str) -> bytes | None:
        """A small top-level file, or None when the artifact has none."""
        if self._store.local:
            p = self.local_dir / name
            return p.read_bytes() if p.exists() else None
        if name not in self._small:
            try:
                self._small[name] = self._store.read_file(self, name)
            except FileNotFoundError:
                self._small[name] = None
        return self._small[name]

    @property
    def report(self) -> dict[str, Any]:
        body = self._read_small("report.json")
        return json.loads(body) if body is not None else {}

    def _shards(self, sub: str) -> list[str]:
        # From the manifest, not the folder: a deleted shard is an error, not fewer records.
        return sorted(n for n in self.files if is_shard(n) and n.startswith(sub + "/"))

    def _rows(self, sub: str) -> Iterator[dict[str, Any]]:
        for name in self._shards(sub):
            with self.open_verified(name) as fh:
                yield from load_jsonl_gz(fh)  # type: ignore[arg-type]

    def shard_paths(self, sub: str = "data") -> list[Path]:
        """Local paths of the record shards of ``sub``, each checked against its sha256 first:
        for work that other processes read (DataTrove ranks), where ``records()`` cannot go.

        Raises:
            CorruptArtifact: a shard is missing or changed.
        """
        return [self.verified_path(name) for name in self._shards(sub)]

    @property
    def count(self) -> int:
        """How many kept records the artifact holds (from its manifest)."""
        return int(self.manifest.get("counts", {}).get("data", 0))

    def records(self, sub: str = "data") -> Iterator[Record]:
        """The kept records, each shard's sha256 checked as it is read (a mismatch raises
        ``CorruptArtifact`` at the end of that shard, before the iteration ends)."""
        for row in self._rows(sub):
            yield Record.model_validate(row)

    def rejected(self) -> Iterator[dict[str, Any]]:
        """Dropped records: ``{"reason": ..., "record": {...}, ...}``, checked like ``records``."""
        return self._rows("rejected")


class ArtifactWriter:
    """Fills a staging folder; ``commit()`` publishes it as a new generation, atomically.

    Use as a context manager: leaving the block with an exception discards the staging
    folder, leaving the store exactly as it was.
    """

    def __init__(
        self,
        store: ArtifactStore,
        stage: str,
        key: str,
        inputs: list[ArtifactRef],
        config: Any,
        fence: Callable[[], None] | None = None,
    ):
        self.store, self.stage, self.key = store, stage, key
        self.inputs, self.config = inputs, config
        self.fence = fence
        # Staged next to the artifacts locally (one rename publishes), in the local cache for a
        # remote root (after the upload it becomes this machine's cached copy).
        parent = store.staging_base / stage
        parent.mkdir(parents=True, exist_ok=True)
        store.sweep_staging()
        self.path = make_staging_dir(parent, key[:12])
        self.report: dict[str, Any] = {}
        # One open gzip shard per sub-folder, written row by row: memory stays flat however many
        # records a stage writes (a buffered shard of 50k rows was ~250 MB of dicts).
        self._open: dict[str, tuple[Any, Any, int]] = {}  # sub -> (file, gzip stream, rows)
        self._shards: dict[str, int] = {"data": 0, "rejected": 0}
        self.counts: dict[str, int] = {"data": 0, "rejected": 0}
        self.reasons: dict[str, int] = {}
        self.started = time.time()
        self.committed = False
        self._after_commit: list[Callable[[], None]] = []

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
        if sub not in self._open:
            d = self.path / sub
            d.mkdir(exist_ok=True)
            fh = open(d / f"{self._shards[sub]:05d}.jsonl.gz", "wb")
            # mtime=0 as in dump_jsonl_gz: shards are byte-identical across runs of the same data.
            self._open[sub] = (fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0), 0)
        fh, gz, n = self._open[sub]
        gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self._open[sub] = (fh, gz, n + 1)
        self.counts[sub] += 1
        if n + 1 >= SHARD_SIZE:
            self._flush(sub)

    def _flush(self, sub: str) -> None:
        """Closes the open shard of ``sub``; the next row starts a new one."""
        entry = self._open.pop(sub, None)
        if entry is None:
            return
        fh, gz, _ = entry
        gz.close()
        fh.close()
        self._shards[sub] += 1

    # -- files --

    def file(self, name: str) -> Path:
        """A path inside the artifact for stage files (parents created)."""
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # -- publishing --

    def _manifest(self, generation: str) -> bytes:
        files = {
            str(p.relative_to(self.path)): file_entry(p) for p in sorted(self.path.rglob("*")) if p.is_file()
        }
        files.pop(MANIFEST, None)
        manifest = {
            "layout": LAYOUT,
            "stage": self.stage,
            "key": self.key,
            "generation": generation,
            "inputs": [i.model_dump() for i in self.inputs],
            "config": json.loads(canonical_json(self.config)),
            "counts": dict(self.counts),
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": environment(),
        }
        return json.dumps(manifest, indent=2).encode()

    def commit(self) -> ArtifactRef:
        """Publishes what was written as the key's new current generation and returns its ref."""
        for sub in SHARD_DIRS:
            self._flush(sub)
        self.report.setdefault("records_out", self.counts["data"])
        self.report.setdefault("records_rejected", self.counts["rejected"])
        if self.reasons:
            self.report.setdefault("rejected_by_reason", dict(sorted(self.reasons.items())))
        self.report.setdefault("seconds", round(time.time() - self.started, 2))
        self.report.update(redact_urls(self.report))  # a URL a stage reports keeps no credentials
        (self.path / "report.json").write_text(json.dumps(self.report, indent=2, default=str))
        generation = new_generation()
        body = self._manifest(generation)
        store = self.store
        if store.local:
            (self.path / MANIFEST).write_bytes(body)
            key_dir = Path(store._key_dir(self.stage, self.key))
            key_dir.mkdir(parents=True, exist_ok=True)
            final = key_dir / generation
            self.path.rename(final)  # complete, but not current until the pointer names it
            self.path = final  # a failure before the pointer discards it like a staging folder
            self._fence()
            store._publish(self.stage, self.key, generation)
        else:
            remote = store._gen_dir(self.stage, self.key, generation)
            store.fs.put(str(self.path) + "/", remote, recursive=True)
            store.fs.pipe_file(f"{remote}/{MANIFEST}", body)
            self._fence()
            store._publish(self.stage, self.key, generation)  # the pointer's upload publishes
            (self.path / MANIFEST).write_bytes(body)
            _place(self.path, store._cached(self.stage, self.key, generation), body)
            shutil.rmtree(self.path, ignore_errors=True)  # gone already unless a current copy was cached
        self.committed = True
        for cleanup in self._after_commit:
            cleanup()
        return store.ref(self.stage, self.key)

    def on_commit(self, cleanup: Callable[[], None]) -> None:
        """Runs ``cleanup`` once the artifact is published (not if the run fails): for work
        files that must outlive a crash, like a trainer's resumable checkpoints."""
        self._after_commit.append(cleanup)

    def _fence(self) -> None:
        if self.fence is not None:
            self.fence()

    def discard(self) -> None:
        for sub in list(self._open):
            with contextlib.suppress(OSError):
                self._flush(sub)
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.discard()
