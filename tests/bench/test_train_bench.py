"""bench/train_bench.py --tiny: every variant measured on CPU, the stage's packing padding-free."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "train_bench.py"
BASELINE = REPO.parent / "shared" / "bench" / "trl_baseline.py"

needs_baseline = pytest.mark.skipif(
    not BASELINE.exists(), reason=f"no {BASELINE} (the plain-TRL reference lives beside the checkout)"
)


def load_bench():
    spec = importlib.util.spec_from_file_location("train_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_rows_tokenize_back_to_the_baseline_ids():
    """The stage's trainer sees exactly the baseline's token ids (plus the eos it adds)."""
    bench = load_bench()
    tok = bench.word_tokenizer(512)
    ids = [5, 17, 400, 3, 511, 42, 7]
    (row,) = bench.sft_rows([ids])
    from tuneline.splits import sft_example

    ex = sft_example(row, tok.eos_token)
    assert tok(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"] == ids + [1]
    assert tok(ex["prompt"], add_special_tokens=False)["input_ids"] == ids[:1]
    (pref,) = bench.preference_rows([ids])
    assert pref.kind == "preference" and pref.rejected_completion


def test_only_filter_and_extras():
    bench = load_bench()
    default = bench.selected(None, extras=False)
    assert "1b/tuneline" in default and "1b/tuneline_flex" not in default
    assert bench.selected("8b/*", extras=False) == ["8b/trl_best", "8b/tuneline"]
    assert "1b/tuneline_flex" in bench.selected(None, extras=True)


@needs_baseline
def test_tiny_run_prints_every_variant(tmp_path):
    env = {**os.environ, "TUNELINE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--baseline", str(BASELINE), "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    bench = load_bench()
    names = bench.selected(None, extras=False)
    rows = {r["variant"]: r for r in json.loads((tmp_path / "train_bench.json").read_text())}
    assert set(rows) == set(names)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant |")
    for name in names:
        assert any(line.startswith(f"| {name} |") for line in table), name
        r = rows[name]
        if name == "1b/dpo_tuneline" and "skipped" in r:
            continue  # tasks/train/dpo.py not there yet
        assert "error" not in r, r
        assert r["real_tokens_per_s"] > 0 and r["steps"] >= 3, r
    assert rows["1b/tuneline"]["pad_fraction"] <= 0.01  # bfd: padding-free
    assert rows["8b/tuneline"]["pad_fraction"] <= 0.01
    assert rows["1b/trl_tutorial"]["pad_fraction"] > 0.05  # padded batches
    assert "1B tuneline vs tutorial" in out and "8B tuneline vs best plain TRL" in out
