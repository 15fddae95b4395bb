import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuneline import artifacts, provenance
from tuneline.artifacts import ArtifactStore, artifact_key, hash_bytes_of, new_generation
from tuneline.locks import hostname
from tuneline.records import Record

REPO = Path(__file__).resolve().parents[2]


def _rec(i: int) -> Record:
    return Record(id=str(i), kind="text", text=f"document number {i}")


def test_key_depends_on_every_part():
    base = artifact_key("dedup", 1, {"a": 1}, ["k1"])
    assert base == artifact_key("dedup", 1, {"a": 1}, ["k1"])
    assert base != artifact_key("pii", 1, {"a": 1}, ["k1"])
    assert base != artifact_key("dedup", 2, {"a": 1}, ["k1"])
    assert base != artifact_key("dedup", 1, {"a": 2}, ["k1"])
    assert base != artifact_key("dedup", 1, {"a": 1}, ["k2"])
    # canonical JSON: key order does not matter
    assert artifact_key("s", 1, {"a": 1, "b": 2}, []) == artifact_key("s", 1, {"b": 2, "a": 1}, [])


def test_file_hash_is_content_not_path(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same")
    b.write_text("same")
    assert hash_bytes_of(a) == hash_bytes_of(b)
    before = hash_bytes_of(a)
    a.write_text("changed")
    assert hash_bytes_of(a) != before


def test_commit_publishes_records_rejects_and_report(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    with store.writer("s", "k" * 64, [], {"x": 1}) as w:
        w.write_all(_rec(i) for i in range(3))
        w.reject(_rec(9), "too_short", min_chars=20)
        ref = w.commit()
    art = store.open(ref)
    assert [r.id for r in art.records()] == ["0", "1", "2"]
    assert list(art.rejected()) == [
        {"reason": "too_short", "min_chars": 20, "record": _rec(9).model_dump(mode="json", exclude_none=True)}
    ]
    assert art.report["records_out"] == 3 and art.report["rejected_by_reason"] == {"too_short": 1}
    assert art.manifest["counts"] == {"data": 3, "rejected": 1}
    assert store.list("s") == ["k" * 64]
    # <root>/<stage>/<key>/ holds the pointer and one generation, whose manifest lists every
    # other file with its size and sha256
    key_dir = tmp_path / "s" / ("k" * 64)
    assert sorted(p.name for p in key_dir.iterdir()) == ["current.json", art.generation]
    assert json.loads((key_dir / "current.json").read_text())["generation"] == art.generation
    gen = key_dir / art.generation
    on_disk = sorted(str(p.relative_to(gen)) for p in gen.rglob("*") if p.is_file())
    assert on_disk == sorted([*art.manifest["files"], "manifest.json"])
    for name, entry in art.manifest["files"].items():
        assert entry == {"size": (gen / name).stat().st_size, "sha256": hash_bytes_of(gen / name)}, name
    assert art.check_sizes() == [] and art.verify() == []


def test_crash_mid_write_leaves_nothing_readable(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer("s", "k1", [], {}) as w:
        w.write(_rec(1))
        raise RuntimeError("killed")
    assert not store.exists("s", "k1")
    assert list((tmp_path / "s").iterdir()) == []  # staging dir cleaned up
    # a directory without a manifest (a crash between files) is never read
    (tmp_path / "s" / "k2" / "data").mkdir(parents=True)
    assert not store.exists("s", "k2") and store.list("s") == []
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        store.open(store.ref("s", "k2"))


def _commit(store: ArtifactStore, n: int, key: str = "k"):
    with store.writer("s", key, [], {}) as w:
        w.write_all(_rec(i) for i in range(n))
        return w.commit()


def test_forced_rewrite_publishes_a_new_generation_and_readers_keep_theirs(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    ref = _commit(store, 2)
    reader = store.open(ref)  # opened before the rewrite
    _commit(store, 5)
    assert len(list(store.open(ref).records())) == 5
    assert len(list(reader.records())) == 2, "a reader keeps reading the generation it opened"
    assert store.generations("s", "k") == sorted([reader.generation, store.open(ref).generation])


def test_replaced_generations_go_after_the_grace_period_and_unpublished_ones_after_a_day(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    _commit(store, 1)
    first = store.current("s", "k")
    _commit(store, 2)
    second = store.current("s", "k")
    _commit(store, 3)
    third = store.current("s", "k")
    assert first in store.generations("s", "k"), "within the grace period a replaced generation stays"
    monkeypatch.setattr(artifacts, "GRACE_SECONDS", 0.0)
    # a generation a crashed writer never published: kept while young, removed once a day old
    young = tmp_path / "s" / "k" / new_generation()
    old = tmp_path / "s" / "k" / new_generation(time.time() - 2 * artifacts.ORPHAN_SECONDS)
    for d in (young, old):
        (d / "data").mkdir(parents=True)
    _commit(store, 4)
    current = store.current("s", "k")
    assert first not in store.generations("s", "k") and second not in store.generations("s", "k")
    assert young.exists() and not old.exists()
    # the one replaced just now starts its own grace period
    assert sorted(store.generations("s", "k")) == sorted([third, young.name, current])
    # and nothing was left behind in the stage folder by the removals
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["k"]


def test_manifest_records_versions_and_git_commit(tmp_path: Path):
    env = ArtifactStore(tmp_path).open(_commit(ArtifactStore(tmp_path), 1)).manifest["environment"]
    assert env["python"] == platform.python_version()
    assert env["packages"]["prefect"] == importlib.metadata.version("prefect")
    assert env["packages"]["torch"] == importlib.metadata.version("torch")
    assert set(env["packages"]) <= set(provenance.PACKAGES)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git"]["commit"] == head.stdout.strip() and isinstance(env["git"]["dirty"], bool)
    else:
        assert env["git"] is None
    # a package that is not installed is left out; a folder that is no checkout gives None
    assert provenance.package_versions(("prefect", "no-such-package-tuneline")) == {
        "prefect": importlib.metadata.version("prefect")
    }
    assert provenance.git_commit(tmp_path) is None


def test_next_writer_removes_staging_folders_whose_owner_is_gone(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = hostname()
    stage = tmp_path / "s"
    dead_dir = stage / f".staging.{dead.pid}.kkkkkkkkkkkk.abc123@{host}"
    live_dir = stage / f".staging.{os.getpid()}.kkkkkkkkkkkk.def456@{host}"
    stale_elsewhere = tmp_path / "other" / ".staging.4242.kkkkkkkkkkkk.ghi789@elsewhere"
    fresh_elsewhere = stage / ".staging.4242.kkkkkkkkkkkk.jkl012@elsewhere"
    for d in (dead_dir, live_dir, stale_elsewhere, fresh_elsewhere):
        (d / "data").mkdir(parents=True)
        (d / "data" / "00000.jsonl.gz").write_bytes(b"half written")
    two_days_ago = time.time() - 2 * artifacts.ORPHAN_SECONDS
    os.utime(stale_elsewhere, (two_days_ago, two_days_ago))
    _commit(store, 1)
    assert not dead_dir.exists(), "its owner process is gone on this host"
    assert live_dir.exists(), "its owner (this process) is alive"
    assert not stale_elsewhere.exists(), "another host's, untouched for more than a day"
    assert fresh_elsewhere.exists(), "another host's, recent: its owner may still be writing"


def test_fsspec_memory_root_roundtrip():
    store = ArtifactStore("memory://tuneline-test-root")
    assert not store.local
    with store.writer("s", "kk", [], {}) as w:
        w.write(_rec(1))
        (w.file("extra/info.txt")).write_text("hi")
        ref = w.commit()
    assert store.exists("s", "kk")
    art = store.open(ref)
    assert art.check_sizes() == []
    assert [r.id for r in art.records()] == ["1"]
    assert (art.path / "extra" / "info.txt").read_text() == "hi"


def test_execute_on_a_store_without_conditional_writes_computes_once_and_releases_its_lease(tmp_path, monkeypatch):
    """memory:// stands for object stores other than S3: the lease is written, read back, and
    deleted after the commit."""
    from tests.support.stages import fake_config, fake_stage
    from tuneline.stage import execute

    monkeypatch.setenv("TUNELINE_CACHE", str(tmp_path / "cache"))
    cfg = fake_config("memory://tuneline-lease-root")
    calls: list[int] = []
    first = execute(fake_stage(calls=calls), cfg, [])
    again = execute(fake_stage(calls=calls), cfg, [])
    assert calls == [1] and again.reused and again.ref == first.ref
    store = ArtifactStore(cfg.run.artifact_root)
    assert store.fs.find(f"{store._root_path}/.locks") == []
