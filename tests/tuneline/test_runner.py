"""StageRunner's selection: what it runs, looks up, or leaves alone."""

from __future__ import annotations

import pytest

from tests.support.stages import fake_pipeline_config, fake_stage
from tuneline import registry, runner
from tuneline.errors import MissingArtifact
from tuneline.stage import execute


@pytest.fixture
def side_branch(monkeypatch, tmp_path):
    """a -> b, and a -> aside (a report-only branch, ordered before b), run without Prefect."""
    ran: list[str] = []

    def mk(name, inputs=()):
        def run(ins, cfg, out):
            ran.append(name)
            out.write_all(ins[0].records() if ins else [])

        return fake_stage(run, name=name, inputs=inputs)

    stages = (mk("a"), mk("aside", ("a",)), mk("b", ("a",)))
    monkeypatch.setattr(registry, "stages", lambda: stages)
    monkeypatch.setattr(
        runner, "stage_task", lambda stage, run_cfg: lambda name, cfg, refs, force=False: execute(stage, cfg, refs, force)
    )
    cfg = fake_pipeline_config(str(tmp_path / "artifacts"), "a", "aside", "b")

    def run(**selection):
        step = runner.StageRunner(cfg, **selection)
        a = step("a")
        step("aside", a)
        step("b", a)
        return step

    return ran, run


def test_a_missing_stage_that_nothing_selected_reads_is_skipped_not_an_error(side_branch):
    """A store made before a new stage existed: `--only b` needs a, not the new side stage."""
    ran, run = side_branch
    run(to_stage="a")
    step = run(only="b")
    assert ran == ["a", "b"]
    assert "aside" not in step.outcomes and step.outcomes["a"].reused


def test_a_missing_stage_that_the_selection_reads_is_still_an_error(side_branch):
    ran, run = side_branch
    with pytest.raises(MissingArtifact, match="stage 'a' has no artifact"):
        run(only="b")
    assert ran == []
