"""TUNELINE_FAIL: a stage fails its first n attempts before doing work, then runs normally."""

from __future__ import annotations

import pytest

from tests.support.stages import fake_config
from tests.support.stages import fake_stage as _fake_stage
from tuneline.artifacts import ArtifactStore
from tuneline.stage import InjectedFailure
from tuneline.stage import execute as run_stage


def fake_stage(calls: list[int]):
    return _fake_stage(calls=calls)


def test_fails_n_attempts_before_work_then_runs(tmp_path, monkeypatch):
    cfg = fake_config(str(tmp_path / "artifacts"))
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
    cfg = fake_config(str(tmp_path / "artifacts"))
    calls: list[int] = []
    monkeypatch.setenv("TUNELINE_FAIL", "train")
    assert not run_stage(fake_stage(calls), cfg, []).reused
    assert calls == [1]
