"""What a run's config asks of this machine, checked before the first stage runs.

Config validation (``tuneline.config``) says whether a config is well formed anywhere: in the
UI, on a laptop planning a GPU run. Some settings can only be judged where the run happens:
an API key's environment variable, a folder of task files, a GPU. A stage says how in its
``preflight`` hook; ``check`` runs the hooks of the stages this run will compute, so a missing
judge key fails in a second with exit 2, not after an hour of training. Stages the selection
leaves out (``--to format`` never judges) and stages whose artifact is already stored (a
reuse needs no key) are not checked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tuneline import registry
from tuneline.errors import ConfigError, TunelineError

# Configs and selections that passed in this process: the CLI checks before Prefect starts and
# the flow checks again (for runs started from the UI); the second check is a lookup.
_passed: set[str] = set()


def problems(cfg: Any, selection: Any) -> list[str]:
    """One message per problem that would stop a stage of this run, in stage order.

    Args:
        cfg: the pipeline config.
        selection: the run's ``tuneline.pipeline.Selection``.
    """
    found: list[str] = []
    stored = _Stored(cfg)
    for stage in registry.stages():
        if stage.preflight is None or not selection.runs(stage.name):
            continue
        try:
            stage.preflight(stage.slice(cfg))
        except (TunelineError, ValueError) as e:
            if not selection.forced(stage.name) and stored(stage.name):
                continue  # reused as it is: the setting is never needed
            found.append(str(e))
    return found


def check(cfg: Any, selection: Any) -> None:
    """Raises ``ConfigError`` listing every problem ``problems`` finds (none: returns)."""
    if not any(s.preflight is not None and selection.runs(s.name) for s in registry.stages()):
        return
    env = repr(sorted(os.environ.items()))  # a key exported since is a new answer
    memo = hashlib.sha256(
        (cfg.model_dump_json() + selection.model_dump_json() + env).encode()
    ).hexdigest()
    if memo in _passed:
        return
    found = problems(cfg, selection)
    if found:
        raise ConfigError("\n".join(found))
    _passed.add(memo)


class _Stored:
    """Whether a stage already has its artifact for ``cfg``, asked only when a check fails.

    The keys hash the source files (gigabytes, maybe), so they are computed only when the
    stage has artifacts at all: a first run, where nothing is stored, hashes nothing. An
    unreadable store or source answers False (the stage that reads it will say why).
    """

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.keys: dict[str, Any] | None = None

    def __call__(self, stage: str) -> bool:
        from tuneline.artifacts import ArtifactStore
        from tuneline.pipeline import plan_keys

        try:
            store = ArtifactStore(self.cfg.run.artifact_root)
            if not store.fs.exists(f"{store._root_path}/{stage}"):
                return False
            if self.keys is None:
                self.keys = plan_keys(self.cfg)
            return store.exists(stage, self.keys[stage].key)
        except Exception:  # the store or a source is unreadable: not known to be stored
            return False
