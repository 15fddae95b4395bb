"""The artifact store on shared object storage: a real S3 API (moto's server on loopback) via s3fs.

Each "machine" is a separate local cache (``TUNELINE_CACHE``) over the same ``s3://`` root, which
is how several workers share one store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.finetune import finetune
from tests.support.s3_server import S3Server, s3_server
from tests.support.stages import fake_config, fake_stage
from tuneline.artifacts import ArtifactStore
from tuneline.config import STAGES, load_config
from tuneline.pipeline import plan_keys
from tuneline.records import Record
from tuneline.stage import InjectedFailure
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
    names = ["data/00000.jsonl.gz", "manifest.json", "rejected/00000.jsonl.gz", "report.json", "tokenizer/tokenizer.json"]
    assert s3.keys("roundtrip/") == [prefix + n for n in names]
    # the writer's machine keeps what it uploaded as its cached copy, and no staging directory
    cached = tmp_path / "a" / "s3" / BUCKET / "roundtrip" / "format"
    assert [p.name for p in cached.iterdir()] == [key]
    assert (cached / key / "manifest.json").read_bytes() == s3.read(prefix + "manifest.json")

    b = on_machine(monkeypatch, tmp_path / "b")
    other = ArtifactStore(root)
    assert other.exists("format", key) and other.list("format") == [key]
    art = other.open(ref)
    assert art.report["note"] == "hi" and art.report["records_out"] == 3
    assert art.manifest["counts"] == {"data": 3, "rejected": 1}
    assert not b.exists(), "manifest and report are read without downloading the artifact"
    assert [r.id for r in art.records()] == ["0", "1", "2"]
    assert list(art.rejected()) == [
        {"reason": "too_short", "min_chars": 20, "record": _rec(9).model_dump(mode="json", exclude_none=True)}
    ]
    assert art.path == b / "s3" / BUCKET / "roundtrip" / "format" / key
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
    assert "crash/train/k2/adapter/adapter_model.safetensors" in s3.keys("crash/")
    other = ArtifactStore(root)
    assert not other.exists("train", "k2") and other.list("train") == []
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        other.open(other.ref("train", "k2"))

    # the manifest is what publishes: once another machine uploads it, this one sees the artifact
    # at once (no directory listing is cached)
    manifest = {"stage": "train", "key": "k2", "files": ["adapter/adapter_model.safetensors"], "counts": {}}
    s3.client.put_object(Bucket=BUCKET, Key="crash/train/k2/manifest.json", Body=json.dumps(manifest).encode())
    assert other.exists("train", "k2") and other.list("train") == ["k2"]
    path = other.open(other.ref("train", "k2")).path
    assert (path / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_forced_rewrite_replaces_the_artifact_and_stale_cached_copies(s3, tmp_path, monkeypatch):
    root, key = f"s3://{BUCKET}/rewrite", "r" * 64
    for n, extra in ((5, "old.txt"), (2, None)):
        on_machine(monkeypatch, tmp_path / "writer")
        store = ArtifactStore(root)
        with store.writer("dedup", key, [], {}) as w:
            w.write_all(_rec(i) for i in range(n))
            if extra:
                w.file(extra).write_text("from the first version")
            ref = w.commit()
        # a reader caches each version it is shown
        on_machine(monkeypatch, tmp_path / "reader")
        assert len(list(ArtifactStore(root).open(ref).records())) == n
    assert f"rewrite/dedup/{key}/old.txt" not in s3.keys("rewrite/")
    assert not (ArtifactStore(root).open(ref).path / "old.txt").exists()


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
    return {k: s3.read(k) for k in s3.keys(prefix) if k.endswith("/manifest.json")}


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
    for stage, ref in plan_keys(runs["cfg"]).items():
        assert ref.uri == f"s3://{BUCKET}/run/{stage}/{ref.key}"
        assert f"run/{stage}/{ref.key}/manifest.json" in keys, stage
        assert f"run/{stage}/{ref.key}/report.json" in keys, stage
        listed = json.loads(s3.read(f"run/{stage}/{ref.key}/manifest.json"))["files"]
        assert sorted(f"run/{stage}/{ref.key}/{f}" for f in [*listed, "manifest.json"]) == [
            k for k in keys if k.startswith(f"run/{stage}/{ref.key}/")
        ], f"{stage}: the bucket holds exactly the files its manifest lists"
    refs = plan_keys(runs["cfg"])
    for f in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer.json"):
        assert f"run/train/{refs['train'].key}/{f}" in keys
    assert f"run/evaluate/{refs['evaluate'].key}/report.md" in keys
    # the writing machine kept what it uploaded as its cached copies: its stages read them in place
    cached = runs["workdir"] / "machine-a" / "s3" / BUCKET / "run"
    for stage, ref in refs.items():
        assert (cached / stage / ref.key / "manifest.json").read_bytes() == s3.read(
            f"run/{stage}/{ref.key}/manifest.json"
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
    splits and tokenizer through its cache; every other stage is reused."""
    c = on_machine(monkeypatch, runs["workdir"] / "machine-c")
    cfg = s3_cfg(runs["workdir"], runs["repo"], f"s3://{BUCKET}/run", "evaluate.max_new_tokens=4")
    summary = finetune(config=cfg)
    assert reused(summary) == {**dict.fromkeys(STAGES, True), "evaluate": False}
    refs = plan_keys(cfg)
    cached = c / "s3" / BUCKET / "run"
    assert (cached / "train" / refs["train"].key / "adapter" / "adapter_model.safetensors").is_file()
    assert (cached / "format" / refs["format"].key / "splits").is_dir()
    report = s3.read(f"run/evaluate/{refs['evaluate'].key}/report.md")
    assert report and (cached / "evaluate" / refs["evaluate"].key / "report.md").read_bytes() == report
    assert not (cached / "ingest").exists(), "stages evaluate does not read stay in the bucket"
