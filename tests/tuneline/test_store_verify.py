"""Verified artifacts: a file deleted or edited after publishing is never reused silently.

Reuse checks sizes; reads check sha256 (record shards as they are read, stage files through
``Artifact.path``); a stale artifact is recomputed with a warning naming the file, and the
pipeline runner recomputes a corrupt input before re-running the stage that read it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import string
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.stages import capture, fake_config, fake_pipeline_config, fake_stage
from tuneline import registry, runner
from tuneline.artifacts import Artifact, ArtifactStore, CorruptArtifact
from tuneline.records import Record, dump_jsonl_gz, load_jsonl_gz
from tuneline.stage import StageHooks, execute

ORIGINAL = [f"original text {i}" for i in range(4)]
SHARD = "data/00000.jsonl.gz"


def _write_originals(out) -> None:
    for i, text in enumerate(ORIGINAL):
        out.write(Record(id=f"u{i}", kind="text", text=text))


def published(tmp_path: Path) -> Artifact:
    """A committed artifact with four records and an adapter file, like train's."""
    store = ArtifactStore(tmp_path / "artifacts")
    with store.writer("up", "k" * 64, [], {}) as w:
        _write_originals(w)
        w.file("adapter/weights.bin").write_bytes(b"W" * 64)
        ref = w.commit()
    return store.open(ref)


def edit_record(shard: Path, same_size: bool) -> None:
    """Rewrites record u1's text in ``shard`` (a valid gzip shard again), to the same byte size
    or to a different one."""
    with open(shard, "rb") as fh:
        rows = list(load_jsonl_gz(fh))
    size = shard.stat().st_size
    text = next(r["text"] for r in rows if r["id"] == "u1")
    # One character changed (the gzip of that often keeps its size), or a longer text.
    one_off = [text[:i] + c + text[i + 1 :] for i in range(len(text)) for c in string.ascii_letters if c != text[i]]
    for candidate in one_off + ["edited, and much longer than before"]:
        edited = [dict(r, text=candidate) if r["id"] == "u1" else r for r in rows]
        with open(shard, "wb") as fh:  # as the writer does: gzip names the file in its header
            dump_jsonl_gz(edited, fh)
        if (shard.stat().st_size == size) == same_size:
            return
    pytest.fail("no edit of the wanted size")


def set_gzip_mtime(shard: Path) -> None:
    """Same size, same records, other bytes: the gzip header's mtime field (bytes 4-8)."""
    body = bytearray(shard.read_bytes())
    body[4:8] = (1_700_000_000).to_bytes(4, "little")
    shard.write_bytes(bytes(body))


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_an_edited_record_shard_fails_its_read_naming_the_file(tmp_path, same_size):
    art = published(tmp_path)
    shard = art.local_dir / SHARD
    edit_record(shard, same_size)
    assert (shard.stat().st_size == art.files[SHARD]["size"]) == same_size
    seen: list[str] = []
    with pytest.raises(CorruptArtifact, match=f"{SHARD} changed") as caught:
        for r in ArtifactStore(tmp_path / "artifacts").open(art.ref).records():
            seen.append(r.text)
    assert caught.value.files == [SHARD] and caught.value.stage == "up" and caught.value.key == art.ref.key
    assert "--force up" in str(caught.value), "the message says how to recompute it"
    if not same_size:
        assert seen == [], "a shard of the wrong size is refused before any record is handed out"


def test_same_size_header_change_and_damaged_gzip_are_both_corrupt_not_decoder_errors(tmp_path):
    art = published(tmp_path)
    shard = art.local_dir / SHARD
    original = shard.read_bytes()
    set_gzip_mtime(shard)
    with gzip.open(shard, "rt") as fh:
        assert len(fh.readlines()) == 4, "still a valid shard: only the hash can tell"
    with pytest.raises(CorruptArtifact, match="same size, different sha256"):
        list(ArtifactStore(tmp_path / "artifacts").open(art.ref).records())
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # inside the deflate stream: the decoder fails first
    shard.write_bytes(bytes(damaged))
    with pytest.raises(CorruptArtifact, match="no longer reads"):
        list(ArtifactStore(tmp_path / "artifacts").open(art.ref).records())


def test_a_deleted_shard_is_an_error_not_fewer_records(tmp_path):
    art = published(tmp_path)
    (art.local_dir / SHARD).unlink()
    with pytest.raises(CorruptArtifact, match=f"{SHARD} missing"):
        list(ArtifactStore(tmp_path / "artifacts").open(art.ref).records())


def test_stage_files_are_checked_before_the_folder_is_handed_out(tmp_path):
    art = published(tmp_path)
    weights = art.local_dir / "adapter" / "weights.bin"
    assert (art.verified_path("adapter") / "weights.bin").read_bytes() == b"W" * 64
    weights.write_bytes(b"X" * 64)  # same size
    fresh = ArtifactStore(tmp_path / "artifacts").open(art.ref)
    with pytest.raises(CorruptArtifact, match="adapter/weights.bin changed"):
        _ = fresh.path
    with pytest.raises(CorruptArtifact, match="adapter/weights.bin changed"):
        fresh.verified_path("adapter")
    with pytest.raises(CorruptArtifact, match="adapter/weights.bin changed"):
        with fresh.open_verified("adapter/weights.bin") as fh:
            fh.read()
    weights.unlink()
    with pytest.raises(CorruptArtifact, match="adapter/weights.bin missing"):
        _ = ArtifactStore(tmp_path / "artifacts").open(art.ref).path
    assert [str(p) for p in fresh.check_sizes()] == ["adapter/weights.bin missing"]


# --------------------------------------------------------------------------- execute


def test_execute_recomputes_an_artifact_with_a_deleted_file_and_names_it(tmp_path):
    cfg = fake_config(str(tmp_path / "artifacts"))
    calls: list[int] = []

    def work(inputs, cfg, out):
        calls.append(1)
        _write_originals(out)
        out.file("adapter/weights.bin").write_bytes(b"W" * 64)

    stage = fake_stage(work)
    first = execute(stage, cfg, [])
    store = ArtifactStore(cfg.run.artifact_root)
    old = store.open(first.ref)
    (old.local_dir / "adapter" / "weights.bin").unlink()
    logger = logging.getLogger("tuneline.test-verify")
    with capture(logger) as lines:
        again = execute(stage, cfg, [], hooks=StageHooks(logger=logger))
    assert calls == [1, 1] and not again.reused and again.ref == first.ref
    warnings = [line for line in lines if "does not match its manifest" in line]
    assert len(warnings) == 1 and "adapter/weights.bin missing" in warnings[0], lines
    new = store.open(first.ref)
    assert new.generation != old.generation, "the recomputed artifact is a new generation"
    assert (new.path / "adapter" / "weights.bin").read_bytes() == b"W" * 64
    assert execute(stage, cfg, []).reused and calls == [1, 1]


def test_execute_refuses_a_corrupt_input_before_the_stage_works(tmp_path):
    cfg = fake_pipeline_config(str(tmp_path / "artifacts"), "up", "down")
    up = fake_stage(lambda inputs, cfg, out: _write_originals(out), name="up")
    calls: list[int] = []
    down = fake_stage(calls=calls, name="down", inputs=("up",))
    ref = execute(up, cfg, []).ref
    art = ArtifactStore(cfg.run.artifact_root).open(ref)
    edit_record(art.local_dir / SHARD, same_size=False)
    with pytest.raises(CorruptArtifact, match=f"up/{ref.short}.*{SHARD} changed") as caught:
        execute(down, cfg, [ref])
    assert calls == [] and caught.value.generation == art.generation


# --------------------------------------------------------------------------- the runner


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """Stand-in stages ``up`` -> ``down`` in the registry. ``down`` reads up's records and its
    adapter file, as evaluate reads train's adapter; ``counts`` says what ran."""
    counts = {"up": 0, "down": 0}

    def up_run(inputs, cfg, out):
        counts["up"] += 1
        _write_originals(out)
        out.file("adapter/weights.bin").write_bytes(b"W" * 64)

    def down_run(inputs, cfg, out):
        counts["down"] += 1
        weights = (inputs[0].path / "adapter" / "weights.bin").read_bytes()
        out.report["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        out.write_all(inputs[0].records())

    stages = (fake_stage(up_run, name="up"), fake_stage(down_run, name="down", inputs=("up",)))
    monkeypatch.setattr(registry, "stages", lambda: stages)
    return counts, fake_pipeline_config(str(tmp_path / "artifacts"), "up", "down")


def up_artifact(cfg) -> Artifact:
    store = ArtifactStore(cfg.run.artifact_root)
    return store.open(store.ref("up", registry.get("up").key(cfg, [])))


def down_texts(cfg, ref) -> tuple[list[str], dict]:
    art = ArtifactStore(cfg.run.artifact_root).open(ref)
    return [r.text for r in art.records()], art.report


@pytest.fixture
def chain(stand_ins, monkeypatch):
    """The stand-ins run by ``StageRunner`` without Prefect (its task is a plain ``execute``),
    once already; ``run(**selection)`` runs them again."""
    counts, cfg = stand_ins
    monkeypatch.setattr(
        runner, "stage_task", lambda stage, run_cfg: lambda name, cfg, refs, force=False: execute(stage, cfg, refs, force)
    )

    def run(**selection):
        step = runner.StageRunner(cfg, **selection)
        with capture(logging.getLogger("tuneline")) as lines:
            down = step("down", step("up"))
        texts, report = down_texts(cfg, down)
        return texts, report, lines, step

    run()
    assert counts == {"up": 1, "down": 1}
    return counts, run, up_artifact(cfg)


def test_runner_recomputes_an_upstream_shard_edited_in_place(chain):
    """The bug: an edited record file inside a finished artifact reached the next stage under
    the old key. Now the read fails, the runner recomputes up, and down gets the original data."""
    counts, run, up_art = chain
    edit_record(up_art.local_dir / SHARD, same_size=True)  # passes the size check: only the hash sees it
    texts, report, lines, step = run(force=["down"])
    assert texts == ORIGINAL
    assert counts == {"up": 2, "down": 3}, "down ran, failed on the edit, and ran again after up"
    assert any(f"input up/{up_art.ref.short}" in line and f"{SHARD} changed" in line for line in lines), lines
    assert not step.outcomes["up"].reused and not step.outcomes["down"].reused


def test_runner_recomputes_an_upstream_stage_file_that_was_deleted(chain):
    """The bug: deleting train's adapter gave HFValidationError in evaluate. Now the missing
    file is named, train (here: up) is recomputed, and evaluate (down) reads the real file."""
    counts, run, up_art = chain
    (up_art.local_dir / "adapter" / "weights.bin").unlink()
    texts, report, lines, _ = run(force=["down"])
    assert texts == ORIGINAL and report["weights_sha256"] == hashlib.sha256(b"W" * 64).hexdigest()
    assert counts == {"up": 2, "down": 2}, "the size check at down's start caught it before down worked"
    assert any("adapter/weights.bin missing" in line for line in lines), lines


def test_runner_recomputes_an_edited_stage_file_of_the_same_size(chain):
    counts, run, up_art = chain
    (up_art.local_dir / "adapter" / "weights.bin").write_bytes(b"X" * 64)
    texts, report, lines, _ = run(force=["down"])
    assert report["weights_sha256"] == hashlib.sha256(b"W" * 64).hexdigest()
    assert counts == {"up": 2, "down": 3}
    assert any("adapter/weights.bin changed" in line for line in lines), lines


def test_runner_recomputes_a_looked_up_stage_whose_file_is_gone(chain):
    """``--only down``: up is outside the selection, so it is looked up; a missing file there
    still makes it run rather than hand down a broken artifact."""
    counts, run, up_art = chain
    (up_art.local_dir / SHARD).unlink()
    texts, _, lines, _ = run(only="down", force=["down"])
    assert texts == ORIGINAL and counts == {"up": 2, "down": 2}
    assert any(f"{SHARD} missing" in line for line in lines), lines


def test_runner_repairs_an_input_inside_a_prefect_flow(prefect_api, stand_ins):
    """The same repair through the real Prefect task wrapper: the stage task fails with
    ``CorruptArtifact`` (not retried), the flow's runner recomputes up and runs down again."""
    from prefect import flow

    counts, cfg = stand_ins

    @flow
    def up_then_down(force: list[str]):
        step = runner.StageRunner(cfg, force=force)
        return step("down", step("up"))

    up_then_down([])
    edit_record(up_artifact(cfg).local_dir / SHARD, same_size=True)
    texts, _ = down_texts(cfg, up_then_down(["down"]))
    assert texts == ORIGINAL and counts == {"up": 2, "down": 3}


# --------------------------------------------------------------------------- tuneline verify


def test_verify_command_exits_1_naming_a_changed_file(tmp_path, monkeypatch, repo_root):
    from tuneline.cli import app
    from tuneline.config import DEMO_CONFIG, load_config
    from tuneline.pipeline import plan_keys

    monkeypatch.chdir(repo_root)  # the demo's sources are relative to the repo
    overrides = [f"run.artifact_root={tmp_path / 'artifacts'}"]
    refs = plan_keys(load_config(DEMO_CONFIG, overrides))
    stage, ref = next(iter(refs.items()))
    store = ArtifactStore(tmp_path / "artifacts")
    with store.writer(stage, ref.key, [], {}) as w:
        _write_originals(w)
        w.file("notes/info.txt").write_text("hello")
        w.commit()
    cli = CliRunner()
    ok = cli.invoke(app, ["verify", "-s", overrides[0]])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output and "not stored" in ok.output

    info = store.open(ref).local_dir / "notes" / "info.txt"
    info.write_text("hellO")  # same size: only the hash tells
    bad = cli.invoke(app, ["verify", "-s", overrides[0]])
    assert bad.exit_code == 1, bad.output
    assert f"{stage} {ref.short}" in bad.output and "notes/info.txt changed" in bad.output
    assert f"--force {stage}" in " ".join(bad.output.split())
    info.unlink()
    gone = cli.invoke(app, ["verify", "-s", overrides[0]])
    assert gone.exit_code == 1 and "notes/info.txt missing" in gone.output
