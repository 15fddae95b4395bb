"""evaluate's task metrics in the stage: generated answers of base and tuned, scored and saved,
and schema-guided decoding on an untrained (random) tiny model."""

from __future__ import annotations

import json

import pytest

from tasks import evaluate
from tests.support.catalogue import tiny_config
from tests.tasks.evaluate.support import (
    fresh_adapter_artifact,
    run_stage,
    write_seen_format_artifact,
    write_toolcall_format_artifact,
)
from tuneline.errors import ConfigError
from tuneline.models import chat_tools


@pytest.fixture(scope="module")
def scored(trained_setup):
    """The evaluate artifact of the trained catalogue with rouge_l and exact_match on."""
    store, _, fmt, trained = trained_setup
    cfg = tiny_config(
        store.root,
        evaluate={"metrics": ["rouge_l", "exact_match"], "max_generate": 16,
                  "max_new_tokens": 20, "num_samples": 2},
    )
    return run_stage(store, evaluate, [fmt, trained], cfg, "m" * 64)


def read_examples(art) -> list[dict]:
    return [json.loads(line) for line in (art.path / "examples.jsonl").read_text().splitlines()]


def test_tuned_beats_base_on_rouge_l(scored):
    m = scored.report["metrics"]
    assert m["labels"] == ["base", "tuned"]
    assert m["rouge_l"]["n"] == 16 and m["exact_match"]["n"] == 16
    # The catalogue's answers follow fixed patterns: the tuned model writes most of each
    # (0.70 against 0.03 here); the untrained base writes noise.
    assert m["rouge_l"]["tuned"] > m["rouge_l"]["base"] + 0.3, m["rouge_l"]
    # Held-out facts (a product's price, city, stock) come from a hash: not learnable.
    assert m["exact_match"]["base"] == 0.0
    # The loss part is still there.
    assert scored.report["improved"] is True


def test_tuned_beats_base_on_exact_match_for_questions_it_was_trained_on(trained_setup):
    store, cfg, fmt, trained = trained_setup
    seen = write_seen_format_artifact(store, fmt, n=16)
    cfg = tiny_config(
        store.root,
        evaluate={"metrics": ["exact_match", "function_call"], "max_generate": 16,
                  "max_new_tokens": 20, "num_samples": 0, "max_examples": 16},
    )
    art = run_stage(store, evaluate, [seen, trained], cfg, "x" * 64)
    m = art.report["metrics"]
    assert list(m) == ["exact_match", "function_call", "labels"]  # rouge_l off: not computed
    assert m["exact_match"]["base"] == 0.0 and m["exact_match"]["tuned"] > 0.0, m
    # Asked for, but these records hold no calls: said so, not silently left out.
    assert m["function_call"]["n"] == 0
    assert "function_call: no eval record" in (art.path / "report.md").read_text()


def test_examples_file_holds_every_generated_answer_with_its_scores(scored):
    rows = read_examples(scored)
    assert len(rows) == 16
    assert len({r["id"] for r in rows}) == 16
    m = scored.report["metrics"]
    for r in rows:
        assert r["task"] == "reply" and "<|im_start|>" not in r["prompt"]
        assert r["reference"].startswith(("The ", "Yes, we have"))
        assert isinstance(r["base"], str) and isinstance(r["tuned"], str)
        for label in ("base", "tuned"):
            s = r["scores"][label]
            assert s["rouge_l"] == pytest.approx(evaluate.M.rouge_l(r[label], r["reference"]))
            assert s["exact_match"] in (0.0, 1.0)
    # The aggregates are the means of the saved scores.
    for metric in ("rouge_l", "exact_match"):
        mean = sum(r["scores"]["tuned"][metric] for r in rows) / len(rows)
        assert m[metric]["tuned"] == pytest.approx(mean)
    # The samples are the first examples' answers.
    samples = scored.report["samples"]
    assert [s["tuned"] for s in samples] == [r["tuned"] for r in rows[:2]]


def test_summary_has_the_metrics_table(scored):
    md = (scored.path / "report.md").read_text()
    assert md == evaluate.STAGE.summary(scored.report)
    m = scored.report["metrics"]
    assert "| metric | n | base | tuned |" in md
    assert f"| ROUGE-L F1 | 16 | {m['rouge_l']['base']:.3f} | {m['rouge_l']['tuned']:.3f} |" in md


def test_schema_guided_decoding_makes_a_random_model_write_valid_calls(trained_setup):
    """The point of guided decoding: an untrained model's free output is never a valid call;
    under the tools' schema, every output is one."""
    store, _, _, _ = trained_setup
    cfg = tiny_config(
        store.root,
        evaluate={
            "metrics": ["function_call"], "max_generate": 6, "num_samples": 0,
            "schema_guided": "both", "schema_max_string": 8,
            "max_examples": 4,
        },
    )
    fmt = write_toolcall_format_artifact(store, cfg, n=6)
    fresh = fresh_adapter_artifact(store, cfg, fmt, key="1" * 64)
    art = run_stage(store, evaluate, [fmt, fresh], cfg, "g" * 64)
    m = art.report["metrics"]
    print(json.dumps(m, indent=1))
    assert m["labels"] == ["base", "tuned", "base_guided", "tuned_guided"]
    assert m["schema_valid"]["n"] == 6
    assert m["schema_valid"]["base"] == 0.0 and m["schema_valid"]["tuned"] == 0.0
    assert m["schema_valid"]["base_guided"] == 1.0 and m["schema_valid"]["tuned_guided"] == 1.0
    fc = m["function_call"]
    assert fc["n"] == 6 and fc["base"]["parse_failures"] == 6
    # Guided calls always parse: each is a right or wrong call, never a parse failure.
    assert fc["base_guided"]["parse_failures"] == 0
    assert sum(fc["base_guided"][k] for k in ("correct", "wrong_name", "wrong_args")) == 6
    rows = read_examples(art)
    assert len(rows) == 6 and all(r["task"] == "function_call" for r in rows)
    tools_of = {rec.id: rec.meta["tools"] for rec in fmt.records()}
    for r in rows:
        call = json.loads(r["base_guided"])
        assert set(call) == {"name", "arguments"}
        assert r["reference"].startswith('{"name"')
        assert r["prompt"].startswith("system")
        # the functions it may call are in view, as format renders them for training
        record_tools = tools_of[r["id"]]
        tools = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in chat_tools(record_tools))
        assert f"<tools>\n{tools}\n</tools>" in r["prompt"]
    assert "| function-call accuracy | 6 |" in (art.path / "report.md").read_text()


def test_json_schema_guides_replies_and_reports_validity(trained_setup, tmp_path):
    store, _, fmt, trained = trained_setup
    schema = {
        "type": "object",
        "properties": {"product": {"type": "string"}, "price": {"type": "integer"}},
        "required": ["product", "price"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    cfg = tiny_config(
        store.root,
        evaluate={"metrics": ["rouge_l"], "max_generate": 4, "num_samples": 1, "max_examples": 4,
                  "schema_guided": True, "json_schema": str(path),
                  "max_new_tokens_json": 64, "schema_max_string": 10},
    )
    assert cfg.evaluate.schema_guided == "on"
    art = run_stage(store, evaluate, [fmt, trained], cfg, "j" * 64)
    m = art.report["metrics"]
    assert m["schema_valid"] == {"n": 4, "base": 1.0, "tuned": 1.0}
    for r in read_examples(art):
        assert set(json.loads(r["tuned"])) == {"product", "price"}


def test_a_bad_json_schema_is_a_clear_config_error(trained_setup):
    with pytest.raises(ConfigError, match="neither inline JSON nor an existing file"):
        evaluate.load_schema("no/such/schema.json")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        evaluate.load_schema("[1, 2]")
    assert evaluate.load_schema('{"type": "object"}') == {"type": "object"}
