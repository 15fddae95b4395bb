"""The model card: lineage from the artifacts themselves, eval results, files and checksums."""

from __future__ import annotations

import yaml

from tuneline.artifacts import ArtifactStore
from tuneline.card import lineage, model_card
from tuneline.records import Record


def rec(i: int) -> Record:
    return Record(id=f"r{i}", kind="text", text=f"document {i}")


def stage(store, name, key, inputs, kept, rejected=0, **report):
    with store.writer(name, key * 64, [i for i in inputs], {}) as out:
        for i in range(kept):
            out.write(rec(i))
        for i in range(rejected):
            out.reject(rec(100 + i), "near_duplicate" if name == "dedup" else "too_short")
        out.report.update(report)
        return out.commit()


def chain(store):
    ingest = stage(store, "ingest", "1", [], 10, 2, records_in=12)
    pii = stage(
        store, "pii", "2", [ingest], 10, records_in=10, entities_removed_total=3,
        entities_removed={"PERSON": 2, "EMAIL_ADDRESS": 1}, residual_total=0,
    )  # fmt: skip
    dedup = stage(
        store, "dedup", "3", [pii], 8, 2, records_in=10, exact_duplicates=1, near_duplicates=1, threshold=0.6
    )
    fmt = stage(store, "format", "4", [dedup], 0, records_in=8, splits={"train": {"records": 7}, "eval": {"records": 1}})
    train = stage(
        store, "train", "5", [fmt], 0, method="dpo", adapter="lora", steps=12, epochs=3.0, train_rows=7,
        first_loss=0.69, last_loss=0.41, trainable_params=100, total_params=1000,
    )  # fmt: skip
    return train


def test_lineage_walks_back_from_train_to_ingest(tmp_path):
    store = ArtifactStore(tmp_path / "art")
    arts = lineage(store.open(chain(store)))
    assert [a.ref.stage for a in arts] == ["ingest", "pii", "dedup", "format", "train"]


def test_the_card_names_the_data_the_results_and_the_files(tmp_path):
    store = ArtifactStore(tmp_path / "art")
    arts = lineage(store.open(chain(store)))
    evaluation = {
        "base": {"loss": 2.0, "ppl": 7.39},
        "tuned": {"loss": 1.5, "ppl": 4.48},
        "n_examples": 1,
        "metrics": {"rouge_l": {"base": 0.1, "tuned": 0.3}},
    }
    files = [{"path": "gguf/model-q8_0.gguf", "size": 12345, "sha256": "f" * 64}]
    card = model_card(
        arts, base="meta-llama/Llama-3.2-1B", train_config={"method": "dpo"}, evaluation=evaluation, files=files,
        usage=["ollama create my-model -f serving/Modelfile"],
    )  # fmt: skip
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == "meta-llama/Llama-3.2-1B" and front["library_name"] == "peft"
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"loss": 1.5, "perplexity": 4.48, "rouge_l": 0.3}
    assert "| ingest | `111111111111` | 12 → 10 | 2 |" in card
    assert "3 PII entities replaced (EMAIL_ADDRESS 1, PERSON 2); residual 0" in card
    assert "| dedup | `333333333333` | 10 → 8 | 2 | 1 exact and 1 near duplicates dropped" in card
    assert "split: train 7, eval 1" in card
    assert "| rouge_l | 0.1000 | 0.3000 |" in card
    assert f"| `gguf/model-q8_0.gguf` | 12,345 | `{'f' * 64}` |" in card
    assert "ollama create my-model" in card and "# meta-llama/Llama-3.2-1B: DPO fine-tune (lora)" in card


def test_a_card_without_evaluation_says_so_and_the_tiny_model_has_no_hub_id(tmp_path):
    store = ArtifactStore(tmp_path / "art")
    card = model_card(lineage(store.open(chain(store))), base="tiny Llama", train_config={}, evaluation=None, files=[])
    assert "Not evaluated in this run." in card
    assert "base_model" not in yaml.safe_load(card.split("---\n")[1])
