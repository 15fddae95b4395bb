"""What a second process runs in the store's concurrency tests (multiprocessing, spawn): the
stages are built inside the child, since a ``Stage`` holds functions that do not pickle."""

from __future__ import annotations

import os
import time
from typing import Any

from tests.support.stages import fake_pipeline_config, fake_stage
from tuneline.records import Record
from tuneline.stage import Stage, execute


def counting_stage(name: str, counter: str, seconds: float, inputs: tuple[str, ...] = ()) -> Stage:
    """A stage that appends ``<name> <pid>`` to the file ``counter`` each time it computes,
    works for ``seconds``, and writes one record saying how many input records it saw."""

    def run(inputs_: list, cfg: Any, out: Any) -> None:
        with open(counter, "a") as fh:
            fh.write(f"{name} {os.getpid()}\n")
        time.sleep(seconds)
        seen = sum(1 for a in inputs_ for _ in a.records())
        out.write(Record(id=f"{name}-0", kind="text", text=f"{name} read {seen} records"))

    return fake_stage(run, name=name, inputs=inputs)


def execute_chain(root: str, counter: str, names: tuple[str, ...], start: Any, results: Any, seconds: float) -> None:
    """Executes the stages ``names`` in order, each reading the one before, once ``start`` (a
    barrier) lets every process go; puts ``[(name, key, reused), ...]`` on ``results``."""
    cfg = fake_pipeline_config(root, *names)
    start.wait(120)
    refs, outcomes = [], []
    for i, name in enumerate(names):
        stage = counting_stage(name, counter, seconds, inputs=tuple(names[max(0, i - 1) : i]))
        outcome = execute(stage, cfg, refs[-1:])
        refs.append(outcome.ref)
        outcomes.append((name, outcome.ref.key, outcome.reused))
    results.put(outcomes)
