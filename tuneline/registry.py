"""The stage registry: the only stage graph.

Stages are found, not listed: every module or package under ``tasks/`` that defines
``STAGE = Stage(...)``, plus the modules named in ``$TUNELINE_STAGES`` (comma-separated import
paths, for stages that live outside this repo) and the ``tuneline.stages`` entry points of
installed packages. Their order is topological over ``inputs`` and ``after``; stages that could
go either way keep the order of their names. The stage-name type, run selection, the artifact
key chain, ``PipelineConfig``'s sections, the CLI's tables and the prefect.yaml check all derive
from here, so a new stage is one module plus one config model.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
from functools import cache
from typing import Literal

from tuneline.stage import SHARED_SECTIONS, Stage

ENV = "TUNELINE_STAGES"
ENTRY_POINTS = "tuneline.stages"


def _found_modules() -> list[str]:
    import tasks

    names = [f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__) if not m.name.startswith("_")]
    names += [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    names += [ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)]
    return names


def _order(found: dict[str, Stage]) -> list[Stage]:
    for s in found.values():
        for dep in (*s.inputs, *s.after):
            if dep not in found:
                raise ValueError(f"stage {s.name!r} ({s.module}) depends on {dep!r}, which is not a registered stage")
    done: list[str] = []
    waiting = dict(found)
    while waiting:
        ready = sorted(n for n, s in waiting.items() if all(d in done for d in (*s.inputs, *s.after)))
        if not ready:
            raise ValueError(f"stages {sorted(waiting)} depend on each other in a cycle")
        # One at a time, so a stage that becomes ready goes right after what it needs.
        done.append(ready[0])
        del waiting[ready[0]]
    return [found[n] for n in done]


@cache
def stages() -> tuple[Stage, ...]:
    """Every registered stage, in pipeline order."""
    found: dict[str, Stage] = {}
    for modname in _found_modules():
        mod = importlib.import_module(modname)
        stage = getattr(mod, "STAGE", None)
        if not isinstance(stage, Stage):
            continue
        if stage.name in found and found[stage.name].module != modname:
            raise ValueError(f"stage {stage.name!r} is defined twice: {found[stage.name].module} and {modname}")
        if stage.name in SHARED_SECTIONS:
            raise ValueError(f"stage name {stage.name!r} ({modname}) is a shared config section; rename the stage")
        object.__setattr__(stage, "module", modname)
        found[stage.name] = stage
    return tuple(_order(found))


def names() -> tuple[str, ...]:
    return tuple(s.name for s in stages())


def get(name: str) -> Stage:
    for s in stages():
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(names())}")


def stage_name_type() -> object:
    """``Literal[<every stage name>]``: the type of a stage-name parameter (a dropdown in the UI)."""
    return Literal[names()]  # type: ignore[valid-type]
