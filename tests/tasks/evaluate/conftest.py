"""The evaluate tests' shared setup: the catalogue trained on once per session."""

from __future__ import annotations

import pytest

from tasks import train
from tests.support.catalogue import tiny_config, write_format_artifact
from tests.tasks.evaluate.support import run_stage
from tuneline.artifacts import ArtifactStore


@pytest.fixture(scope="session")
def trained_setup(tmp_path_factory):
    """(store, cfg, format artifact, train artifact): the catalogue trained on once."""
    root = str(tmp_path_factory.mktemp("evaluate") / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root)
    fmt = write_format_artifact(store, cfg)
    return store, cfg, fmt, run_stage(store, train, [fmt], cfg, "t" * 64)
