"""One Prefect deployment per pipeline config: keeps prefect.yaml in step with deployments/*.yaml.

prefect.yaml cannot include other files, so each config's deployment carries the config itself
as its ``config`` parameter: the UI's run form then opens pre-filled with exactly what
``tuneline run deployments/<name>.yaml`` runs. ``tuneline deployments`` writes those parameters
(and adds a deployment for a new config file); everything else in a deployment — schedule,
description, work pool, comments — is the user's and is kept as it is. ``--check`` only
reports drift (the tests run it), so an edited config can't silently deploy stale values.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from tuneline.config import ConfigError, load_config

POOL = "tuneline"  # the process work pool every deployment runs on (tuneline ui creates it)

FINETUNE_ENTRYPOINT = "flows/finetune.py:finetune"


@dataclass
class SyncResult:
    """What a sync changed (or, with check, would change) in prefect.yaml."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)  # finetune deployments with no config file

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)


def _yaml() -> YAML:
    y = YAML()  # round-trip: comments and key order of the user's prefect.yaml survive
    y.preserve_quotes = True  # so an unquoted `on:` (a boolean to Prefect's reader) is seen
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 120
    # `key: null`, not a bare `key:` that reads like a missing value
    y.representer.add_representer(type(None), lambda r, d: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _description(config_file: Path) -> str:
    """The config file's opening comment line: what this variant is for."""
    for line in config_file.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return f"The full pipeline on {config_file.name}."


def config_parameters(config_file: Path) -> dict[str, Any]:
    """The deployment parameters for one config file: the validated config, defaults filled in."""
    try:
        cfg = load_config(config_file)
    except ConfigError as e:  # name the file: sync reads every config in deployments/
        raise ConfigError(f"{config_file.parent.name}/{config_file.name}: {e}") from None
    return {"config": cfg.model_dump(mode="json")}


# Keys and values YAML 1.1 reads as booleans (Prefect reads prefect.yaml with PyYAML): `on: record`
# would arrive as `true: record`, `schema_guided: off` as false. Quoted, they stay strings.
YAML11_BOOLS = {"y", "yes", "n", "no", "on", "off", "true", "false"}


def _key(k: Any) -> Any:
    return DoubleQuotedScalarString(k) if isinstance(k, str) and k.lower() in YAML11_BOOLS else k


def _compact(obj: Any, in_list: bool = False) -> Any:
    """Lists of scalars and list items as flow style (``[en]``, ``{path: ...}``): a readable dump."""
    if isinstance(obj, dict):
        m = CommentedMap((_key(k), _compact(v)) for k, v in obj.items())
        if in_list:
            m.fa.set_flow_style()
        return m
    if isinstance(obj, list):
        seq = CommentedSeq(_compact(v, in_list=True) for v in obj)
        short = sum(len(str(v)) + 2 for v in obj) < 80  # a long flow list wraps unreadably
        if (all(not isinstance(v, dict | list) for v in obj) and short) or in_list:
            seq.fa.set_flow_style()
        return seq
    return _key(obj)  # a value like "off" too: PyYAML would read it as false


def sync(repo: Path, check: bool = False) -> SyncResult:
    """Brings prefect.yaml's config deployments in line with ``repo/deployments/*.yaml``.

    Args:
        repo: the project root (holds prefect.yaml and deployments/).
        check: only report what would change; write nothing.
    """
    path = repo / "prefect.yaml"
    y = _yaml()
    doc = y.load(path.read_text())
    deployments = doc.setdefault("deployments", [])
    by_name = {d["name"]: d for d in deployments}
    result = SyncResult()
    configs = sorted((repo / "deployments").glob("*.yaml"))
    for cfg_file in configs:
        name = cfg_file.stem
        params = config_parameters(cfg_file)
        dep = by_name.get(name)
        if dep is None:
            dep = CommentedMap(
                name=name,
                description=_description(cfg_file),
                entrypoint=FINETUNE_ENTRYPOINT,
                parameters=_compact(params),
                work_pool=CommentedMap(name=POOL),
            )
            # after the last config deployment, so they stay together above rerun-stage
            last = max((i for i, d in enumerate(deployments) if d.get("entrypoint") == FINETUNE_ENTRYPOINT), default=-1)
            deployments.insert(last + 1, dep)
            result.added.append(name)
        elif _plain(dep.get("parameters")) != params or _bare_bool_keys(dep.get("parameters")):
            if dep.get("entrypoint") != FINETUNE_ENTRYPOINT:
                raise ValueError(
                    f"prefect.yaml deployment {name!r} has entrypoint {dep.get('entrypoint')!r}, but "
                    f"deployments/{cfg_file.name} needs {FINETUNE_ENTRYPOINT}; rename one of them"
                )
            dep["parameters"] = _compact(params)
            result.updated.append(name)
    stems = {c.stem for c in configs}
    result.orphaned = [
        d["name"] for d in deployments if d.get("entrypoint") == FINETUNE_ENTRYPOINT and d["name"] not in stems
    ]
    if result.changed and not check:
        buf = io.StringIO()
        y.dump(doc, buf)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(path)  # never a half-written prefect.yaml
    return result


def _bare_bool(x: Any) -> bool:
    return isinstance(x, str) and x.lower() in YAML11_BOOLS and not isinstance(x, DoubleQuotedScalarString)


def _bare_bool_keys(obj: Any) -> bool:
    """Whether ``obj`` holds an unquoted key or string value that YAML 1.1 reads as a boolean."""
    if isinstance(obj, dict):
        return any(_bare_bool(k) or _bare_bool_keys(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_bare_bool_keys(v) for v in obj)
    return _bare_bool(obj)


def _plain(obj: Any) -> Any:
    """ruamel's commented containers as plain dicts/lists, for comparison."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj
