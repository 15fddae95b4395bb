"""The artifact store on shared object storage: a real S3 API (moto's server on loopback) via s3fs.

Each "machine" is a separate local cache (``TUNELINE_CACHE``) over the same ``s3://`` root, which
is how several workers share one store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from flows.finetune import finetune
from tests.support.s3_server import S3Server, s3_server
from tests.support.stages import capture, fake_config, fake_stage
from tuneline import artifacts, locks
from tuneline.artifacts import ArtifactStore, CorruptArtifact
from tuneline.config import STAGES, load_config
from tuneline.pipeline import plan_keys
from tuneline.records import Record
from tuneline.stage import InjectedFailure, StageHooks
from tuneline.stage import execute as run_stage

BUCKET = "tuneline-artifacts"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    with s3_server(BUCKET, tmp_path_factory.mktemp("aws")) as server:
        yield server


def on_machine(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    monkeypatch.setenv("TUNELINE_CACHE", str(cache))
    return cache


def _rec(i: int) -> Record:
    return Record(id=str(i), kind="text", text=f"document number {i}")


# --------------------------------------------------------------------------- the store itself


def generation_of(s3: S3Server, prefix: str) -> str:
    """The generation the pointer under ``prefix`` (``<root>/<stage>/<key>/``) publishes."""
    return json.loads(s3.read(prefix + "current.json"))["generation"]


def test_commit_uploads_and_another_machine_reads_it(s3, tmp_path, monkeypatch):
    root, key = f"s3://{BUCKET}/roundtrip", "a" * 64
    on_machine(monkeypatch, tmp_path / "a")
    store = ArtifactStore(root)
    assert not store.local
    with store.writer("format", key, [], {"x": 1}) as w:
        w.write_all(_rec(i) for i in range(3))
        w.reject(_rec(9), "too_short", min_chars=20)
        w.file("tokenizer/tokenizer.json").write_text('{"v": 1}')
        w.report["note"] = "hi"
        ref = w.commit()
    assert ref.uri == f"{root}/format/{key}"
    prefix = f"roundtrip/format/{key}/"
    gen = generation_of(s3, prefix)
    names = ["data/00000.jsonl.gz", "manifest.json", "rejected/00000.jsonl.gz", "report.json", "tokenizer/tokenizer.json"]
    assert s3.keys("roundtrip/") == [prefix + "current.json"] + [f"{prefix}{gen}/{n}" for n in names]
    manifest = json.loads(s3.read(f"{prefix}{gen}/manifest.json"))
    assert manifest["generation"] == gen
    assert {n: e["size"] for n, e in manifest["files"].items()} == {
        n: len(s3.read(f"{prefix}{gen}/{n}")) for n in names if n != "manifest.json"
    }
    # the writer's machine keeps what it uploaded as its cached copy, and no staging directory
    cached = tmp_path / "a" / "s3" / BUCKET / "roundtrip" / "format"
    assert [p.name for p in cached.iterdir()] == [key]
    assert [p.name for p in (cached / key).iterdir()] == [gen]
    assert (cached / key / gen / "manifest.json").read_bytes() == s3.read(f"{prefix}{gen}/manifest.json")

    b = on_machine(monkeypatch, tmp_path / "b")
    other = ArtifactStore(root)
    assert other.exists("format", key) and other.list("format") == [key]
    art = other.open(ref)
    assert art.generation == gen and art.uri == f"{root}/format/{key}/{gen}"
    assert art.report["note"] == "hi" and art.report["records_out"] == 3
    assert art.manifest["counts"] == {"data": 3, "rejected": 1}
    assert art.check_sizes() == []
    assert not b.exists(), "manifest and report are read, and sizes checked, without downloading the artifact"
    assert [r.id for r in art.records()] == ["0", "1", "2"]
    assert list(art.rejected()) == [
        {"reason": "too_short", "min_chars": 20, "record": _rec(9).model_dump(mode="json", exclude_none=True)}
    ]
    assert art.path == b / "s3" / BUCKET / "roundtrip" / "format" / key / gen
    assert json.loads((art.path / "tokenizer" / "tokenizer.json").read_text()) == {"v": 1}


def test_crashed_writer_leaves_nothing_readable(s3, tmp_path, monkeypatch):
    root = f"s3://{BUCKET}/crash"
    machine = on_machine(monkeypatch, tmp_path / "a")
    store = ArtifactStore(root)
    with pytest.raises(RuntimeError, match="killed"), store.writer("train", "k1", [], {}) as w:
        w.write(_rec(1))
        w.file("adapter/adapter_model.safetensors").write_bytes(b"weights")
        raise RuntimeError("killed")
    assert s3.keys("crash/") == [] and not store.exists("train", "k1")
    assert list((machine / "s3" / BUCKET / "crash" / "train").iterdir()) == []  # staging removed

    # a crash after the upload but before the manifest: the files are there, the artifact is not
    def killed(*args, **kwargs):
        raise RuntimeError("killed before the manifest")

    monkeypatch.setattr(store.fs, "pipe_file", killed)
    with pytest.raises(RuntimeError, match="before the manifest"), store.writer("train", "k2", [], {}) as w:
        w.file("adapter/adapter_model.safetensors").write_bytes(b"weights")
        w.commit()
    monkeypatch.undo()
    on_machine(monkeypatch, tmp_path / "b")
    (uploaded,) = [k for k in s3.keys("crash/") if k.endswith("adapter/adapter_model.safetensors")]
    gen = uploaded.split("/")[3]
    assert uploaded == f"crash/train/k2/{gen}/adapter/adapter_model.safetensors"
    other = ArtifactStore(root)
    assert not other.exists("train", "k2") and other.list("train") == []
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        other.open(other.ref("train", "k2"))

    # even with its manifest there, a generation is published only by the pointer's upload; once
    # another machine uploads it, this one sees the artifact at once (no listing is cached)
    entry = {"size": len(b"weights"), "sha256": hashlib.sha256(b"weights").hexdigest()}
    manifest = {"stage": "train", "key": "k2", "generation": gen, "files": {"adapter/adapter_model.safetensors": entry}}
    s3.client.put_object(Bucket=BUCKET, Key=f"crash/train/k2/{gen}/manifest.json", Body=json.dumps(manifest).encode())
    assert not other.exists("train", "k2")
    pointer = {"generation": gen, "published": time.time(), "retired": {}}
    s3.client.put_object(Bucket=BUCKET, Key="crash/train/k2/current.json", Body=json.dumps(pointer).encode())
    assert other.exists("train", "k2") and other.list("train") == ["k2"]
    path = other.open(other.ref("train", "k2")).path
    assert (path / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_forced_rewrite_publishes_a_new_generation_and_drops_old_ones_after_the_grace(s3, tmp_path, monkeypatch):
    root, key = f"s3://{BUCKET}/rewrite", "r" * 64
    gens, reader = [], tmp_path / "reader"
    for n, extra in ((5, "old.txt"), (2, None)):
        on_machine(monkeypatch, tmp_path / "writer")
        store = ArtifactStore(root)
        with store.writer("dedup", key, [], {}) as w:
            w.write_all(_rec(i) for i in range(n))
            if extra:
                w.file(extra).write_text("from the first version")
            ref = w.commit()
        gens.append(generation_of(s3, f"rewrite/dedup/{key}/"))
        # a reader caches each version it is shown
        on_machine(monkeypatch, reader)
        assert len(list(ArtifactStore(root).open(ref).records())) == n
    first, second = gens
    assert first < second
    # within the grace period the replaced generation stays, in the bucket and in the reader's cache
    assert f"rewrite/dedup/{key}/{first}/old.txt" in s3.keys("rewrite/")
    cached = reader / "s3" / BUCKET / "rewrite" / "dedup" / key
    assert sorted(p.name for p in cached.iterdir()) == [first, second]
    assert not (ArtifactStore(root).open(ref).path / "old.txt").exists()
    # past it, the next commit removes it from the bucket (the one it replaces now gets its own
    # grace period), and the next fetch from the cache
    monkeypatch.setattr(artifacts, "GRACE_SECONDS", 0.0)
    on_machine(monkeypatch, tmp_path / "writer")
    with ArtifactStore(root).writer("dedup", key, [], {}) as w:
        w.write(_rec(7))
        w.commit()
    third = generation_of(s3, f"rewrite/dedup/{key}/")
    assert {k.split("/")[3] for k in s3.keys(f"rewrite/dedup/{key}/") if k.count("/") > 3} == {second, third}
    on_machine(monkeypatch, reader)
    assert [r.id for r in ArtifactStore(root).open(ref).records()] == ["7"]
    assert sorted(p.name for p in cached.iterdir()) == [third]


def test_reuse_checks_sizes_in_the_bucket_and_reads_check_hashes(s3, tmp_path, monkeypatch):
    """A file deleted or edited in the bucket is named by the size check (without a download);
    an edit of the same size is caught by the hash check when the artifact is fetched; an edited
    cached copy on one machine is downloaded again rather than reported."""
    root, key = f"s3://{BUCKET}/tamper", "t" * 64
    on_machine(monkeypatch, tmp_path / "a")
    with ArtifactStore(root).writer("train", key, [], {}) as w:
        w.file("adapter/weights.bin").write_bytes(b"0123456789")
        w.file("adapter/config.json").write_text("{}")
        ref = w.commit()
    gen = generation_of(s3, f"tamper/train/{key}/")
    weights = f"tamper/train/{key}/{gen}/adapter/weights.bin"

    # a machine's cached copy edited in place: fetched again, nothing reported
    cached = ArtifactStore(root).open(ref).path / "adapter" / "weights.bin"
    cached.write_bytes(b"9876543210")
    assert (ArtifactStore(root).open(ref).path / "adapter" / "weights.bin").read_bytes() == b"0123456789"

    # the bucket's copy edited, same size: sizes pass, the hash check on read names the file
    s3.client.put_object(Bucket=BUCKET, Key=weights, Body=b"9876543210")
    b = on_machine(monkeypatch, tmp_path / "b")
    art = ArtifactStore(root).open(ref)
    assert art.check_sizes() == [] and not b.exists()
    assert [str(p) for p in art.verify()] == ["adapter/weights.bin changed (same size, different sha256)"]
    with pytest.raises(CorruptArtifact, match="adapter/weights.bin changed") as caught:
        _ = art.path
    assert (caught.value.stage, caught.value.key, caught.value.generation) == ("train", key, gen)

    # deleted from the bucket: the cheap size check names it
    s3.client.delete_object(Bucket=BUCKET, Key=weights)
    assert [str(p) for p in ArtifactStore(root).open(ref).check_sizes()] == ["adapter/weights.bin missing"]


def test_lease_lets_one_machine_compute_and_the_other_wait(s3, tmp_path, monkeypatch):
    """Two machines execute the same stage at once: the lease in the bucket makes one compute,
    the other wait for it (and say so) and reuse what it published."""
    on_machine(monkeypatch, tmp_path / "a")
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.1)
    cfg = fake_config(f"s3://{BUCKET}/lease-run")
    calls: list[int] = []
    started = threading.Event()

    def slow(inputs, cfg, out):
        calls.append(1)
        started.set()
        time.sleep(1.0)
        out.write(_rec(1))

    stage = fake_stage(slow)
    logger = logging.getLogger("tuneline.test-lease")
    outcomes = []
    first = threading.Thread(target=lambda: outcomes.append(run_stage(stage, cfg, [])))
    first.start()
    assert started.wait(30)
    with capture(logger) as lines:
        outcomes.append(run_stage(stage, cfg, [], hooks=StageHooks(logger=logger)))
    first.join()
    assert calls == [1]
    assert sorted(o.reused for o in outcomes) == [False, True]
    assert outcomes[0].ref == outcomes[1].ref
    assert any("waiting for another run computing fake/" in line for line in lines), lines
    assert not [k for k in s3.keys("lease-run/") if k.endswith(".lease")], "a released lease is deleted"


def test_an_expired_lease_is_taken_over_and_its_owner_cannot_publish(s3, tmp_path, monkeypatch):
    on_machine(monkeypatch, tmp_path / "a")
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.1)
    store = ArtifactStore(f"s3://{BUCKET}/lease-expiry")
    hung = locks.LeaseKeyLock(store.fs, f"{store._root_path}/.locks/s/k.lease", "s/k", seconds=2.0)
    hung.__enter__()
    hung.stop_heartbeat()  # plays a run that hangs: its lease is no longer renewed
    other = locks.LeaseKeyLock(store.fs, f"{store._root_path}/.locks/s/k.lease", "s/k", seconds=30)
    assert not other.try_acquire(), "a lease within its expiry is respected"
    time.sleep(2.2)
    assert other.try_acquire(), "an expired lease may be taken over"
    assert json.loads(s3.read("lease-expiry/.locks/s/k.lease"))["token"] == other.token
    # the hung owner wakes up: renewing fails (the lease's ETag changed), so it may not publish
    assert hung.renew() is False and hung.lost
    with pytest.raises(locks.LeaseLost, match="another run took it over"):
        with store.writer("s", "k", [], {}, fence=hung.check) as w:
            w.write(_rec(1))
            w.commit()
    assert not store.exists("s", "k"), "what the run that lost its lease computed is not published"


def test_heartbeat_keeps_a_long_computation_s_lease(s3, tmp_path, monkeypatch):
    on_machine(monkeypatch, tmp_path / "a")
    store = ArtifactStore(f"s3://{BUCKET}/lease-heartbeat")
    path = f"{store._root_path}/.locks/s/k.lease"
    with locks.LeaseKeyLock(store.fs, path, "s/k", seconds=1.5) as held:
        first = json.loads(s3.read("lease-heartbeat/.locks/s/k.lease"))["expires"]
        time.sleep(3.5)  # more than twice the lease: only renewals keep it
        later = json.loads(s3.read("lease-heartbeat/.locks/s/k.lease"))
        assert later["token"] == held.token and later["expires"] > first + 1.5
        assert not locks.LeaseKeyLock(store.fs, path, "s/k").try_acquire()
        held.check()
    assert "lease-heartbeat/.locks/s/k.lease" not in s3.keys("lease-heartbeat/")


def test_run_stage_and_fault_injection_on_s3(s3, tmp_path, monkeypatch):
    """run_stage outside Prefect: TUNELINE_FAIL's attempt counter lives in the bucket, so it
    counts attempts across machines; the stage's artifact is reused once published."""
    on_machine(monkeypatch, tmp_path / "a")
    cfg = fake_config(f"s3://{BUCKET}/faults-run")
    calls: list[int] = []
    mod = fake_stage(lambda inputs, cfg, out: (calls.append(1), out.write(_rec(1))))
    monkeypatch.setenv("TUNELINE_FAIL", "fake:1")
    with pytest.raises(InjectedFailure, match="1/1 of stage 'fake'"):
        run_stage(mod, cfg, [])
    assert s3.read("faults-run/faults/fake") == b"1" and calls == []
    first = run_stage(mod, cfg, [])
    on_machine(monkeypatch, tmp_path / "b")
    again = run_stage(mod, cfg, [])
    assert calls == [1] and not first.reused and again.reused and again.ref == first.ref
    assert again.report["records_out"] == 1


# --------------------------------------------------------------------------- the whole pipeline
# (marked slow like tests/flows/test_finetune.py: it trains; about 30-50 s on 2 cores)

# The demo shrunk to seconds: a smaller tiny model, one epoch, a few scored examples.
SMALL = [
    "model.tiny.vocab_size=512",
    "model.tiny.hidden_size=32",
    "model.tiny.intermediate_size=64",
    "model.tiny.num_hidden_layers=1",
    "model.tiny.num_attention_heads=2",
    "format.max_length=128",
    "train.max_length=128",
    "train.max_steps=4",
    "evaluate.max_examples=16",
    "evaluate.num_samples=1",
    "evaluate.max_new_tokens=8",
]


def s3_cfg(workdir: Path, repo: Path, root: str, *overrides: str):
    """The shrunk demo config on a private copy of the sample corpus, its artifacts under ``root``."""
    cfg = load_config(repo / "deployments" / "demo.yaml", [f"run.artifact_root={root}", *SMALL, *overrides])
    for s in cfg.ingest.sources:
        s.path = str(workdir / "sample" / Path(s.path).relative_to("data/sample"))
    return cfg


def reused(summary: dict) -> dict[str, bool]:
    return {s: o["reused"] for s, o in summary["stages"].items()}


def manifests(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Every manifest and pointer under ``prefix``: what publishing writes."""
    return {k: s3.read(k) for k in s3.keys(prefix) if k.endswith(("/manifest.json", "/current.json"))}


@pytest.fixture(scope="module")
def runs(prefect_api, s3, tmp_path_factory):
    """Machine a runs the pipeline into the bucket; machine b, with an empty cache, runs it again."""
    repo = Path(__file__).resolve().parents[2]
    workdir = tmp_path_factory.mktemp("s3flow")
    shutil.copytree(repo / "data" / "sample", workdir / "sample")
    cfg = s3_cfg(workdir, repo, f"s3://{BUCKET}/run")
    with pytest.MonkeyPatch.context() as mp:
        on_machine(mp, workdir / "machine-a")
        first = finetune(config=cfg)
        published = manifests(s3, "run/")
        on_machine(mp, workdir / "machine-b")
        second = finetune(config=cfg)
    lineage = [json.loads(s3.read(k)) for k in s3.keys("run/runs/")]
    return {
        "cfg": cfg, "workdir": workdir, "repo": repo, "first": first, "second": second,
        "published": published, "lineage": lineage,
    }


@pytest.mark.slow
def test_pipeline_publishes_every_artifact_in_the_bucket(runs, s3):
    assert list(runs["first"]["stages"]) == list(STAGES)
    assert not any(reused(runs["first"]).values())
    keys = s3.keys("run/")
    refs = plan_keys(runs["cfg"])
    gens = {stage: generation_of(s3, f"run/{stage}/{ref.key}/") for stage, ref in refs.items()}
    for stage, ref in refs.items():
        assert ref.uri == f"s3://{BUCKET}/run/{stage}/{ref.key}"
        gen = f"run/{stage}/{ref.key}/{gens[stage]}"
        assert f"{gen}/manifest.json" in keys, stage
        assert f"{gen}/report.json" in keys, stage
        listed = json.loads(s3.read(f"{gen}/manifest.json"))["files"]
        assert sorted([f"run/{stage}/{ref.key}/current.json"] + [f"{gen}/{f}" for f in [*listed, "manifest.json"]]) == [
            k for k in keys if k.startswith(f"run/{stage}/{ref.key}/")
        ], f"{stage}: the bucket holds the pointer and exactly the files its manifest lists"
    for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json"):
        assert f"run/train/{refs['train'].key}/{gens['train']}/{f}" in keys
    assert f"run/evaluate/{refs['evaluate'].key}/{gens['evaluate']}/report.md" in keys
    assert not [k for k in keys if ".locks/" in k], "every lease was released"
    # the writing machine kept what it uploaded as its cached copies: its stages read them in place
    cached = runs["workdir"] / "machine-a" / "s3" / BUCKET / "run"
    for stage, ref in refs.items():
        assert (cached / stage / ref.key / gens[stage] / "manifest.json").read_bytes() == s3.read(
            f"run/{stage}/{ref.key}/{gens[stage]}/manifest.json"
        ), stage
    # one lineage record per run, in the bucket too, naming every stage's artifact
    assert len(runs["lineage"]) == 2
    for record in runs["lineage"]:
        assert {s: o["ref"]["key"] for s, o in record["stages"].items()} == {s: r.key for s, r in refs.items()}


@pytest.mark.slow
def test_second_machine_reuses_every_stage_without_downloading(runs, s3):
    second = runs["second"]
    assert reused(second) == dict.fromkeys(STAGES, True)
    assert {s: o["ref"]["key"] for s, o in second["stages"].items()} == {
        s: o["ref"]["key"] for s, o in runs["first"]["stages"].items()
    }
    assert manifests(s3, "run/") == runs["published"], "a reused stage rewrites nothing"
    # reuse reads each stage's report (its row in the summary) and never its data
    assert not (runs["workdir"] / "machine-b").exists()
    # the bucket's lineage says so: one run built everything, the other reused everything
    patterns = sorted(tuple(o["reused"] for o in r["stages"].values()) for r in runs["lineage"])
    assert patterns == [(False,) * len(STAGES), (True,) * len(STAGES)]


@pytest.mark.slow
def test_third_machine_evaluates_on_adapter_fetched_from_the_bucket(runs, s3, monkeypatch):
    """A changed evaluate setting: evaluate runs on machine c, reading train's adapter and format's
    splits and tokenizer through its cache; every other stage is reused but card, which reads
    evaluate's new report."""
    c = on_machine(monkeypatch, runs["workdir"] / "machine-c")
    cfg = s3_cfg(runs["workdir"], runs["repo"], f"s3://{BUCKET}/run", "evaluate.max_new_tokens=4")
    summary = finetune(config=cfg)
    assert reused(summary) == {**dict.fromkeys(STAGES, True), "evaluate": False, "card": False}
    refs = plan_keys(cfg)
    gens = {stage: generation_of(s3, f"run/{stage}/{ref.key}/") for stage, ref in refs.items()}
    cached = {stage: c / "s3" / BUCKET / "run" / stage / ref.key / gens[stage] for stage, ref in refs.items()}
    assert (cached["train"] / "adapter" / "adapter_model.safetensors").is_file()
    assert (cached["format"] / "splits").is_dir()
    report = s3.read(f"run/evaluate/{refs['evaluate'].key}/{gens['evaluate']}/report.md")
    assert report and (cached["evaluate"] / "report.md").read_bytes() == report
    cached = c / "s3" / BUCKET / "run"
    assert not (cached / "ingest").exists(), "stages evaluate does not read stay in the bucket"
