"""TUNELINE_FAIL: a stage fails its first n attempts before doing work, then runs normally."""

from __future__ import annotations

import types

import pytest

from tuneline.artifacts import ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.records import Record
from tuneline.stage import InjectedFailure, run_stage


def fake_stage(calls: list[int]) -> types.ModuleType:
    mod = types.ModuleType("fake")
    mod.STAGE, mod.VERSION, mod.SECTIONS, mod.INPUTS = "fake", 1, ("run",), ()

    def run(inputs, cfg, out):
        calls.append(1)
        out.write(Record(id="r1", kind="text", text="hello"))

    mod.run = run
    return mod


def test_fails_n_attempts_before_work_then_runs(tmp_path, monkeypatch):
    cfg = PipelineConfig()
    cfg.run.artifact_root = str(tmp_path / "artifacts")
    calls: list[int] = []
    mod = fake_stage(calls)
    monkeypatch.setenv("TUNELINE_FAIL", "evaluate, fake:2")
    for attempt in (1, 2):
        with pytest.raises(InjectedFailure, match=f"{attempt}/2 of stage 'fake'"):
            run_stage(mod, cfg, [])
    assert calls == [], "an injected failure must come before the stage's work"
    assert ArtifactStore(cfg.run.artifact_root).list("fake") == []
    out = run_stage(mod, cfg, [])
    assert calls == [1] and not out.reused
    assert (tmp_path / "artifacts" / "faults" / "fake").read_text() == "2"


def test_unset_or_other_stage_never_fails(tmp_path, monkeypatch):
    cfg = PipelineConfig()
    cfg.run.artifact_root = str(tmp_path / "artifacts")
    calls: list[int] = []
    monkeypatch.setenv("TUNELINE_FAIL", "train")
    assert not run_stage(fake_stage(calls), cfg, []).reused
    assert calls == [1]
