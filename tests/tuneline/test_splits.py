"""Split rows: one typed schema between format and the stages that read its splits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneline.artifacts import ArtifactStore
from tuneline.errors import InputError
from tuneline.records import dump_jsonl_gz
from tuneline.splits import SplitRow, load_split, read_split

PROMPT = "<|im_start|>user\nWrite a greeting.<|im_end|>\n<|im_start|>assistant\n"


def row_data(kind: str = "chat", **changes) -> dict:
    data = {
        "id": "r1",
        "kind": kind,
        "prompt": "" if kind == "text" else PROMPT,
        "completion": "Hello!<|im_end|>\n",
    }
    if kind == "preference":
        data["rejected_completion"] = "whatever<|im_end|>\n"
    data |= {"text": data["prompt"] + data["completion"], "n_tokens": 12, "truncated": False}
    return data | changes


@pytest.mark.parametrize("kind", ["chat", "preference", "text"])
def test_a_row_round_trips_in_the_written_layout(kind):
    data = row_data(kind)
    row = SplitRow.model_validate(data)
    # What is written is what was given, key for key and in the same order: the files keep
    # the layout format has always written.
    assert list(row.to_json().items()) == list(data.items())
    assert SplitRow.model_validate(row.to_json()) == row


def test_preference_rows_name_their_two_replies():
    pref = SplitRow.model_validate(row_data("preference"))
    assert (pref.chosen, pref.rejected) == ("Hello!<|im_end|>\n", "whatever<|im_end|>\n")
    chat = SplitRow.model_validate(row_data("chat"))
    assert chat.chosen is None and chat.rejected is None
    assert "rejected_completion" not in chat.to_json()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({k: v for k, v in row_data().items() if k != "completion"}, "completion"),
        (row_data(kind="image"), "kind"),
        (row_data(n_tokens="many"), "n_tokens"),
        (row_data(extra_field=1), "extra_field"),
        (row_data(text="something else"), "prompt \\+ completion"),
        (
            {k: v for k, v in row_data("preference").items() if k != "rejected_completion"},
            "rejected_completion",
        ),
        (row_data("chat", rejected_completion="no"), "rejected_completion"),
        (row_data("text", prompt="x", text="x" + row_data()["completion"]), "empty prompt"),
    ],
)
def test_a_malformed_row_is_refused(data, message):
    with pytest.raises(ValidationError, match=message):
        SplitRow.model_validate(data)


def format_artifact(store: ArtifactStore, splits: dict[str, list[dict]]):
    with store.writer("format", "f" * 64, [], {}) as out:
        for name, rows in splits.items():
            with open(out.file(f"splits/{name}.jsonl.gz"), "wb") as fh:
                dump_jsonl_gz(rows, fh)
        ref = out.commit()
    return store.open(ref)


def test_the_reader_yields_typed_rows(store_root):
    rows = [row_data("chat", id="a"), row_data("preference", id="b"), row_data("text", id="c")]
    art = format_artifact(ArtifactStore(store_root), {"train": rows, "eval": []})
    read = load_split(art, "train")
    assert [r.id for r in read] == ["a", "b", "c"] and all(isinstance(r, SplitRow) for r in read)
    assert [r.to_json() for r in read_split(art, "train")] == rows
    assert load_split(art, "eval") == []


def test_the_reader_names_a_bad_row_and_a_missing_split(store_root):
    bad = row_data(id="broken")
    del bad["n_tokens"]
    art = format_artifact(ArtifactStore(store_root), {"train": [row_data(id="ok"), bad]})
    with pytest.raises(InputError, match=r"splits/train.jsonl.gz row 2 \(id 'broken'\).*n_tokens"):
        load_split(art, "train")
    with pytest.raises(InputError, match="no splits/eval.jsonl.gz"):
        load_split(art, "eval")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_split(art, "test")
