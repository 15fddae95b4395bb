"""A new stage is one module plus one config model: an `archive` stub built in a temporary
package (nothing in the repo touched) shows in `tuneline stages`, gets its config section,
runs in the flow after evaluate on train's artifact, and has its row in the CLI's table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneline.artifacts import ArtifactRef, ArtifactStore

REPO = Path(__file__).resolve().parents[2]

STUB = '''
"""archive (stub): lists the adapter files of the train artifact it was given."""

import json

from pydantic import Field

from tuneline.sections import Section
from tuneline.stage import Stage


class ArchiveConfig(Section):
    formats: list[str] = Field(default_factory=lambda: ["adapter"], description="What to export.")


def run(inputs, cfg, out):
    files = sorted(p.name for p in (inputs[0].path / "adapter").iterdir())
    out.file("exports.json").write_text(json.dumps({"formats": cfg.archive.formats, "files": files}))
    out.report.update(exported=len(files), formats=cfg.archive.formats)


def summary(report):
    """Files exported."""
    return f"exported {report['exported']} files as {', '.join(report['formats'])}"


STAGE = Stage(
    name="archive",
    version=1,
    config=ArchiveConfig,
    run=run,
    summary=summary,
    inputs=("train",),
    after=("evaluate",),
    records=False,
    highlights=lambda r: f"exported {r['exported']} adapter files",
)
'''

SMALL = [
    "model.tiny.vocab_size=512", "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
    "model.tiny.num_hidden_layers=1", "model.tiny.num_attention_heads=2", "format.max_length=128",
    "train.max_length=128", "train.max_steps=4", "evaluate.max_examples=16", "evaluate.num_samples=1",
    "evaluate.max_new_tokens=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    pkg = tmp_path_factory.mktemp("plugin") / "my_stages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "archive_stub.py").write_text(textwrap.dedent(STUB))
    return {
        **os.environ,
        "PYTHONPATH": f"{pkg.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TUNELINE_STAGES": "my_stages.archive_stub",
        "TUNELINE_PROGRESS": "0",
        "COLUMNS": "220",
    }


def tuneline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneline.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_plugin_stage_is_listed_and_configurable(plugin_env):
    res = tuneline(plugin_env, "stages")
    assert res.returncode == 0, res.stderr
    rows = [line.split()[3] for line in res.stdout.splitlines() if "tasks." in line or "my_stages" in line]
    assert rows[-4:] == ["evaluate", "archive", "export", "card"]  # after= evaluate
    res = tuneline(plugin_env, "config", "-s", "archive.formats=[adapter,gguf]")
    assert res.returncode == 0, res.stderr
    assert "archive:\n  formats:\n  - adapter\n  - gguf" in res.stdout


@pytest.mark.slow
def test_plugin_stage_runs_in_the_flow_after_evaluate(plugin_env, tmp_path):
    root = tmp_path / "artifacts"
    res = tuneline(plugin_env, "run", "-s", f"run.artifact_root={root}", *(a for s in SMALL for a in ("-s", s)))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    table = [line for line in res.stdout.splitlines() if line.startswith("│")]
    names = [line.split()[1] for line in table]
    assert names[-4:] == ["evaluate", "archive", "export", "card"]
    assert "exported" in table[names.index("archive")] and "adapter files" in out
    (key,) = [p.name for p in (root / "archive").iterdir() if not p.name.startswith(".")]
    lineage = json.loads(max((root / "runs").glob("*.json")).read_text())
    assert "archive" in lineage["stages"]
    ref = ArtifactRef(**lineage["stages"]["archive"]["ref"])
    assert ref.key == key
    art = ArtifactStore(root).open(ref)
    assert art.manifest["inputs"][0]["stage"] == "train"
    assert json.loads((art.path / "exports.json").read_text())["files"]
