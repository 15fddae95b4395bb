"""train methods cpt, dpo, orpo and kto: row selection, and a short run of each on the tiny
Llama whose outcome would show a broken method (loss on the wrong tokens, a preference that
does not move)."""

from __future__ import annotations

import re

import pytest
import torch

from tasks import train
from tasks.train import cpt, dpo, kto, orpo, sft
from tests.support.catalogue import CITIES, MAX_LENGTH, catalogue_chats, render_row, tiny_config
from tuneline.artifacts import ArtifactStore
from tuneline.errors import InputError
from tuneline.models import load_base_model, load_tokenizer, train_tokenizer
from tuneline.records import dump_jsonl_gz
from tuneline.splits import (
    METHOD_ROWS,
    SplitRow,
    kto_examples,
    load_split,
    method_row_counts,
    preference_example,
    rows_for_method,
)

N_CHAT, N_TEXT = 24, 8  # rows of the other kinds beside the preference rows of the train split


# ------------------------------------------------------------------------------ fixtures


def wrong_answer(answer: str) -> str:
    """The catalogue answer with its fact changed: the next city, or another number."""
    for i, city in enumerate(CITIES):
        if city in answer:
            return answer.replace(city, CITIES[(i + 1) % len(CITIES)])
    m = re.search(r"\d+", answer)
    assert m, answer
    return f"{answer[: m.start()]}{int(m.group()) + 11}{answer[m.end() :]}"


def render_preference_row(tok, chat: list[dict[str, str]], i: int) -> dict:
    """A preference split row (format's layout): the right fact chosen, a wrong one rejected."""
    row = render_row(tok, chat, i)
    rejected = [*chat[:-1], {"role": "assistant", "content": wrong_answer(chat[-1]["content"])}]
    full = tok.apply_chat_template(rejected, tokenize=False)
    assert full.startswith(row["prompt"])
    return {
        **row,
        "id": f"p{i:04d}",
        "kind": "preference",
        "rejected_completion": full[len(row["prompt"]) :],
    }


def text_row(tok, i: int, doc: str) -> dict:
    text = doc + tok.eos_token
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    return {
        "id": f"t{i:04d}",
        "kind": "text",
        "prompt": "",
        "completion": text,
        "text": text,
        "n_tokens": n,
        "truncated": n > MAX_LENGTH,
    }


def write_preference_artifact(store: ArtifactStore, cfg, key: str = "e" * 64):
    """A format artifact with a mixed train split: 168 preference rows (catalogue chats, every
    8th held out), 24 chat rows and 8 text rows; eval holds the 24 held-out preference rows."""
    chats = catalogue_chats()
    tok = train_tokenizer((m["content"] for c in chats for m in c), cfg.model.tiny.vocab_size)
    prefs = [render_preference_row(tok, c, i) for i, c in enumerate(chats)]
    chat_rows = [render_row(tok, c, 1000 + i) for i, c in enumerate(chats[:N_CHAT])]
    texts = [
        text_row(tok, i, " ".join(m["content"] for m in chats[i * 3][::-1])) for i in range(N_TEXT)
    ]
    train_rows = [r for i, r in enumerate(prefs) if i % 8] + chat_rows + texts
    with store.writer("format", key, [], {}) as out:
        tok.save_pretrained(out.file("tokenizer/x").parent)
        for name, rows in (("train", train_rows), ("eval", prefs[::8])):
            with open(out.file(f"splits/{name}.jsonl.gz"), "wb") as fh:
                dump_jsonl_gz(rows, fh)
        ref = out.commit()
    return store.open(ref)


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    """(store root, format artifact with preference rows, its train rows)."""
    root = str(tmp_path_factory.mktemp("methods") / "artifacts")
    store = ArtifactStore(root)
    fmt = write_preference_artifact(store, tiny_config(root))
    return root, fmt, load_split(fmt, "train")


def build(module, root, fmt, rows, tmp_path, peft=True, **train_kw):
    """``module.build_trainer`` as the stage calls it, on the rows the method trains on:
    (trainer, tokenizer, the base model before training)."""
    cfg = tiny_config(root, train={"method": module.CONFIG().name, **train_kw})
    tok = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    model = load_base_model(cfg.model, tok)
    base = load_base_model(cfg.model, tok).eval()  # same seed: the weights training starts from
    trainer = module.build_trainer(
        rows_for_method(cfg.train.method.name, rows),
        cfg,
        model=model,
        tokenizer=tok,
        args=train.training_args(cfg, str(tmp_path)),
        peft_config=train.lora_config(cfg) if peft else None,
        callbacks=[],
    )
    return trainer, tok, base


def reply_logps(model, tok, prompt: str, replies: list[str]) -> torch.Tensor:
    """Summed log-probability of each reply's tokens after ``prompt``."""
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    out = []
    for reply in replies:
        ids = torch.tensor([tok(prompt + reply, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        lp = logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
        out.append(lp[n_prompt - 1 :].sum())
    return torch.stack(out)


def pair_margin(model, tok, rows: list[SplitRow]) -> float:
    """Mean log p(chosen) - log p(rejected) over preference ``rows`` (replies as trained)."""
    model.eval()
    margins = []
    for r in rows:
        ex = preference_example(r, tok.eos_token)
        chosen, rejected = reply_logps(model, tok, ex["prompt"], [ex["chosen"], ex["rejected"]])
        margins.append(chosen - rejected)
    return torch.stack(margins).mean().item()


def logged(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


# ------------------------------------------------------------------------- row selection


def row(kind: str, i: int = 0) -> SplitRow:
    prompt = "" if kind == "text" else "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    completion = "a<|im_end|>\n"
    return SplitRow(
        id=f"{kind}{i}",
        kind=kind,
        prompt=prompt,
        completion=completion,
        rejected_completion="b<|im_end|>\n" if kind == "preference" else None,
        text=prompt + completion,
        n_tokens=3,
        truncated=False,
    )


def test_rows_for_method_selects_by_kind():
    rows = [row("chat", i) for i in range(3)] + [row("preference", i) for i in range(2)]
    rows.append(row("text"))
    assert set(METHOD_ROWS) == {"cpt", "sft", "dpo", "orpo", "kto"}
    for method in ("cpt", "sft"):
        assert rows_for_method(method, rows) == rows
    for method in ("dpo", "orpo", "kto"):
        assert [r.kind for r in rows_for_method(method, iter(rows))] == ["preference"] * 2
    assert method_row_counts(rows) == {"cpt": 6, "sft": 6, "dpo": 2, "orpo": 2, "kto": 2}
    # kto: two unpaired examples per preference row, chosen desirable, rejected undesirable.
    examples = [ex for r in rows_for_method("kto", rows) for ex in kto_examples(r, "<|im_end|>")]
    assert len(examples) == 4
    assert [ex["label"] for ex in examples] == [True, False, True, False]
    assert examples[0]["completion"] == "a<|im_end|>" and examples[1]["completion"] == "b<|im_end|>"
    assert preference_example(rows[3], "<|im_end|>") == {
        "prompt": rows[3].prompt,
        "chosen": "a<|im_end|>",
        "rejected": "b<|im_end|>",
    }
    with pytest.raises(ValueError, match="no row selection for training method 'nope'"):
        rows_for_method("nope", rows)


@pytest.mark.parametrize("module", [dpo, orpo, kto])
def test_preference_methods_refuse_rows_without_preferences(module):
    cfg = tiny_config("unused", train={"method": module.CONFIG().name})
    name = module.CONFIG().name
    with pytest.raises(
        InputError, match=rf"method '{name}' needs preference rows.*chat: 2, text: 1"
    ):
        module.build_trainer(
            [row("chat", 0), row("chat", 1), row("text")],
            cfg,
            model=None,
            tokenizer=None,
            args={},
            peft_config=None,
            callbacks=[],
        )


def test_cpt_refuses_an_empty_split():
    with pytest.raises(
        InputError, match="method 'cpt' needs rows of kind chat or preference or text"
    ):
        cpt.build_trainer(
            [],
            tiny_config("unused"),
            model=None,
            tokenizer=None,
            args={},
            peft_config=None,
            callbacks=[],
        )


# ------------------------------------------------------------------------------------ cpt


def test_cpt_trains_on_every_token_and_lowers_the_loss(prefs, tmp_path):
    root, fmt, rows = prefs
    trainer, tok, _ = build(cpt, root, fmt, rows, tmp_path / "cpt", max_steps=12)
    assert len(trainer.train_dataset) == len(rows)  # every kind: preference, chat and text
    # The loss covers the prompt too: no label of a real token is masked, while sft masks the
    # prompt of every row that has one.
    chat = [i for i, r in enumerate(rows) if r.kind != "text"][:4]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in chat])
    real = batch["attention_mask"].bool()
    assert (batch["labels"][real] != -100).all()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    sft_trainer, _, _ = build(sft, root, fmt, rows, tmp_path / "sft", max_steps=1)
    sft_batch = sft_trainer.data_collator([sft_trainer.train_dataset[i] for i in chat])
    n_prompt = [len(tok(rows[i].prompt, add_special_tokens=False)["input_ids"]) for i in chat]
    masked = ((sft_batch["labels"] == -100) & sft_batch["attention_mask"].bool()).sum(1)
    assert masked.tolist() == n_prompt and min(n_prompt) > 5

    trainer.train()
    losses = logged(trainer, "loss")
    assert losses[-1] < losses[0] - 1.0, losses


def test_cpt_packs_whole_rows(prefs, tmp_path):
    root, fmt, rows = prefs
    trainer, _, _ = build(cpt, root, fmt, rows, tmp_path, max_steps=1, packing=True)
    assert len(trainer.train_dataset) < len(rows) / 2  # ~30-token rows in 128-token packs
    assert sum(len(x) for x in trainer.train_dataset["input_ids"]) > 20 * len(rows)


# ------------------------------------------------------------------------ preference


def preference_run(module, prefs, tmp_path, **train_kw):
    """Trains ``module`` briefly; (trainer, margin of the base, margin after training) on 24
    train pairs."""
    root, fmt, rows = prefs
    trainer, tok, base = build(module, root, fmt, rows, tmp_path, **train_kw)
    pairs = rows_for_method("dpo", rows)[:24]
    before = pair_margin(base, tok, pairs)
    trainer.train()
    return trainer, before, pair_margin(trainer.model, tok, pairs)


def test_dpo_learns_to_prefer_the_chosen_reply(prefs, tmp_path):
    trainer, before, after = preference_run(dpo, prefs, tmp_path, max_steps=24)
    assert len(trainer.train_dataset) == 168  # the preference rows only
    assert trainer.ref_model is None  # LoRA: the reference is the policy, adapter disabled
    acc, margins = logged(trainer, "rewards/accuracies"), logged(trainer, "rewards/margins")
    # Step 1 scores the policy before any update: it is the reference, so no margin yet.
    assert margins[0] == pytest.approx(0, abs=1e-3) and acc[0] == 0
    assert margins[-1] > 0.5 and acc[-1] >= 0.75, (margins, acc)
    assert after > before + 2, (before, after)


def test_orpo_learns_to_prefer_the_chosen_reply(prefs, tmp_path):
    trainer, before, after = preference_run(orpo, prefs, tmp_path, max_steps=24)
    acc, margins = logged(trainer, "rewards/accuracies"), logged(trainer, "rewards/margins")
    assert margins[-1] > margins[0] and acc[-1] > acc[0], (margins, acc)
    assert "log_odds_ratio" in trainer.state.log_history[0]
    assert after > before + 2, (before, after)
    assert trainer.state.num_input_tokens_seen > 16 * 8 * 2 * 20  # both replies of each pair


def test_kto_learns_desirable_over_undesirable(prefs, tmp_path):
    trainer, before, after = preference_run(kto, prefs, tmp_path, max_steps=24)
    assert len(trainer.train_dataset) == 2 * 168
    labels = trainer.train_dataset["label"][:16]
    assert 0 < sum(labels) < 16  # shuffled: a batch mixes desirable and undesirable
    # KTO's batch KL estimate (clamped at 0) and per-label rewards are what it logs; the
    # rewards of one batch are noisy on this little data, so the outcome is judged below.
    for key in ("kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert logged(trainer, key), key
    assert after > before + 2, (before, after)


@pytest.mark.parametrize("module", [dpo, kto])
def test_full_fine_tuning_keeps_a_frozen_reference(module, prefs, tmp_path):
    root, fmt, rows = prefs
    trainer, _, base = build(module, root, fmt, rows, tmp_path, peft=False, max_steps=2)
    trainer.train()
    ref, policy = trainer.ref_model, trainer.model
    assert ref is not None and ref is not policy and not hasattr(policy, "peft_config")
    w_base = base.get_input_embeddings().weight
    assert torch.equal(ref.get_input_embeddings().weight, w_base)  # the reference stayed put
    assert not torch.equal(policy.get_input_embeddings().weight, w_base)  # the policy moved


def test_dpo_with_precomputed_reference_log_probs_learns_the_same_way(prefs, tmp_path):
    """The reference scores every pair once, before training (a column per reply), and the
    policy still learns to prefer the chosen reply."""
    method = {"name": "dpo", "precompute_ref_log_probs": True}
    trainer, before, after = preference_run(dpo, prefs, tmp_path, max_steps=24, method=method)
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    assert after > before + 2, (before, after)
