"""format stage: tokenizer, rendering, deterministic split, truncation counts, exports."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError
from transformers import AutoTokenizer

from tasks import format as fmt
from tuneline import scratch, shapes
from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.models import CHATML_TEMPLATE, train_tokenizer
from tuneline.records import Record, dump_jsonl_gz, load_jsonl_gz, record_id
from tuneline.splits import SplitRow, load_split

END = "<|im_end|>"
GEN_PROMPT = "<|im_start|>assistant\n"


def chat(i: str, *turns: tuple[str, str]) -> Record:
    return Record(
        id=i,
        kind="chat",
        messages=[{"role": r, "content": c} for r, c in turns],
        meta={"source": "t"},
    )


def make_input(store: ArtifactStore, records: list[Record], key: str = "in") -> Artifact:
    with store.writer("augment", key, [], {}) as w:
        w.write_all(records)
        ref = w.commit()
    return store.open(ref)


def run_format(
    store: ArtifactStore, inp: Artifact, cfg: PipelineConfig, key: str = "out"
) -> Artifact:
    with store.writer("format", key, [inp.ref], {}) as out:
        fmt.run([inp], cfg, out)
        ref = out.commit()
    return store.open(ref)


def split_rows(art: Artifact, split: str) -> list[dict]:
    with open(art.path / "splits" / f"{split}.jsonl.gz", "rb") as fh:
        return list(load_jsonl_gz(fh))


def all_rows(art: Artifact) -> dict[str, dict]:
    return {r["id"]: {**r, "split": s} for s in ("train", "eval") for r in split_rows(art, s)}


def config(**format_kw) -> PipelineConfig:
    # A small vocabulary keeps tokenizer training well under a second.
    return PipelineConfig(model={"tiny": {"vocab_size": 300}}, format=format_kw)


LONG_TEXT = " ".join(f"word{i} and more words about topic {i % 7}" for i in range(300))


def mixed_records() -> list[Record]:
    return [
        chat(
            "c1",
            ("user", "What is the capital of France?"),
            ("assistant", "Paris is the capital of France."),
        ),
        chat(
            "c2",
            ("system", "You answer briefly."),
            ("user", "Name a primary colour."),
            ("assistant", "Red."),
        ),
        chat(
            "c3",
            ("user", "Hi there"),
            ("assistant", "Hello! How can I help?"),
            ("user", "Tell me a fact about owls."),
            ("assistant", "Owls can rotate their heads about 270 degrees."),
        ),
        chat("no-reply", ("user", "Is anyone there?")),
        Record(
            id="p1",
            kind="preference",
            messages=[{"role": "user", "content": "Write a greeting."}],
            chosen="Good morning, have a lovely day!",
            rejected="whatever",
        ),
        Record(id="t1", kind="text", text="A short document about gardening and tomatoes."),
        Record(id="long", kind="text", text=LONG_TEXT),
    ]


@pytest.fixture
def mixed(store_root) -> tuple[Artifact, list[Record]]:
    store = ArtifactStore(store_root)
    records = mixed_records()
    art = run_format(store, make_input(store, records), config(max_length=256))
    return art, records


def test_chat_rows_split_into_generation_prompt_and_reply(mixed):
    art, records = mixed
    rows = all_rows(art)
    by_id = {r.id: r for r in records}
    for i in ("c1", "c2", "c3"):
        row, msgs = rows[i], by_id[i].messages
        assert row["kind"] == "chat"
        assert row["prompt"] + row["completion"] == row["text"]
        assert row["text"].startswith("<|im_start|>") and END in row["text"]
        # The completion is exactly the last reply and its end marker: what the loss trains on.
        assert row["prompt"].endswith(GEN_PROMPT)
        assert row["completion"] == msgs[-1].content + END + "\n"
        # Every earlier turn is context, in the prompt.
        for m in msgs[:-1]:
            assert f"<|im_start|>{m.role}\n{m.content}{END}" in row["prompt"]
    assert rows["c2"]["prompt"].startswith("<|im_start|>system\nYou answer briefly.")


def test_preference_and_text_rows(mixed):
    art, _ = mixed
    rows = all_rows(art)
    p = rows["p1"]
    assert p["prompt"] == f"<|im_start|>user\nWrite a greeting.{END}\n{GEN_PROMPT}"
    assert p["completion"] == f"Good morning, have a lovely day!{END}\n"
    assert p["rejected_completion"] == f"whatever{END}\n"
    assert p["text"] == p["prompt"] + p["completion"]
    t = rows["t1"]
    assert (
        t["prompt"] == ""
        and t["completion"] == t["text"] == "A short document about gardening and tomatoes." + END
    )
    assert "rejected_completion" not in t and "rejected_completion" not in rows["c1"]


def test_split_files_hold_split_rows_that_read_back_unchanged(mixed):
    art, _ = mixed
    for s in ("train", "eval"):
        rows = load_split(art, s)
        assert rows and all(isinstance(r, SplitRow) for r in rows)
        assert [r.to_json() for r in rows] == split_rows(
            art, s
        )  # the reader adds and drops nothing
    p = next(r for r in load_split(art, "train") + load_split(art, "eval") if r.id == "p1")
    assert p.chosen == p.completion and p.rejected == p.rejected_completion == f"whatever{END}\n"


def test_a_rendered_row_that_does_not_fit_the_schema_fails_the_stage(store_root, monkeypatch):
    """A row format cannot type is a bug in render, not a record to reject: nothing is written."""
    store = ArtifactStore(store_root)
    inp = make_input(store, mixed_records()[:1])
    monkeypatch.setattr(
        fmt,
        "render",
        lambda record, tok, tools=None: {"id": record.id, "kind": "chat", "prompt": "p", "text": "p"},
    )
    with pytest.raises(ValidationError, match="completion"):
        run_format(store, inp, config())
    assert store.list("format") == []


def test_chat_without_assistant_reply_is_rejected_and_nothing_vanishes(mixed):
    art, records = mixed
    rejected = list(art.rejected())
    assert [(r["reason"], r["record"]["id"]) for r in rejected] == [
        ("no_assistant_turn", "no-reply")
    ]
    assert "user" in rejected[0]["error"]
    rows = all_rows(art)
    kept = {r.id: r for r in art.records()}
    assert "no-reply" not in rows and "no-reply" not in kept
    # Every input record is either kept (in data/ and in exactly one split) or rejected.
    assert set(kept) == set(rows) == {r.id for r in records} - {"no-reply"}
    assert {i: r.meta["split"] for i, r in kept.items()} == {i: r["split"] for i, r in rows.items()}
    assert kept["c1"].meta["source"] == "t"  # provenance survives
    assert art.report["rejected_by_reason"] == {"no_assistant_turn": 1}


def test_long_example_is_counted_as_truncated_not_cut(mixed):
    art, _ = mixed
    rows = all_rows(art)
    tok = AutoTokenizer.from_pretrained(str(art.path / "tokenizer"))
    for row in rows.values():
        assert row["n_tokens"] == len(tok(row["text"], add_special_tokens=False)["input_ids"])
    assert rows["long"]["n_tokens"] > 256 and rows["long"]["truncated"] is True
    assert rows["long"]["text"] == LONG_TEXT + END  # counted, not cut: the trainer truncates
    assert [i for i, r in rows.items() if r["truncated"]] == ["long"]
    rep = art.report
    assert rep["truncated"] == {"count": 1, "share": round(1 / 6, 4)}
    split = rows["long"]["split"]
    assert rep["splits"][split]["truncated"] == 1
    assert rep["tokens"][split]["max"] == rows["long"]["n_tokens"]
    assert rep["splits"]["train"]["records"] + rep["splits"]["eval"]["records"] == 6
    assert "```" in fmt.STAGE.summary(rep) and GEN_PROMPT in fmt.STAGE.summary(rep)


def test_saved_tokenizer_reloads_with_chat_template(mixed):
    art, _ = mixed
    tok = AutoTokenizer.from_pretrained(str(art.path / "tokenizer"))
    assert tok.chat_template == CHATML_TEMPLATE
    assert tok.eos_token == END and tok.pad_token is not None
    # Re-rendering with the reloaded tokenizer gives the same rows train and evaluate will see.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert (
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        == all_rows(art)["c1"]["prompt"]
    )
    info = art.report["tokenizer"]
    assert (
        info["origin"] == "trained"
        and info["vocab_size"] == len(tok)
        and info["chat_template"] == "chatml"
    )
    assert len(tok) <= 300


def test_exports_round_trip_content(mixed):
    art, records = mixed
    by_id = {r.id: r for r in records}
    alpaca = json.loads((art.path / "exports/alpaca.json").read_text())
    assert {
        "instruction": "What is the capital of France?",
        "input": "",
        "output": "Paris is the capital of France.",
    } in alpaca
    assert {
        "instruction": "Name a primary colour.",
        "input": "",
        "output": "Red.",
        "system": "You answer briefly.",
    } in alpaca
    assert len(alpaca) == 2
    assert art.report["exports"]["alpaca_not_expressible"] == 1  # the multi-turn chat c3

    sharegpt = json.loads((art.path / "exports/sharegpt.json").read_text())
    assert len(sharegpt) == 3
    c3 = next(c["conversations"] for c in sharegpt if len(c["conversations"]) == 4)
    assert [t["from"] for t in c3] == ["human", "gpt", "human", "gpt"]
    assert [t["value"] for t in c3] == [m.content for m in by_id["c3"].messages]

    prefs = [
        json.loads(line)
        for line in (art.path / "exports/preference.jsonl").read_text().splitlines()
    ]
    assert prefs == [
        {
            "prompt": [{"role": "user", "content": "Write a greeting."}],
            "chosen": "Good morning, have a lovely day!",
            "rejected": "whatever",
        }
    ]


def alpaca_records(shared_data: Path, n: int) -> list[Record]:
    rows = json.loads((shared_data / "instruction/alpaca_en_demo.json").read_text())[:n]
    out = []
    for i, r in enumerate(rows):
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        out.append(chat(record_id("alpaca", i), ("user", prompt), ("assistant", r["output"])))
    return out


def test_split_is_deterministic_and_near_eval_fraction(shared_data, store_root):
    store = ArtifactStore(store_root)
    records = alpaca_records(shared_data, 500)
    inp = make_input(store, records)
    a = run_format(store, inp, config(eval_fraction=0.1), key="a")
    b = run_format(store, inp, config(eval_fraction=0.1), key="b")
    c = run_format(store, inp, config(eval_fraction=0.1, split_seed=7), key="c")

    split_a = {i: r["split"] for i, r in all_rows(a).items()}
    assert len(split_a) == 500
    assert split_a == {i: r["split"] for i, r in all_rows(b).items()}
    assert (a.path / "splits/eval.jsonl.gz").read_bytes() == (
        b.path / "splits/eval.jsonl.gz"
    ).read_bytes()
    n_eval = sum(s == "eval" for s in split_a.values())
    assert 0.06 <= n_eval / 500 <= 0.14
    n_trunc = sum(r["truncated"] for r in split_rows(a, "eval"))
    assert a.report["splits"]["eval"] == {
        "records": n_eval,
        "by_kind": {"chat": n_eval},
        "truncated": n_trunc,
    }

    split_c = {i: r["split"] for i, r in all_rows(c).items()}
    moved = sum(split_a[i] != split_c[i] for i in split_a)
    assert moved >= 20  # a new salt reshuffles...
    assert 0.06 <= sum(s == "eval" for s in split_c.values()) / 500 <= 0.14  # ...at the same share
    # Alpaca rows are single-turn: all of them export, and the stats describe real token counts.
    assert a.report["exports"]["alpaca"] == 500
    tk = a.report["tokens"]["train"]
    assert 0 < tk["min"] <= tk["p50"] <= tk["p95"] <= tk["max"]


def test_each_split_gets_a_record_when_there_are_two():
    ids = ["a", "b"]
    # Thresholds no hash can satisfy force the guarantee to step in, deterministically.
    assert sorted(fmt.assign_splits(ids, 0, 1e-12).values()) == ["eval", "train"]
    assert sorted(fmt.assign_splits(ids, 0, 1 - 1e-12).values()) == ["eval", "train"]
    assert fmt.assign_splits(ids, 0, 1e-12) == fmt.assign_splits(ids, 0, 1e-12)
    assert fmt.assign_splits(["only"], 0, 1 - 1e-12) == {"only": "train"}


def test_loaded_tokenizer_keeps_its_template_or_takes_chatml(store_root, tmp_path):
    # A "base model" tokenizer on disk whose own template refuses system turns.
    base = train_tokenizer(["some text to learn a few merges from"] * 20, 260)
    base.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('system turns are not supported') }}{% endif %}"
        "[{{ m['role'] }}]: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]: {% endif %}"
    )
    base.save_pretrained(str(tmp_path / "base"))
    store = ArtifactStore(store_root)
    records = mixed_records()[:3]  # c2 has a system turn
    inp = make_input(store, records)

    own = run_format(
        store, inp, PipelineConfig(model={"name_or_path": str(tmp_path / "base")}), key="own"
    )
    assert (
        own.report["tokenizer"]["origin"] == "loaded"
        and own.report["tokenizer"]["chat_template"] == "model's own"
    )
    [rej] = list(own.rejected())
    assert rej["reason"] == "render_error" and rej["record"]["id"] == "c2"
    assert "system turns are not supported" in rej["error"]
    c1 = all_rows(own)["c1"]
    assert c1["prompt"] == "[user]: What is the capital of France?\n[assistant]: "
    assert c1["completion"] == "Paris is the capital of France.\n"

    chatml = run_format(
        store,
        inp,
        PipelineConfig(
            model={"name_or_path": str(tmp_path / "base")}, format={"chat_template": "chatml"}
        ),
        key="chatml",
    )
    assert list(chatml.rejected()) == []
    assert all_rows(chatml)["c2"]["prompt"].startswith("<|im_start|>system\n")
    assert (
        AutoTokenizer.from_pretrained(str(chatml.path / "tokenizer")).chat_template
        == CHATML_TEMPLATE
    )


def test_template_that_rewrites_the_prompt_is_a_render_error():
    # The prompt must be a prefix of the full rendering, or the completion mask would be wrong.
    tok = train_tokenizer(["a few words"] * 10, 260)
    tok.chat_template = (
        "{% if add_generation_prompt %}<thinking mode>{% endif %}"
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    rec = chat("c", ("user", "hi"), ("assistant", "hello"))
    with pytest.raises(fmt.RenderError, match="prompt differently") as e:
        fmt.render(rec, tok)
    assert e.value.reason == "render_error"
    with pytest.raises(fmt.NoAssistantTurn):
        fmt.render(chat("u", ("user", "hi")), tok)


def test_nothing_renderable_fails_with_the_reasons(store_root):
    store = ArtifactStore(store_root)
    inp = make_input(store, [chat("x", ("user", "hello?"))])
    with pytest.raises(ValueError, match="no_assistant_turn"):
        run_format(store, inp, config())
    assert store.list("format") == []  # no half-written artifact left behind


# ------------------------------------------------------------------------------ streaming
# The stage writes splits and exports row by row from a scratch file; these pin that the files
# are byte for byte what writing the whole lists at once gives, so streaming changed nothing.


def test_streamed_files_are_what_the_whole_lists_give(mixed, tmp_path):
    art, _ = mixed
    for s in ("train", "eval"):
        # Same file name: gzip stores it in the header.
        with open(tmp_path / f"{s}.jsonl.gz", "wb") as fh:
            dump_jsonl_gz((r.to_json() for r in load_split(art, s)), fh)
        assert (art.path / "splits" / f"{s}.jsonl.gz").read_bytes() == (
            tmp_path / f"{s}.jsonl.gz"
        ).read_bytes()

    kept = list(art.records())
    chats = [r for r in kept if r.kind == "chat"]
    alpaca = [row for r in chats if (row := shapes.alpaca.dump(r)) is not None]
    sharegpt = [shapes.sharegpt.dump(r) for r in chats]
    for name, rows in (("alpaca", alpaca), ("sharegpt", sharegpt)):
        whole = json.dumps(rows, ensure_ascii=False, indent=1)
        assert (art.path / "exports" / f"{name}.json").read_text(encoding="utf-8") == whole
    # Records keep their input order; the split files keep it within each split.
    assert [r.id for r in kept] == [r.id for r in mixed_records() if r.id != "no-reply"]
    for s in ("train", "eval"):
        assert [r.id for r in load_split(art, s)] == [r.id for r in kept if r.meta["split"] == s]


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{}],
        [[]],
        [{"a": "line\nbreak ünï 🙂", "b": [1, {"c": []}, {}], "d": None}, "x", 3.5, True],
        [{"conversations": [{"from": "human", "value": 'say "hi"\t\\'}]}] * 3,
    ],
)
def test_json_list_writer_matches_json_dumps(items, tmp_path):
    path = tmp_path / "list.json"
    with open(path, "w", encoding="utf-8") as fh:
        w = fmt.JsonListWriter(fh)
        for item in items:
            w.add(item)
        w.close()
    assert path.read_text(encoding="utf-8") == json.dumps(items, ensure_ascii=False, indent=1)
    assert w.count == len(items)


def test_no_scratch_left_after_a_run_or_a_failure(store_root, monkeypatch, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    (tmp_path / "tmp").mkdir()
    store = ArtifactStore(store_root)
    inp = make_input(store, mixed_records())
    run_format(store, inp, config())
    monkeypatch.setattr(fmt, "SplitStats", None)  # fails in the second pass, spill written
    with pytest.raises(TypeError):
        run_format(store, inp, config(), key="broken")
    assert list(scratch.root().iterdir()) == []


def test_report_counts_the_rows_each_training_method_can_use(mixed):
    """Chat and text rows serve cpt and sft only; the one preference row serves every method."""
    from tuneline.splits import method_row_counts

    art, _ = mixed
    per_method = art.report["rows_per_method"]
    for s in ("train", "eval"):
        assert per_method[s] == method_row_counts(load_split(art, s))
    total = {m: per_method["train"][m] + per_method["eval"][m] for m in per_method["train"]}
    # 3 chats + 1 preference + 2 texts kept (the chat without a reply is rejected).
    assert total == {"cpt": 6, "sft": 6, "dpo": 1, "orpo": 1, "kto": 1}
    md = fmt.STAGE.summary(art.report)
    counts = ", ".join(f"{m} {n}" for m, n in per_method["train"].items())
    assert f"Train rows per method: {counts}" in md


SEARCH_TOOL = {
    "name": "search_recipes",
    "description": "Search for recipes based on ingredients",
    "parameters": {
        "type": "object",
        "properties": {"ingredients": {"type": "array", "items": {"type": "string"}}},
        "required": ["ingredients"],
    },
}


def tool_chat(i: str, tools) -> Record:
    record = chat(
        i,
        ("system", "You help with cooking."),
        ("user", "I have chicken and rice."),
        ("assistant", '{"name": "search_recipes", "arguments": {"ingredients": ["chicken", "rice"]}}'),
    )
    return record.model_copy(update={"meta": {**record.meta, "tools": tools}})


def test_a_records_tools_are_listed_in_its_prompt_and_bad_tools_are_quarantined(store_root):
    """A model asked to call a function must see it: the tools (LLaMA-Factory's JSON string or
    OpenAI's wrapped list) go into the system turn of the prompt, not into the completion."""
    store = ArtifactStore(store_root)
    records = [
        tool_chat("as-string", json.dumps([SEARCH_TOOL])),
        tool_chat("openai-wrapped", [{"type": "function", "function": SEARCH_TOOL}]),
        tool_chat("not-json", "[{name: search_recipes"),
        tool_chat("no-name", [{"description": "nameless"}]),
        chat("plain", ("user", "Hi"), ("assistant", "Hello.")),
        tool_chat("empty-list", "[]"),  # LLaMA-Factory writes "[]" for a chat without tools
    ]
    art = run_format(store, make_input(store, records), config(max_length=512))
    rows = all_rows(art)
    spec = json.dumps(SEARCH_TOOL, ensure_ascii=False)
    for i in ("as-string", "openai-wrapped"):
        prompt = rows[i]["prompt"]
        assert prompt.startswith("<|im_start|>system\nYou help with cooking.\n\n# Tools")
        assert f"<tools>\n{spec}\n</tools>" in prompt
        assert prompt.count("<|im_start|>system") == 1  # the system turn is merged, not repeated
        assert "search_recipes" not in rows[i]["completion"].split('"name"')[0]
    assert rows["as-string"]["prompt"] == rows["openai-wrapped"]["prompt"]
    # a record without tools renders exactly as before: plain ChatML
    assert rows["plain"]["prompt"] == "<|im_start|>user\nHi<|im_end|>\n" + GEN_PROMPT
    assert "# Tools" not in rows["empty-list"]["prompt"]
    rejected = {r["record"]["id"]: r for r in art.rejected()}
    assert {i: rejected[i]["reason"] for i in ("not-json", "no-name")} == {"not-json": "bad_tools", "no-name": "bad_tools"}
    assert "not JSON" in rejected["not-json"]["error"] and "'name'" in rejected["no-name"]["error"]
    assert art.report["records_with_tools"] == 2 and art.report["tokenizer"]["renders_tools"] is True
    assert "2 records carry tools, listed in each prompt" in fmt.summary(art.report)


def test_a_template_that_ignores_tools_is_reported():
    tok = train_tokenizer(["some words to learn"] * 5, 300)
    assert fmt.renders_tools(tok)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert not fmt.renders_tools(tok)
    report = {"tokenizer": {"origin": "loaded", "source": "x", "vocab_size": 1, "chat_template": "model's own",
                            "renders_tools": False}, "records_with_tools": 3}
    text = fmt.summary({**report, **fmt.split_report({s: fmt.SplitStats() for s in ("train", "eval")}, config())})
    assert "3 records carry tools, NOT shown to the model" in text
