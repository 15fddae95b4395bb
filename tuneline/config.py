"""Pipeline configuration: ``PipelineConfig`` is the shared sections (``run``, ``model``) plus
one section per registered stage, each the stage's own config model.

The same ``PipelineConfig`` is read from YAML (``deployments/*.yaml``), overridden from the CLI
(``key.sub=value``), and is the parameter of the Prefect flow, so the Prefect UI renders it as
a form. Every field has a description; rules inside a section are its ``check_*`` validators,
and rules across a stage's sections are its ``check`` (run on the stage's slice), so a bad
config fails before any stage runs. Defaults are the embedded demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from tuneline import registry
from tuneline.errors import ConfigError
from tuneline.sections import ModelConfig, RunConfig, Section

__all__ = ["ConfigError", "PipelineConfig", "StageName", "demo_config", "load_config"]


class PipelineBase(Section):
    """The whole pipeline; every section has working defaults (the embedded demo)."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run-wide settings.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model being tuned.")

    @model_validator(mode="after")
    def check_stages(self) -> PipelineBase:
        """Each stage's cross-section rules, on the sections it reads."""
        for stage in registry.stages():
            if stage.check is not None:
                stage.check(stage.slice(self))
        return self


def _build() -> type[PipelineBase]:
    sections: dict[str, Any] = {
        s.name: (s.config, Field(default_factory=s.config, description=s.describe())) for s in registry.stages()
    }
    model = create_model("PipelineConfig", __base__=PipelineBase, __module__=__name__, **sections)
    model.__doc__ = PipelineBase.__doc__
    return model


PipelineConfig = _build()
StageName = registry.stage_name_type()
STAGES = registry.names()


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "deployments" / "demo.yaml"


def demo_config() -> PipelineConfig:
    """The embedded demo (deployments/demo.yaml): the default of the CLI and the flow's form."""
    return load_config(DEMO_CONFIG) if DEMO_CONFIG.exists() else PipelineConfig()


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `tuneline config --schema` lists the fields)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "invalid config:\n" + "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key.sub=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(path[:-1])} is not a section")
        node[path[-1]] = value
    return data


def validate_config(data: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Reads YAML (or the defaults when ``path`` is None) and applies ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_file(Path(path))
    return validate_config(apply_overrides(data, overrides or []))


def read_config_file(p: Path) -> dict[str, Any]:
    """The mapping in a YAML config file, or a ``ConfigError`` saying what is wrong with the file."""
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    if p.is_dir():
        raise ConfigError(f"config {p} is a directory; give a YAML file such as {p}/demo.yaml")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not text (binary or not UTF-8); give a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {p} is not text (it holds NUL bytes); give a YAML file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(data).__name__}")
    return data
