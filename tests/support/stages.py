"""Running a stage's plain ``run`` in tests: an input artifact in, the committed artifact out;
and stand-in stages for testing the contract itself."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from pydantic import Field

from tuneline import executors
from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.records import Record
from tuneline.sections import RunConfig, Section
from tuneline.stage import Stage, key_config


def input_artifact(root: str, stage: str, records: list[Record], key: str = "0" * 64) -> Artifact:
    """``records`` stored as if ``stage`` had written them."""
    store = ArtifactStore(root)
    with store.writer(stage, key, [], {}) as w:
        w.write_all(records)
        ref = w.commit()
    return store.open(ref)


def run_plain(mod: ModuleType | Stage, cfg: Any, inputs: list[Artifact], key: str = "1" * 64) -> Artifact:
    """Runs the stage's ``run`` on ``inputs`` and its config slice (only the sections that key
    it) into a fresh artifact and returns it, committed."""
    stage = mod if isinstance(mod, Stage) else mod.STAGE
    store = ArtifactStore(cfg.run.artifact_root)
    sliced = stage.slice(cfg)
    with store.writer(stage.name, key, [a.ref for a in inputs], key_config(sliced)) as out:
        with executors.using(cfg.run):  # as tuneline.stage.execute does
            stage.run(inputs, sliced, out)
        ref = out.commit()
    return store.open(ref)


class FakeConfig(Section):
    size: int = Field(default=1, description="Records to write.")


def fake_stage(
    run: Callable | None = None, calls: list[int] | None = None, name: str = "fake", inputs: tuple[str, ...] = ()
) -> Stage:
    """A one-record stage (``run`` replaces its work); ``calls`` counts its runs; ``inputs``
    names the stages it reads."""

    def default_run(inputs, cfg, out):
        if calls is not None:
            calls.append(1)
        for i in range(cfg.fake.size):
            out.write(Record(id=f"r{i}", kind="text", text="hello"))

    return Stage(name=name, version=1, config=FakeConfig, run=run or default_run, summary=lambda r: "", inputs=inputs)


def fake_config(root: str, name: str = "fake", **run: Any) -> types.SimpleNamespace:
    """A config holding just ``run`` and the fake stage's section."""
    return types.SimpleNamespace(run=RunConfig(artifact_root=root, **run), **{name: FakeConfig()})


def fake_pipeline_config(root: str, *names: str, **run: Any) -> types.SimpleNamespace:
    """A config holding ``run`` and one fake section per stage name in ``names``."""
    return types.SimpleNamespace(run=RunConfig(artifact_root=root, **run), **{n: FakeConfig() for n in names})


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def capture(logger: logging.Logger) -> Iterator[list[str]]:
    """The messages ``logger`` emits inside the block (all levels), as a list that fills up."""
    lines: list[str] = []
    handler, level = _Lines(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
