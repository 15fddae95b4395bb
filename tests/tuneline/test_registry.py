"""The registry is the only stage graph: the flow, the config, selection and keys derive from it,
and each stage sees only the config sections that key its artifact."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from tuneline import registry
from tuneline.config import PipelineConfig, demo_config
from tuneline.pipeline import Selection
from tuneline.sections import Section
from tuneline.stage import SHARED_SECTIONS, ConfigSlice, Stage

REPO = Path(__file__).resolve().parents[2]


def test_stages_come_in_pipeline_order_with_inputs_before_readers():
    names = registry.names()
    assert names[:8] == ("ingest", "pii", "dedup", "augment", "format", "quality", "train", "evaluate")
    for s in registry.stages():
        for dep in (*s.inputs, *s.after):
            assert names.index(dep) < names.index(s.name), f"{s.name} runs before {dep}"


def test_pipeline_config_has_one_section_per_stage_plus_shared_ones():
    assert list(PipelineConfig.model_fields) == [*SHARED_SECTIONS, *registry.names()]
    for s in registry.stages():
        assert PipelineConfig.model_fields[s.name].annotation is s.config
        assert PipelineConfig.model_fields[s.name].description


def test_each_stage_reads_only_the_sections_that_key_it():
    """Key honesty by construction: a stage's run gets a slice without the other sections, so
    reading one fails loudly instead of silently reusing a stale artifact."""
    cfg = demo_config()
    for s in registry.stages():
        sliced = s.slice(cfg)
        assert isinstance(sliced, ConfigSlice)
        assert tuple(type(sliced).model_fields) == s.sections
        for other in [*SHARED_SECTIONS, *registry.names()]:
            if other in s.sections:
                assert getattr(sliced, other) == getattr(cfg, other)
            else:
                with pytest.raises(AttributeError, match=f"{other!r} is not part of this stage's key"):
                    getattr(sliced, other)


def test_a_setting_outside_a_stages_sections_does_not_change_its_key():
    cfg = demo_config()
    changed = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"num_samples": 9})})
    from tuneline.pipeline import plan_keys

    before, after = plan_keys(cfg), plan_keys(changed)
    # evaluate's own key, and card's, which reads evaluate's artifact; export (beside it) keeps its
    assert [s for s in registry.names() if before[s].key != after[s].key] == ["evaluate", "card"]


def _flow_calls() -> list[tuple[str, list[str]]]:
    """The ``step("<stage>", <inputs>...)`` lines of flows/finetune.py, with the stage each input
    variable came from."""
    tree = ast.parse((REPO / "flows" / "finetune.py").read_text())
    produced: dict[str, str] = {}
    calls = []
    for node in ast.walk(tree):
        call = node.value if isinstance(node, ast.Assign | ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "step"):
            continue
        stage = call.args[0].value
        calls.append((stage, [produced[a.id] for a in call.args[1:]]))
        if isinstance(node, ast.Assign):
            produced[node.targets[0].id] = stage
    return calls


def test_the_flow_reads_like_the_registry():
    """flows/finetune.py names the built-in chain explicitly; each line passes exactly the
    artifacts the stage declares, in registry order."""
    calls = _flow_calls()
    assert [c[0] for c in calls] == list(registry.names()[: len(calls)])
    for stage, inputs in calls:
        assert tuple(inputs) == registry.get(stage).inputs, stage


def test_selection_and_stage_name_type_follow_the_registry():
    with pytest.raises(ValueError, match="not a stage; stages are: ingest, pii"):
        Selection(only="export_nope")
    from typing import get_args

    from tuneline.config import StageName

    assert get_args(StageName) == registry.names()


def test_a_stage_must_name_known_shared_sections():
    class Cfg(Section):
        pass

    with pytest.raises(ValueError, match="unknown shared sections"):
        Stage(name="x", version=1, config=Cfg, run=lambda *a: None, summary=lambda r: "", uses=("models",))


def test_cycles_and_unknown_inputs_are_refused():
    class Cfg(BaseModel):
        pass

    def mk(name, inputs):
        return Stage(name=name, version=1, config=Cfg, run=lambda *a: None, summary=lambda r: "", inputs=inputs)

    with pytest.raises(ValueError, match="depends on 'nope'"):
        registry._order({"a": mk("a", ("nope",))})
    with pytest.raises(ValueError, match="cycle"):
        registry._order({"a": mk("a", ("b",)), "b": mk("b", ("a",))})


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


def test_prefect_is_imported_only_in_flows_and_the_orchestration_module():
    allowed = {REPO / "tuneline" / "orchestration.py"}
    offenders = []
    for path in [*(REPO / "tasks").rglob("*.py"), *(REPO / "tuneline").rglob("*.py")]:
        if path in allowed:
            continue
        if any(m == "prefect" or m.startswith("prefect.") for m in _imports(path)):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_stage_code_never_imports_another_stage():
    for stage in registry.stages():
        if not stage.module.startswith("tasks."):
            continue
        pkg = stage.module
        root = REPO / Path(*pkg.split("."))
        files = list(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
        for f in files:
            for m in _imports(f):
                if m.startswith("tasks."):
                    assert m == pkg or m.startswith(pkg + "."), f"{f.relative_to(REPO)} imports {m}"
