"""The evaluate stage with its lm-evaluation-harness task and LLM judge configured: both run
on base and tuned, land in the report, the summary and the headline numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.evaluate as evaluate
from tests.support import openai_server
from tests.support.openai_server import serve
from tests.support.teachers import KEY, KEY_ENV
from tests.tasks.evaluate.support import run_stage

pytest.importorskip("lm_eval")
TASK_DIR = Path(__file__).resolve().parents[2] / "support" / "lm_eval_tasks"


def section(prompt: str, title: str) -> str:
    return prompt.split(f"# {title}\n", 1)[1].split("\n\n#", 1)[0].split("\n\nReply", 1)[0].strip()


def judge_by_overlap(prompt: str) -> str:
    """A judge with a rule: the answer sharing more words with the reference is better, and
    rubric scores follow the same overlap."""
    if "# Answer A" in prompt:
        ref = set(section(prompt, "Reference answer").lower().split())
        a = len(ref & set(section(prompt, "Answer A").lower().split()))
        b = len(ref & set(section(prompt, "Answer B").lower().split()))
        return json.dumps({"winner": "tie" if a == b else ("A" if a > b else "B")})
    ref = set(section(prompt, "Reference answer").lower().split())
    shared = len(ref & set(section(prompt, "Answer to rate").lower().split()))
    score = max(1, min(5, 1 + shared))
    return json.dumps({"relevance": score, "accuracy": score, "format": 3})


def test_harness_and_judge_run_on_base_and_tuned(trained_setup, monkeypatch):
    store, cfg, fmt, trained = trained_setup
    monkeypatch.setattr(openai_server, "answer", judge_by_overlap)
    monkeypatch.setenv(KEY_ENV, KEY)
    with serve(token=KEY) as server:
        ev = cfg.evaluate.model_copy(
            update={
                "max_generate": 8,
                "harness": evaluate.HarnessConfig(tasks=["tuneline_catalogue_made_in"], task_dirs=[TASK_DIR], batch_size=16),
                "judge": evaluate.JudgeConfig(
                    teacher={"kind": "openai", "model": "judge", "base_url": server.url,
                             "api_key_env": KEY_ENV, "temperature": 0},
                    max_examples=8,
                ),  # fmt: skip
            }
        )
        art = run_stage(store, evaluate, [fmt, trained], cfg.model_copy(update={"evaluate": ev}), "j" * 64)
    r = art.report
    for side in ("base", "tuned"):
        task = r["harness"][side]["tuneline_catalogue_made_in"]
        assert task["n_samples"] == 10 and 0 <= task["acc"] <= 1
    j = r["judge"]
    assert j["tuned"]["n"] == j["base"]["n"] == 8 and j["tuned"]["unparseable"] == 0
    # The tuned model learned the catalogue's phrasing: the overlap judge prefers it.
    assert j["pairwise"]["win_rate"] > j["pairwise"]["loss_rate"]
    assert j["tuned"]["overall"] > j["base"]["overall"]
    md = (art.path / "report.md").read_text()
    assert "### lm-evaluation-harness" in md and "### LLM judge (judge)" in md and "Pairwise" in md
    head = evaluate.STAGE.headline(r)
    assert head["judge_win_rate"] == j["pairwise"]["win_rate"]
    assert head["eval_loss_tuned"] < head["eval_loss_base"]
    assert KEY not in json.dumps(r)  # the judge's key never reaches the report


def test_editing_a_task_file_changes_the_evaluate_key(tmp_path):
    """The task YAMLs and their data are read from outside the store: their bytes key the
    artifact, so an edited task re-runs evaluate."""
    import shutil

    from tuneline.config import PipelineConfig
    from tuneline.pipeline import plan_keys

    tasks = tmp_path / "tasks"
    shutil.copytree(TASK_DIR, tasks)
    cfg = PipelineConfig.model_validate(
        {"evaluate": {"harness": {"tasks": ["tuneline_catalogue_made_in"], "task_dirs": [str(tasks)]}}}
    )
    before = plan_keys(cfg)["evaluate"].key
    assert plan_keys(cfg)["evaluate"].key == before
    data = next(tasks.glob("*.jsonl"))
    data.write_text(data.read_text() + "\n")
    assert plan_keys(cfg)["evaluate"].key != before
