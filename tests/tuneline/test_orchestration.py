"""The generic stage task: retries only what a retry can fix, named after its stage."""

from __future__ import annotations

import errno

import pytest
from prefect import flow

from tests.support.stages import fake_config, fake_stage
from tuneline import registry
from tuneline.errors import InputError, MissingSecret, TransientError, is_transient
from tuneline.orchestration import stage_task


@pytest.fixture
def flaky(monkeypatch, tmp_path):
    """A registered stand-in stage whose run raises the queued errors, one per attempt."""
    attempts: list[int] = []
    errors: list[BaseException] = []

    def run(inputs, cfg, out):
        attempts.append(1)
        if errors:
            raise errors.pop(0)
        out.write_all([])

    stage = fake_stage(run, name="flaky")
    monkeypatch.setattr(registry, "stages", lambda: (stage,))
    cfg = fake_config(str(tmp_path / "artifacts"), name="flaky", retries=2, retry_delay_seconds=0)
    return stage, cfg, attempts, errors


def _run_in_flow(stage, cfg):
    @flow
    def one_stage():
        return stage_task(stage, cfg.run)(stage.name, cfg, [])

    return one_stage()


@pytest.mark.parametrize(
    "error",
    [
        InputError("data/x.jsonl line 3 is not JSON; fix the file"),
        MissingSecret("OPENAI_API_KEY is not set"),
        ValueError("a bug: retrying runs the same code on the same input"),
    ],
)
def test_errors_a_retry_cannot_fix_fail_at_the_first_attempt(prefect_api, flaky, error):
    stage, cfg, attempts, errors = flaky
    errors.append(error)
    with pytest.raises(type(error), match=str(error).split(";")[0]):
        _run_in_flow(stage, cfg)
    assert len(attempts) == 1


def test_transient_errors_are_retried_until_they_pass(prefect_api, flaky):
    stage, cfg, attempts, errors = flaky
    errors += [TransientError("teacher 503"), OSError(errno.ENOSPC, "No space left on device")]
    outcome = _run_in_flow(stage, cfg)
    assert len(attempts) == 3 and not outcome.reused


def test_retries_come_from_the_run_section_only(prefect_api, flaky):
    stage, cfg, attempts, errors = flaky
    cfg.run.retries = 0
    errors.append(TransientError("flaky disk"))
    with pytest.raises(TransientError):
        _run_in_flow(stage, cfg)
    assert len(attempts) == 1


@pytest.mark.parametrize(
    "exc, transient",
    [
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (OSError(errno.ENOSPC, "full"), True),
        (OSError(errno.ENOENT, "missing"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (type("APIStatusError", (Exception,), {"status_code": 503})(), True),
        (type("APIStatusError", (Exception,), {"status_code": 401})(), False),
        (type("RateLimitError", (Exception,), {})(), True),
        (KeyError("x"), False),
        (InputError("bad row"), False),
    ],
)
def test_what_counts_as_transient(exc, transient):
    assert is_transient(exc) is transient


def test_an_error_raised_from_a_transient_one_is_transient():
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as e:
            raise RuntimeError("teacher call failed") from e
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
