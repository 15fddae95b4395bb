"""What a config asks of this machine is checked before the first stage runs (issue 16: a
missing judge or teacher key, an lm-eval task that does not exist, a missing task folder and
FSDP without GPUs failed only after 3 to 8 stages, and the judge's key message named
`teacher.api_key_env` rather than `evaluate.judge.teacher.api_key_env`).

Each case goes through the real CLI entry: exit 2, one message naming the full config path,
no artifact written, and no Prefect started. Only the stages the run computes are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.evaluate.judge import JudgeConfig, judge
from tuneline import preflight, registry
from tuneline.artifacts import ArtifactStore
from tuneline.config import load_config
from tuneline.errors import ConfigError, MissingSecret
from tuneline.pipeline import Selection, plan_keys
from tuneline.runner import StageRunner
from tuneline.stage import key_config

REPO = Path(__file__).resolve().parents[2]
TASK_DIR = REPO / "tests" / "support" / "lm_eval_tasks"
UNSET = "TUNELINE_TEST_KEY_NOBODY_SET"  # an API key variable that is never set
ENDPOINT = "http://127.0.0.1:9/v1"  # never called: the run must stop before any stage


def tuneline(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != UNSET}
    env.update(TUNELINE_PROGRESS="0", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "tuneline.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def teacher(model: str) -> str:
    return f"{{kind: openai, model: {model}, base_url: '{ENDPOINT}', api_key_env: {UNSET}}}"


CASES = {
    "teacher-key": (
        ["-s", f"augment.teacher={teacher('t')}"],
        ["augment.teacher.api_key_env", UNSET, "export"],
    ),
    "judge-key": (
        ["-s", f"evaluate.judge={{teacher: {teacher('j')}}}"],
        ["evaluate.judge.teacher.api_key_env", UNSET, "export"],
    ),
    "unknown-lm-eval-task": (
        ["-s", f"evaluate.harness={{tasks: [no_such_task], task_dirs: ['{TASK_DIR}']}}"],
        ["evaluate.harness.tasks", "'no_such_task'", "tuneline_catalogue_made_in"],
    ),
    "missing-task-dirs": (
        [
            "-s",
            "evaluate.harness={tasks: [tuneline_catalogue_made_in], task_dirs: [/nonexistent/lm_eval_tasks]}",
        ],
        ["evaluate.harness.task_dirs", "/nonexistent/lm_eval_tasks", "is not a folder"],
    ),
    "fsdp-without-gpus": (
        ["-s", "train.distributed.strategy=fsdp", "-s", "train.distributed.num_processes=2"],
        ["train.distributed.strategy", "fsdp", "CUDA", "ddp"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_config_this_machine_cannot_run_is_refused_before_the_first_stage(tmp_path, case):
    if case == "fsdp-without-gpus":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: FSDP can run here")
    overrides, words = CASES[case]
    root = tmp_path / "artifacts"
    t0 = time.time()
    res = tuneline("run", "-s", f"run.artifact_root={root}", *overrides)
    seconds = time.time() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    for w in words:
        assert w in out, out
    assert "Traceback" not in out and "flow run" not in out.lower(), "refused after Prefect started"
    assert not root.exists(), f"a stage ran before the refusal: {sorted(root.rglob('*'))[:5]}"
    assert seconds < 60, f"refused after {seconds:.0f} s"  # the stages before it take minutes


def test_the_judge_names_its_full_path_when_it_runs_too(monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    settings = JudgeConfig(
        teacher={"kind": "openai", "model": "j", "base_url": ENDPOINT, "api_key_env": UNSET}
    )
    with pytest.raises(MissingSecret, match=r"evaluate\.judge\.teacher\.api_key_env names"):
        judge(settings, [{"prompt": "p", "reference": "r", "tuned": "a", "base": "b"}])


# ------------------------------------------------------------- only what the run computes


@pytest.fixture
def judged_config(tmp_path, monkeypatch):
    """A config with a judge whose key is unset, and an ingest source of its own (the keys of
    the stages before evaluate hash it)."""
    monkeypatch.delenv(UNSET, raising=False)
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"text": "one short document"}) + "\n")
    return load_config(
        None,
        [
            f"run.artifact_root={tmp_path / 'artifacts'}",
            f"ingest.sources=[{{path: '{src}'}}]",
            f"evaluate.judge={{teacher: {teacher('j')}}}",
        ],
    )


def test_a_selection_that_stops_before_the_judge_does_not_need_its_key(judged_config):
    assert preflight.problems(judged_config, Selection(to_stage="format")) == []
    assert preflight.problems(judged_config, Selection(only="train")) == []
    assert preflight.problems(judged_config, Selection(from_stage="export")) == []
    (problem,) = preflight.problems(judged_config, Selection(only="evaluate"))
    assert problem.startswith(
        f"evaluate.judge.teacher.api_key_env names the environment variable '{UNSET}'"
    )


def test_a_stored_evaluate_needs_no_key_unless_it_is_forced(judged_config):
    """A re-run that reuses every artifact (to print the summary, say) needs no judge key."""
    store = ArtifactStore(judged_config.run.artifact_root)
    key = plan_keys(judged_config)["evaluate"].key
    stage = registry.get("evaluate")
    with store.writer("evaluate", key, [], key_config(stage.slice(judged_config))) as out:
        out.commit()
    assert preflight.problems(judged_config, Selection()) == []
    assert len(preflight.problems(judged_config, Selection(force=["evaluate"]))) == 1


def test_each_stage_that_will_run_names_its_problem_in_one_refusal(judged_config):
    augment = {"kind": "openai", "model": "t", "base_url": ENDPOINT, "api_key_env": UNSET}
    cfg = type(judged_config).model_validate(
        {**judged_config.model_dump(), "augment": {"teacher": augment}}
    )
    found = preflight.problems(cfg, Selection())
    assert [f.split(" ", 1)[0] for f in found] == [
        "augment.teacher.api_key_env",
        "evaluate.judge.teacher.api_key_env",
    ]
    with pytest.raises(ConfigError) as e:
        preflight.check(cfg, Selection())
    assert str(e.value).splitlines() == found


def test_a_flow_started_elsewhere_checks_before_its_first_stage_too(judged_config):
    """The UI or a deployment calls the flow without the CLI: its runner refuses the config
    before it writes anything."""
    with pytest.raises(ConfigError, match=r"evaluate\.judge\.teacher\.api_key_env"):
        StageRunner(judged_config)
    assert not Path(judged_config.run.artifact_root).exists()
