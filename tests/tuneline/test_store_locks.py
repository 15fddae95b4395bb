"""One computation per key, and generations that readers never see vanish.

Two processes that execute the same stage at once compute it once; a reader that reads an
artifact in a loop while it is force-recomputed always finds a whole generation.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from tests.support.concurrent import counting_stage, execute_chain
from tests.support.stages import capture, fake_config, fake_stage
from tuneline import artifacts, locks
from tuneline.artifacts import ArtifactStore
from tuneline.records import Record
from tuneline.stage import StageHooks, execute


def run_in_processes(root: Path, counter: Path, names: tuple[str, ...], n: int = 2) -> list[list[tuple]]:
    """Runs ``execute_chain`` in ``n`` spawned processes released together; their outcomes."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=execute_chain, args=(str(root), str(counter), names, start, results, 1.5)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0] * n
    return outcomes


def computed(counter: Path) -> list[str]:
    """The stage names in the counter file, one line per computation."""
    return [line.split()[0] for line in counter.read_text().splitlines()] if counter.exists() else []


def test_two_processes_compute_one_key_once(tmp_path):
    counter = tmp_path / "computations.txt"
    first, second = run_in_processes(tmp_path / "artifacts", counter, ("solo",))
    assert computed(counter) == ["solo"]
    assert first[0][1] == second[0][1], "both return the same artifact"
    assert sorted(o[0][2] for o in (first, second)) == [False, True], "one computed it, the other reused it"
    assert len(ArtifactStore(tmp_path / "artifacts").generations("solo", first[0][1])) == 1


def test_two_processes_compute_a_chain_of_two_stages_once_each(tmp_path):
    counter = tmp_path / "computations.txt"
    first, second = run_in_processes(tmp_path / "artifacts", counter, ("a", "b"))
    assert sorted(computed(counter)) == ["a", "b"]
    assert [(n, k) for n, k, _ in first] == [(n, k) for n, k, _ in second]
    for i in range(2):
        assert sorted(o[i][2] for o in (first, second)) == [False, True]
    store = ArtifactStore(tmp_path / "artifacts")
    (b,) = store.open(store.ref("b", first[1][1])).records()
    assert b.text == "b read 1 records"


def test_a_waiting_run_says_what_it_waits_for_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.05)
    counter = tmp_path / "computations.txt"
    cfg = fake_config(str(tmp_path / "artifacts"), name="solo")
    stage = counting_stage("solo", str(counter), 1.0)
    ahead = threading.Thread(target=execute, args=(stage, cfg, []))
    ahead.start()
    while not computed(counter):
        time.sleep(0.02)
    logger = logging.getLogger("tuneline.test-locks")
    with capture(logger) as lines:
        outcome = execute(stage, cfg, [], hooks=StageHooks(logger=logger))
    ahead.join()
    assert outcome.reused and computed(counter) == ["solo"]
    key = outcome.ref.key
    assert any(f"waiting for another run computing solo/{key[:12]}" in line for line in lines), lines


def test_forced_runs_that_wait_for_each_other_compute_once(tmp_path, monkeypatch):
    """``--force`` in two runs at once: the second finds the generation the first published
    while it waited, and takes it instead of computing the same thing again."""
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.05)
    counter = tmp_path / "computations.txt"
    cfg = fake_config(str(tmp_path / "artifacts"), name="solo")
    stage = counting_stage("solo", str(counter), 1.0)
    execute(stage, cfg, [])
    ahead = threading.Thread(target=execute, args=(stage, cfg, []), kwargs={"force": True})
    ahead.start()
    while len(computed(counter)) < 2:
        time.sleep(0.02)
    outcome = execute(stage, cfg, [], force=True)
    ahead.join()
    assert outcome.reused and computed(counter) == ["solo", "solo"]


def test_a_reader_never_sees_a_forced_artifact_missing_or_incomplete(tmp_path, monkeypatch):
    # A short grace period, so old generations are also removed while the reader reads.
    monkeypatch.setattr(artifacts, "GRACE_SECONDS", 0.3)
    cfg = fake_config(str(tmp_path / "artifacts"))
    version = itertools.count(1)

    def work(inputs, cfg, out):
        n = next(version)
        for i in range(20 * n):
            out.write(Record(id=f"{n}-{i}", kind="text", text="x" * 200))
        out.file("adapter/weights.bin").write_bytes(bytes([n]) * 4096)
        out.report["version"] = n

    stage = fake_stage(work)
    ref = execute(stage, cfg, []).ref
    store = ArtifactStore(cfg.run.artifact_root)
    stop, seen, errors = threading.Event(), [], []

    def read_forever():
        while not stop.is_set():
            try:
                art = store.open(ref)
                n = art.report["version"]
                ids = [r.id for r in art.records()]
                assert ids == [f"{n}-{i}" for i in range(20 * n)], f"generation {art.generation} is incomplete"
                assert (art.path / "adapter" / "weights.bin").read_bytes() == bytes([n]) * 4096
                seen.append(n)
            except Exception as e:  # any failure at all is what this test is about
                errors.append(repr(e))

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for _ in range(8):
            time.sleep(0.1)
            execute(stage, cfg, [], force=True)
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(seen) > 20 and len(set(seen)) >= 4, "the reader read many times, across generations"
    assert seen == sorted(seen), "never an older generation after a newer one"
    assert len(store.generations("fake", ref.key)) < 9, "replaced generations were removed after the grace"


def test_an_unusable_lock_folder_is_a_store_error(tmp_path):
    """The lock lives in the root: a root that cannot be written fails with the root's name."""
    from tuneline.errors import StoreError

    root = tmp_path / "artifacts"
    root.mkdir()
    (root / ".locks").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write the artifact root"):
        execute(fake_stage(), fake_config(str(root)), [])
