"""train.method: a discriminated union over the method modules of tasks/train/."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from tasks.train import cpt, dpo, kto, orpo, sft
from tasks.train.config import METHODS, TrainConfig, find_methods, method_union
from tuneline.config import ConfigError, PipelineConfig, load_config
from tuneline.sections import Section


def test_every_method_module_is_found_in_the_package():
    assert METHODS == {"cpt": cpt, "dpo": dpo, "kto": kto, "orpo": orpo, "sft": sft}
    assert TrainConfig().method == sft.SFTMethod()


@pytest.mark.parametrize("given", ["sft", {"name": "sft"}, sft.SFTMethod()])
def test_a_method_is_its_name_or_a_mapping(given):
    cfg = PipelineConfig.model_validate({"train": {"method": given}})
    assert isinstance(cfg.train.method, sft.SFTMethod) and cfg.train.method.name == "sft"


def test_an_untouched_method_dumps_as_its_name():
    """The train key hashes ``train``'s dump: ``method: sft`` is what it hashed before methods
    were models, so the demo's train artifacts keep their keys."""
    cfg = PipelineConfig.model_validate({"train": {"method": {"name": "sft"}}})
    assert cfg.train.model_dump(mode="json")["method"] == "sft"
    assert cfg.train.model_dump()["method"] == "sft"
    assert PipelineConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_a_method_with_settings_dumps_in_full():
    class Tuned(Section):
        name: Literal["tuned"] = "tuned"
        beta: float = 0.1

    info = SimpleNamespace(mode="json")
    dump = TrainConfig.dump_default_method_by_name
    assert dump(TrainConfig(), Tuned(), info) == "tuned"
    assert dump(TrainConfig(), Tuned(beta=0.5), info) == {"name": "tuned", "beta": 0.5}


KNOWN = "known methods: cpt, dpo, kto, orpo, sft"


@pytest.mark.parametrize("given", ["ppo", {"name": "ppo"}, {}, 3])
def test_an_unknown_method_is_refused_with_the_known_ones(given):
    with pytest.raises(ValidationError, match=KNOWN):
        TrainConfig.model_validate({"method": given})
    with pytest.raises(ConfigError, match=rf"train\.method: .*{KNOWN}"):
        load_config(None, [f"train.method={given!r}"])  # YAML reads Python's repr of these


def test_the_schema_accepts_a_bare_name():
    # Prefect checks the deployments' parameters (which hold `method: sft`) against this schema.
    schema = PipelineConfig.model_json_schema()["$defs"]["TrainConfig"]["properties"]["method"]
    by_name, by_model = schema["anyOf"]
    assert by_name == {"type": "string", "enum": ["cpt", "dpo", "kto", "orpo", "sft"]}
    assert by_model["discriminator"]["propertyName"] == "name"


def write_package(root, name: str, modules: dict[str, str]) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, source in modules.items():
        (pkg / f"{mod}.py").write_text(textwrap.dedent(source))


METHOD_MODULE = """
    from typing import Literal
    from tuneline.sections import Section

    class {cls}(Section):
        name: Literal["{name}"] = "{name}"
        beta: float = 0.1

    CONFIG = {cls}

    def build_trainer(rows, cfg, **shared):
        raise NotImplementedError
"""


def test_a_method_module_added_to_a_package_is_found(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_package(
        tmp_path,
        "methods_pkg_found",
        {
            "alpha": METHOD_MODULE.format(cls="Alpha", name="alpha"),
            "beta": METHOD_MODULE.format(cls="Beta", name="beta"),
            "_helpers": "CONFIG = None  # private: never a method\n",
            "config": "CONFIG = 1  # the section module, not a method\n",
            "notes": "X = 1  # no CONFIG: not a method\n",
        },
    )
    found = find_methods("methods_pkg_found")
    assert list(found) == ["alpha", "beta"]

    class Holder(BaseModel):
        method: method_union(found)

    assert Holder.model_validate({"method": {"name": "beta", "beta": 2}}).method.beta == 2
    assert type(Holder.model_validate({"method": {"name": "alpha"}}).method).__name__ == "Alpha"
    with pytest.raises(ValidationError, match="'alpha', 'beta'"):
        Holder.model_validate({"method": {"name": "gamma"}})


def test_an_incomplete_or_duplicate_method_module_is_an_error(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    no_trainer = "from tasks.train.sft import SFTMethod\nCONFIG = SFTMethod\n"
    write_package(tmp_path, "methods_pkg_incomplete", {"half": no_trainer})
    with pytest.raises(TypeError, match="defines CONFIG but no build_trainer"):
        find_methods("methods_pkg_incomplete")
    write_package(
        tmp_path,
        "methods_pkg_twice",
        {m: METHOD_MODULE.format(cls="Alpha", name="alpha") for m in ("one", "two")},
    )
    with pytest.raises(ValueError, match="'alpha' is defined twice"):
        find_methods("methods_pkg_twice")


@pytest.mark.parametrize(
    "model, train, rate",
    [
        ({}, {}, 1e-2),
        ({}, {"method": "dpo", "adapter": "full"}, 1e-2),  # random weights: the same fast rate
        ({"name_or_path": "m"}, {}, 2e-4),
        ({"name_or_path": "m"}, {"adapter": "full"}, 2e-5),
        ({"name_or_path": "m"}, {"method": "dpo"}, 5e-6),
        ({"name_or_path": "m"}, {"method": "kto", "adapter": "hft"}, 5e-7),
        ({"name_or_path": "m"}, {"method": "orpo", "learning_rate": 1e-4}, 1e-4),
    ],
)
def test_the_default_learning_rate_fits_model_method_and_adapter(model, train, rate):
    cfg = PipelineConfig.model_validate({"model": model, "train": train})
    assert cfg.train.resolved_learning_rate(cfg.model) == pytest.approx(rate)
