"""export: adapter, merged 16-bit model, GGUF and serving files from a tiny trained Llama, each
loaded back and compared with the trained model."""

from __future__ import annotations

import json
import re

import pytest
import torch
from pydantic import ValidationError

import tasks.export as export
from tasks.export import gguf_writer, serving
from tasks.export.config import DEFAULT_TOLERANCE, ExportConfig
from tasks.export.equivalence import ExportMismatch, compare, encode_prompts, logits_of
from tests.support.catalogue import tiny_config, write_format_artifact
from tests.tasks.export.gotemplate import render
from tests.tasks.test_train import run_train
from tuneline.artifacts import ArtifactStore
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import load_split
from tuneline.stage import execute

IM_END = "<|im_end|>"


def run_export(store, cfg, fmt, trained, key="x" * 64):
    """The export stage's artifact for ``cfg`` (through the writer, as execute runs it)."""
    with store.writer("export", key, [fmt.ref, trained.ref], {}) as out:
        export.STAGE.run([fmt, trained], export.STAGE.slice(cfg), out)
        ref = out.commit()
    return store.open(ref)


def with_export(cfg, **export_cfg):
    return cfg.model_copy(update={"export": ExportConfig(**export_cfg)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(store, cfg, format artifact, LoRA train artifact (10 steps), export artifact, prompts)."""
    root = str(tmp_path_factory.mktemp("export") / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root, train={"max_steps": 10})
    fmt = write_format_artifact(store, cfg)
    trained = run_train(store, fmt, cfg)
    art = run_export(store, cfg, fmt, trained)
    prompts = [r.prompt for r in load_split(fmt, "eval")][:8]
    return store, cfg, fmt, trained, art, prompts


@pytest.fixture(scope="module")
def reference(setup):
    """The trained model's logits (base + adapter, float32), computed here independently."""
    from peft import PeftModel

    _, cfg, _, trained, _, prompts = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    model = PeftModel.from_pretrained(
        load_base_model(cfg.model, tok), trained.path / "adapter"
    ).eval()
    ids = encode_prompts(tok, prompts)
    return tok, ids, logits_of(model, ids)


# ------------------------------------------------------------------------------- GGUF


@pytest.mark.parametrize("qtype, limit", [("f16", 0.05), ("q8_0", 0.5)])
def test_gguf_round_trips_through_transformers(setup, reference, qtype, limit):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    *_, art, prompts = setup
    tok, ids, ref_logits = reference
    name = f"model-{qtype}.gguf"
    model = AutoModelForCausalLM.from_pretrained(
        art.path / "gguf", gguf_file=name, dtype=torch.float32
    ).eval()
    worst, top1, n = compare(ref_logits, logits_of(model, ids))
    assert n > 8 * 20  # every position of 8 prompts
    assert worst < limit and top1 >= 0.9, (worst, top1)
    assert worst > 0  # the file is really rounded (not the float32 model by accident)
    # The GGUF's own tokenizer encodes every eval prompt exactly as the trained one does.
    gguf_tok = AutoTokenizer.from_pretrained(art.path / "gguf", gguf_file=name)
    assert encode_prompts(gguf_tok, prompts) == ids
    f = art.report["formats"][qtype]
    assert f["passed"] and f["max_abs_logit_diff"] == pytest.approx(worst, rel=1e-3, abs=1e-6)


def test_gguf_metadata_holds_the_hyperparameters_template_and_stop_tokens(setup):
    from gguf import GGUFReader

    _, cfg, _, trained, art, _ = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    r = GGUFReader(art.path / "gguf" / "model-q8_0.gguf")

    def field(key):
        return r.fields[key].contents()

    t = cfg.model.tiny
    assert field("general.architecture") == "llama"
    expected = {
        "llama.context_length": t.max_position_embeddings,
        "llama.embedding_length": t.hidden_size,
        "llama.block_count": t.num_hidden_layers,
        "llama.feed_forward_length": t.intermediate_size,
        "llama.attention.head_count": t.num_attention_heads,
        "llama.attention.head_count_kv": t.num_attention_heads,
        "llama.vocab_size": len(tok),
    }
    assert {k: field(k) for k in expected} == expected
    assert field("llama.rope.freq_base") == pytest.approx(10000.0)
    assert field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    # The template travels without transformers' {% generation %} training markers (other Jinja
    # engines refuse them) and renders exactly what the trained tokenizer's template renders.
    shipped = field("tokenizer.chat_template")
    assert "{% generation %}" in tok.chat_template and "generation %}" not in shipped
    assert shipped == (art.path / "serving" / "chat_template.jinja").read_text()
    for gen in (True, False):
        assert tok.apply_chat_template(
            serving.PROBE, chat_template=shipped, tokenize=False, add_generation_prompt=gen
        ) == tok.apply_chat_template(serving.PROBE, tokenize=False, add_generation_prompt=gen)
    im_end = tok.convert_tokens_to_ids(IM_END)
    assert field("tokenizer.ggml.eos_token_id") == im_end == field("tokenizer.ggml.eot_token_id")
    assert field("tokenizer.ggml.tokens")[im_end] == IM_END
    assert field("tokenizer.ggml.token_type")[im_end] == 3  # CONTROL: never split
    types = {x.name: x.tensor_type.name for x in r.tensors}
    assert len(types) == 2 + 9 * t.num_hidden_layers + 1  # embed, output, 9 per block, output_norm
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["output.weight"] == "Q8_0"
    assert types["blk.1.attn_norm.weight"] == "F32"  # norms stay float32, as llama.cpp keeps them


def test_q_and_k_rows_are_permuted_the_way_the_loader_expects(
    setup, reference, tmp_path, monkeypatch
):
    """An f32 GGUF reproduces the trained model to float rounding; without the Q/K permutation
    it is off by whole logits (so the round trip really checks the permutation)."""
    from transformers import AutoModelForCausalLM

    from tasks.export import load_reference, merged_weights

    _, cfg, _, trained, _, _ = setup
    tok, ids, ref_logits = reference
    merged = merged_weights(load_reference(cfg, trained, tok))

    def diff(name):
        gguf_writer.write_gguf(merged, tok, trained.path / "tokenizer", tmp_path / name, "f32")
        m = AutoModelForCausalLM.from_pretrained(
            tmp_path, gguf_file=name, dtype=torch.float32
        ).eval()
        return compare(ref_logits, logits_of(m, ids))

    assert diff("right.gguf")[0] < 1e-4
    monkeypatch.setattr(gguf_writer, "permute", lambda w, *a: w)
    worst, top1, _ = diff("unpermuted.gguf")
    assert worst > 0.5 and top1 < 0.95, (worst, top1)


# ----------------------------------------------------------------------- merged, adapter


def test_merged_model_matches_base_plus_adapter(setup, reference):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    *_, art, _ = setup
    tok, ids, ref_logits = reference
    merged = art.path / "merged"
    with safe_open(merged / "model.safetensors", "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}
        assert not any("lora" in k for k in fh.keys())  # merged: a plain Llama
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    worst, top1, _ = compare(ref_logits, logits_of(model, ids))
    assert 0 < worst < DEFAULT_TOLERANCE["merged"] and top1 >= 0.9, (worst, top1)
    # the trained embeddings/lm_head (modules_to_save) went in too: the plain base is far off
    base = load_base_model(setup[1].model, tok).eval()
    assert compare(ref_logits, logits_of(base, ids))[0] > 10 * worst
    gen = GenerationConfig.from_pretrained(merged)
    assert tok.convert_tokens_to_ids(IM_END) in gen.eos_token_id
    assert (merged / "chat_template.jinja").read_text() == tok.chat_template
    assert AutoTokenizer.from_pretrained(merged).chat_template == tok.chat_template


def test_adapter_is_copied_and_files_are_in_the_report_and_manifest(setup):
    _, _, _, trained, art, _ = setup
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (art.path / "adapter" / name).read_bytes() == (
            trained.path / "adapter" / name
        ).read_bytes()
    report = json.loads((art.path / "report.json").read_text())
    assert list(report["formats"]) == ["adapter", "merged", "f16", "q8_0"]
    assert report["formats"]["adapter"]["max_abs_logit_diff"] < 1e-4
    for f in report["formats"].values():
        assert f["passed"] and f["files"]
        for entry in f["files"]:
            assert art.files[entry["path"]] == {"size": entry["size"], "sha256": entry["sha256"]}
        assert f["size"] == sum(e["size"] for e in f["files"])
    assert report["formats"]["q8_0"]["size"] < report["formats"]["f16"]["size"]
    md = export.STAGE.summary(report)
    assert "| format | size | max \\|Δlogit\\| | top-1 agreement | tolerance | pass |" in md
    assert re.search(
        r"\| q8_0 \(`gguf/model-q8_0.gguf`\) \| [\d.]+ KB \| [\d.e+-]+ \| 0\.9\d\d \| ≤ 0.5", md
    )
    assert "`bash serving/vllm.sh`" in md


# --------------------------------------------------------------------------- serving


def test_modelfile_template_renders_what_the_chat_template_renders(setup):
    _, cfg, _, trained, art, _ = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    text = (art.path / "serving" / "Modelfile").read_text()
    source = re.search(r"^FROM (\S+)$", text, re.M).group(1)
    assert source == "../gguf/model-q8_0.gguf"
    assert (art.path / "serving" / source).resolve() == (
        art.path / "gguf" / "model-q8_0.gguf"
    ).resolve()
    assert re.findall(r'^PARAMETER stop "(.*)"$', text, re.M) == [IM_END]
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1)
    chat = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "How much does the red lamp cost?"},
        {"role": "assistant", "content": "The red lamp costs 42 dollars."},
        {"role": "user", "content": "Is it in stock?"},
    ]
    go = render(
        template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in chat]}
    )
    assert go == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert go.endswith("<|im_start|>assistant\n")
    vllm = (art.path / "serving" / "vllm.sh").read_text()
    assert "vllm serve merged/ --chat-template merged/chat_template.jinja --dtype bfloat16" in vllm
    assert "--tool-call-parser llama3_json" in vllm  # our ChatML lists tools
    assert (
        "llama-server -m gguf/model-q8_0.gguf --jinja --chat-template-file serving/chat_template.jinja"
        in (art.path / "serving" / "llama_cpp.sh").read_text()
    )


def test_the_modelfile_says_it_does_not_list_tools(setup):
    """Our ChatML lists tools in the system turn; Ollama's Go TEMPLATE cannot render them the
    same way, and the Modelfile says so instead of serving a different tool prompt silently."""
    _, cfg, _, trained, _, _ = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    template, note = serving.ollama_template(tok)
    assert template == serving.CHATML_GO_TEMPLATE
    assert "does not list tools" in note and "vllm.sh or llama_cpp.sh" in note
    tok.chat_template = (  # plain ChatML, without a tools branch
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    template, note = serving.ollama_template(tok)
    assert template == serving.CHATML_GO_TEMPLATE and "tools" not in note
    # vLLM hands back the calls as tool_calls only where the template shows the model its tools
    tool_flags = "--enable-auto-tool-choice --tool-call-parser llama3_json"
    assert tool_flags in serving.vllm_script("bfloat16", 256, tools=True)
    assert "tool" not in serving.vllm_script("bfloat16", 256, tools=serving.renders_tools(tok))


def test_go_renderer_follows_go_semantics():
    """The test renderer itself: trim markers, range, if/else with eq, $."""
    t = '{{- range .Messages }}{{ if eq .Role "user" }}U:{{ else }}{{ $.Name }}:{{ end }}{{ .Content }}\n{{- end }}'
    data = {
        "Name": "A",
        "Messages": [{"Role": "user", "Content": " hi"}, {"Role": "bot", "Content": "yo"}],
    }
    assert render(t, data) == "U: hiA:yo"
    assert render("a  {{- .X -}}  b", {"X": 1}) == "a1b"
    with pytest.raises(SyntaxError):
        render("{{ len .Messages }}", {"Messages": []})


def test_a_template_that_is_not_chatml_gets_no_ollama_template(setup):
    _, cfg, _, trained, _, _ = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}"
    )
    template, note = serving.ollama_template(tok)
    assert template is None and "not ChatML" in note
    text = serving.modelfile("../gguf/model-q8_0.gguf", template, ["</s>"], note, 256)
    assert (
        not re.search(r"^TEMPLATE", text, re.M)
        and "# TEMPLATE: the chat template is not ChatML" in text
    )
    assert "FROM ../gguf/model-q8_0.gguf\n" in text and 'PARAMETER stop "</s>"' in text


# ------------------------------------------------------------------ full weights, failure


def test_full_weights_export_has_no_adapter(tmp_path):
    root = str(tmp_path / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root, train={"adapter": "full", "max_steps": 4})
    fmt = write_format_artifact(store, cfg)
    trained = run_train(store, fmt, cfg)
    assert (trained.path / "model").is_dir() and not (trained.path / "adapter").exists()
    art = run_export(store, with_export(cfg, dtype="float16", gguf_types=["f32"]), fmt, trained)
    assert not (art.path / "adapter").exists()
    formats = art.report["formats"]
    assert list(formats) == ["merged", "f32"] and all(f["passed"] for f in formats.values())
    assert formats["f32"]["max_abs_logit_diff"] < 1e-4
    assert "full weights" in art.report["reference"]
    assert "FROM ../gguf/model-f32.gguf\n" in (art.path / "serving" / "Modelfile").read_text()


def test_a_format_beyond_its_tolerance_fails_the_stage_and_publishes_nothing(tmp_path):
    root = str(tmp_path / "artifacts")
    store, cfg = ArtifactStore(root), tiny_config(root, train={"max_steps": 2})
    fmt = write_format_artifact(store, cfg)
    trained = run_train(store, fmt, cfg)
    tight = with_export(cfg, gguf_types=["q8_0"], tolerance={"q8_0": 1e-9}, check_prompts=2)
    with pytest.raises(ExportMismatch, match=r"q8_0 do not match the trained model") as err:
        execute(export.STAGE, tight, [fmt.ref, trained.ref])
    msg = str(err.value)
    assert re.search(r"q8_0: max \|Δlogit\| [\d.e-]+ \(limit 1e-09\).*FAILED", msg)
    assert re.search(
        r"merged: .*: ok", msg
    )  # the figures of every format, not only the failing one
    assert store.list("export") == []


# ----------------------------------------------------------------------------- config


def test_config_validation_names_the_known_values():
    with pytest.raises(ValidationError, match=r"unknown GGUF type 'q4_k'; known: f32, f16, q8_0"):
        ExportConfig(gguf_types=["f16", "q4_k"])
    with pytest.raises(
        ValidationError, match=r"unknown export format 'gguf'; known: adapter, merged, f32"
    ):
        ExportConfig(tolerance={"gguf": 0.1})
    with pytest.raises(ValidationError, match=r"negative limits q8_0=-1"):
        ExportConfig(tolerance={"q8_0": -1})
    cfg = ExportConfig(tolerance={"q8_0": 1.0}, gguf_types=["q8_0", "q8_0"])
    assert cfg.gguf_types == ["q8_0"]
    assert cfg.limits("q8_0") == (1.0, 0.9) and cfg.limits("merged") == (
        DEFAULT_TOLERANCE["merged"],
        0.9,
    )


def test_generation_markers_are_dropped_only_when_the_rendering_stays_the_same(setup):
    _, cfg, _, trained, _, _ = setup
    tok = load_tokenizer(cfg.model, trained.path / "tokenizer")
    shipped, note = serving.portable_template(tok)
    assert "generation %}" not in shipped and "renders the same" in note
    # here the tag's "-" trims the space before it: dropping the tag would keep that space
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {%- generation %}.{% endgeneration %}{% endfor %}"
    shipped, note = serving.portable_template(tok)
    assert shipped == tok.chat_template and "markers kept" in note


def test_a_vocabulary_without_merges_round_trips(tmp_path):
    """A byte-level vocabulary of 256 bytes and the specials has no merges at all: the GGUF
    must still load (transformers derives merges from scores) and encode the same ids."""
    from transformers import AutoTokenizer

    from tuneline.models import train_tokenizer
    from tuneline.sections import ModelConfig

    tok = train_tokenizer(["The red lamp costs 12 dollars."] * 5, 256)
    tok.save_pretrained(tmp_path / "tok")
    model = load_base_model(
        ModelConfig.model_validate(
            {"tiny": {"vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}}
        ),
        tok,
    )  # fmt: skip
    path = tmp_path / "model-f32.gguf"
    gguf_writer.write_gguf(model, tok, tmp_path / "tok", path, "f32", tok.convert_tokens_to_ids(IM_END), None)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    text = "The red lamp costs 12 dollars."
    assert loaded(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
