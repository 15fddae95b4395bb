from pathlib import Path

import pytest

from tuneline.artifacts import ArtifactStore, artifact_key, hash_bytes_of
from tuneline.records import Record


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


def test_forced_rewrite_replaces_artifact(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    for n in (2, 5):
        with store.writer("s", "k", [], {}) as w:
            w.write_all(_rec(i) for i in range(n))
            ref = w.commit()
    assert len(list(store.open(ref).records())) == 5


def test_fsspec_memory_root_roundtrip():
    store = ArtifactStore("memory://tuneline-test-root")
    assert not store.local
    with store.writer("s", "kk", [], {}) as w:
        w.write(_rec(1))
        (w.file("extra/info.txt")).write_text("hi")
        ref = w.commit()
    assert store.exists("s", "kk")
    art = store.open(ref)
    assert [r.id for r in art.records()] == ["1"]
    assert (art.path / "extra" / "info.txt").read_text() == "hi"
