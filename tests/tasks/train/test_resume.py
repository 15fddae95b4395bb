"""A train run killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks import train
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore

REPO = Path(__file__).resolve().parents[3]
KEY = "k" * 64
SETTINGS = {"max_steps": 12, "checkpoint_steps": 4, "logging_steps": 1}

# The training process of a real run, killed by SIGKILL right after it saved the checkpoint of
# step 8 (``on_save`` fires once the checkpoint is complete): nothing in the process gets to
# clean up, as with the OOM killer or a lost node.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    from tasks import train
    from tests.support.catalogue import tiny_config
    from tuneline.artifacts import ArtifactStore

    root, key, settings = sys.argv[1], sys.argv[2], eval(sys.argv[3])

    class KillAfterStep8(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 8:
                os.kill(os.getpid(), signal.SIGKILL)

    logger = train.step_logger
    train.step_logger = lambda: [logger(), KillAfterStep8()][1]
    store = ArtifactStore(root)
    fmt = store.open(store.ref("format", "f" * 64))
    cfg = tiny_config(root, train=settings)
    with store.writer("train", key, [fmt.ref], {}) as out:
        train.run([fmt], cfg, out)
        out.commit()
    """
)


def train_once(store: ArtifactStore, fmt, cfg):
    with store.writer("train", KEY, [fmt.ref], {}) as out:
        train.run([fmt], cfg, out)
        ref = out.commit()
    return store.open(ref)


def adapter_of(art) -> dict[str, torch.Tensor]:
    return load_file(art.path / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    # The uninterrupted run, in a store of its own.
    clean_root = str(tmp_path / "clean")
    clean_store = ArtifactStore(clean_root)
    clean = train_once(clean_store, write_format_artifact(clean_store, tiny_config(clean_root)), tiny_config(clean_root, train=SETTINGS))

    root = str(tmp_path / "killed")
    store = ArtifactStore(root)
    fmt = write_format_artifact(store, tiny_config(root))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, root, KEY, repr(SETTINGS)],
        cwd=REPO,
        env={**os.environ, "TUNELINE_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoints = train.checkpoint_dir_for(store, KEY)
    assert train.last_checkpoint(checkpoints).name == "checkpoint-8"
    assert store.list("train") == []  # the killed run published nothing

    resumed = train_once(store, fmt, tiny_config(root, train=SETTINGS))
    m = resumed.report
    assert m["resumed_from_step"] == 8
    assert m["steps"] == clean.report["steps"] == 12  # the same number of optimizer steps
    a, b = adapter_of(resumed), adapter_of(clean)
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert not checkpoints.exists()  # gone once the artifact they led to is committed
    # The loss history continues where the killed run stopped: steps 9-12 were logged here.
    assert m["last_loss"] == pytest.approx(clean.report["last_loss"], abs=1e-4)


def test_an_incomplete_checkpoint_is_not_resumed(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    (tmp_path / "checkpoint-8").mkdir()  # killed while saving: no trainer_state.json yet
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_st')  # cut short
    assert train.last_checkpoint(tmp_path).name == "checkpoint-4"
    assert train.last_checkpoint(tmp_path / "none") is None


def test_checkpoints_are_off_with_zero_steps():
    cfg = tiny_config("/tmp/unused", train={"checkpoint_steps": 0})
    assert train.training_args(cfg, "/tmp/x")["save_strategy"] == "no"
    cfg = tiny_config("/tmp/unused", train={"checkpoint_steps": 7})
    args = train.training_args(cfg, "/tmp/x")
    assert (args["save_strategy"], args["save_steps"]) == ("steps", 7)
