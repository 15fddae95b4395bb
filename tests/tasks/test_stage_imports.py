"""Stages talk only through artifacts: no file under tasks/ imports another stage's module."""

from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def stage_of(path: Path) -> str | None:
    """The stage a file under tasks/ belongs to: its module, or its package's folder."""
    rel = path.relative_to(TASKS)
    if rel == Path("__init__.py"):
        return None
    return rel.parts[0].removesuffix(".py")


def imported_modules(source: str, package: str) -> list[str]:
    """Every module ``source`` imports, absolute (relative imports resolved against ``package``;
    ``from tasks import x`` counts as importing ``tasks.x``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from .x` starts in the package itself, each further dot one package up.
            here = package.split(".")
            base = here[: len(here) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            if module == ["tasks"]:  # the names are modules of the tasks package
                found += [f"tasks.{a.name}" for a in node.names]
            else:
                found.append(".".join(module))
    return found


def foreign_stage_imports(source: str, package: str, stage: str | None) -> list[str]:
    """The imports of ``source`` that reach into a stage other than ``stage``."""
    bad = []
    for mod in imported_modules(source, package):
        parts = mod.split(".")
        if parts[0] != "tasks":
            continue
        if len(parts) == 1 or parts[1] != stage:  # bare `import tasks` reaches every stage
            bad.append(mod)
    return bad


def package_of(path: Path) -> str:
    """The package relative imports in ``path`` start from: its folder (for ``__init__.py``
    too, which is that package itself)."""
    return ".".join(path.relative_to(TASKS.parent).parts[:-1])


def test_no_stage_imports_another_stage():
    files = sorted(TASKS.rglob("*.py"))
    assert TASKS / "dedup.py" in files and TASKS / "train" / "sft.py" in files
    offenders = {
        str(f.relative_to(TASKS.parent)): bad
        for f in files
        if (bad := foreign_stage_imports(f.read_text(), package_of(f), stage_of(f)))
    }
    assert offenders == {}


def test_the_check_sees_every_way_of_importing_a_stage():
    for source, package in [
        ("from tasks import train", "tasks"),
        ("from tasks.train import lora_config", "tasks"),
        ("import tasks.train.sft", "tasks"),
        ("from . import train", "tasks"),
        ("from .train.config import TrainConfig", "tasks"),
        ("import tasks", "tasks"),
    ]:
        assert foreign_stage_imports(source, package, "evaluate"), source
    # Inside its own package a stage imports itself freely, absolutely or relatively.
    for source in (
        "from tasks.train.config import METHODS",
        "from .config import METHODS",
        "from . import sft",
    ):
        assert foreign_stage_imports(source, "tasks.train", "train") == [], source
    assert foreign_stage_imports("from .. import evaluate", "tasks.train", "train") == [
        "tasks.evaluate"
    ]
    assert package_of(TASKS / "train" / "sft.py") == "tasks.train"
    assert package_of(TASKS / "train" / "__init__.py") == "tasks.train"
    assert package_of(TASKS / "dedup.py") == "tasks"
