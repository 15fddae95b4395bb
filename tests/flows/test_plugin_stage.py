"""A new stage is one module plus one config model: an `export` stub built in a temporary
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
"""export (stub): lists the adapter files of the train artifact it was given."""

import json

from pydantic import Field

from tuneline.sections import Section
from tuneline.stage import Stage


class ExportConfig(Section):
    formats: list[str] = Field(default_factory=lambda: ["adapter"], description="What to export.")


def run(inputs, cfg, out):
    files = sorted(p.name for p in (inputs[0].path / "adapter").iterdir())
    out.file("exports.json").write_text(json.dumps({"formats": cfg.export.formats, "files": files}))
    out.report.update(exported=len(files), formats=cfg.export.formats)


def summary(report):
    """Files exported."""
    return f"exported {report['exported']} files as {', '.join(report['formats'])}"


STAGE = Stage(
    name="export",
    version=1,
    config=ExportConfig,
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
    (pkg / "export_stub.py").write_text(textwrap.dedent(STUB))
    return {
        **os.environ,
        "PYTHONPATH": f"{pkg.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TUNELINE_STAGES": "my_stages.export_stub",
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
    assert rows[-2:] == ["evaluate", "export"]
    res = tuneline(plugin_env, "config", "-s", "export.formats=[adapter,gguf]")
    assert res.returncode == 0, res.stderr
    assert "export:\n  formats:\n  - adapter\n  - gguf" in res.stdout


@pytest.mark.slow
def test_plugin_stage_runs_in_the_flow_after_evaluate(plugin_env, tmp_path):
    root = tmp_path / "artifacts"
    res = tuneline(plugin_env, "run", "-s", f"run.artifact_root={root}", *(a for s in SMALL for a in ("-s", s)))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    table = [line for line in res.stdout.splitlines() if line.startswith("│")]
    assert [line.split()[1] for line in table][-3:] == ["train", "evaluate", "export"]
    assert "exported" in table[-1] and "adapter files" in out
    (key,) = [p.name for p in (root / "export").iterdir() if not p.name.startswith(".")]
    lineage = json.loads(max((root / "runs").glob("*.json")).read_text())
    assert list(lineage["stages"])[-1] == "export"
    ref = ArtifactRef(**lineage["stages"]["export"]["ref"])
    assert ref.key == key
    art = ArtifactStore(root).open(ref)
    assert art.manifest["inputs"][0]["stage"] == "train"
    assert json.loads((art.path / "exports.json").read_text())["files"]
