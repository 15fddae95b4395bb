"""card: the model card of a trained, evaluated and exported tiny Llama."""

from __future__ import annotations

import pytest
import yaml

import tasks.card as card
import tasks.evaluate as evaluate
from tasks import train
from tests.support.catalogue import tiny_config, write_format_artifact
from tests.tasks.export.test_export import run_export
from tuneline.artifacts import ArtifactStore
from tuneline.stage import key_config


def run_stage(stage, store, inputs, cfg, key):
    """The stage's artifact, its manifest holding its config slice as execute() writes it."""
    sliced = stage.STAGE.slice(cfg)
    with store.writer(stage.STAGE.name, key * 64, [i.ref for i in inputs], key_config(sliced)) as out:
        stage.STAGE.run(inputs, stage.STAGE.slice(cfg), out)
        return store.open(out.commit())


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("card") / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root, train={"max_steps": 10})
    fmt = write_format_artifact(store, cfg)
    trained = run_stage(train, store, [fmt], cfg, "t")
    evaluated = run_stage(evaluate, store, [fmt, trained], cfg, "e")
    exported = run_export(store, cfg, fmt, trained)
    art = run_stage(card, store, [trained, evaluated, exported], cfg, "c")
    return trained, evaluated, exported, art


def test_the_card_names_the_artifacts_the_eval_results_and_every_shipped_file(made):
    trained, evaluated, exported, art = made
    text = (art.path / "README.md").read_text()
    assert art.report["card"] == text == card.summary(art.report)  # the UI shows the card itself
    front = yaml.safe_load(text.split("---\n")[1])
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["loss"] == pytest.approx(evaluated.report["tuned"]["loss"], abs=1e-4)
    # lineage: the format artifact the adapter was trained on, then the train artifact itself
    assert f"| format | `{'f' * 12}` |" in text and f"| train | `{trained.ref.key[:12]}` |" in text
    assert f"| eval loss | {evaluated.report['base']['loss']:.4f} | {evaluated.report['tuned']['loss']:.4f} |" in text
    # every exported file, with the sha256 of its manifest entry
    shipped = exported.manifest["files"]
    for name in ("gguf/model-q8_0.gguf", "gguf/model-f16.gguf", "merged/model.safetensors", "serving/Modelfile"):
        assert f"| `{name}` | {shipped[name]['size']:,} | `{shipped[name]['sha256']}` |" in text, name
    assert "ollama create tuned -f serving/Modelfile" in text and "bash serving/vllm.sh" in text
    assert "max_steps: 10" in text  # the training config it was trained with
