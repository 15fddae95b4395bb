"""The CLI as a user meets it: bad configs and selections are refused before Prefect starts,
and a user error prints one message, no traceback, and is not retried."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tuneline(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneline.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TUNELINE_PROGRESS": "0", "COLUMNS": "200", **(env or {})},
    )


def _refused(res: subprocess.CompletedProcess, *words: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    for w in words:
        assert w in out, out
    assert "Traceback" not in out and "flow run" not in out.lower(), "refused after Prefect started"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.yaml", ["does not exist"]),
        (lambda d: d, ["is a directory"]),
        (lambda d: (d / "bin.yaml").write_bytes(bytes(range(256))) and d / "bin.yaml", ["is not text"]),
        (lambda d: (d / "bad.yaml").write_text("run: [unclosed\n") and d / "bad.yaml", ["not valid YAML"]),
        (lambda d: (d / "list.yaml").write_text("- a\n- b\n") and d / "list.yaml", ["must hold a mapping"]),
        (lambda d: (d / "typo.yaml").write_text("trian: {epochs: 1}\n") and d / "typo.yaml", ["trian", "unknown field"]),
    ],
    ids=["missing", "directory", "binary", "not-yaml", "not-a-mapping", "unknown-section"],
)
def test_a_bad_config_file_is_refused_with_exit_2(tmp_path, make, words):
    _refused(tuneline("run", str(make(tmp_path))), *words)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--from", "train", "--to", "ingest"], ["--to ingest comes before --from train"]),
        (["--only", "dedup", "--to", "train"], ["either --only"]),
        (["--only", "training"], ["'training' is not a stage", "ingest, pii"]),
        (["--force", "nope"], ["'nope' is not a stage"]),
    ],
)
def test_a_bad_selection_is_refused_before_prefect_starts(args, words):
    t0 = time.time()
    res = tuneline("run", *args)
    _refused(res, *words)
    assert "prefect" not in res.stderr.lower()
    assert time.time() - t0 < 30


def test_stages_lists_the_registry():
    res = tuneline("stages")
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if "tasks." in line]
    assert [r.split()[3] for r in rows] == [
        "ingest", "pii", "dedup", "augment", "format", "quality", "train", "evaluate", "export", "card",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_user_error_in_a_stage_prints_one_message_and_is_not_retried(tmp_path):
    missing = tmp_path / "nope.jsonl"
    res = tuneline(
        "run",
        "-s", f"run.artifact_root={tmp_path / 'artifacts'}",
        "-s", f"ingest.sources=[{{path: {missing}}}]",
        "-s", "run.retries=3",
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out
    assert "Retry" not in out, "a missing source cannot pass on a retry"
    assert out.count(f"{missing}' does not exist") == 1, out
    assert "ingest.sources[0].path" in out
