"""tasks/train/merge.py: combining LoRA adapters of one base with PEFT's add_weighted_adapter.

The adapters are built with PEFT directly on the seeded tiny Llama, with random non-zero A and B
(``init_lora_weights=False``) and no fully trained modules, so each update ``s * B @ A`` is known
and the merged weights can be checked against their definition.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tasks.train import merge
from tasks.train.merge import MergeConfig, merge_adapters, merge_settings
from tuneline.errors import ConfigError, InputError
from tuneline.models import load_base_model, load_tokenizer, train_tokenizer
from tuneline.sections import ModelConfig

TINY = {
    "vocab_size": 300,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
MODEL = ModelConfig.model_validate({"tiny": TINY})
SENTENCES = [
    "The red lamp costs 12 dollars.",
    "Where is the blue kettle made? It is made in Porto.",
    "Yes, we have 3 of the wooden chair in stock.",
    "The silver clock is made in Osaka.",
] * 10
ATOL = 1e-4


def build_adapter(
    root: Path,
    tok_dir: Path,
    *,
    r: int,
    alpha: int,
    seed: int,
    targets: list[str],
    model=MODEL,
    **extra,
) -> Path:
    """A train-artifact-shaped folder (``adapter/``, ``tokenizer/``) with a random LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    tok = load_tokenizer(model, tok_dir)
    base = load_base_model(model, tok)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(
            base,
            LoraConfig(
                r=r,
                lora_alpha=alpha,
                target_modules=targets,
                init_lora_weights=False,
                task_type="CAUSAL_LM",
                **extra,
            ),
        )
    peft_model.save_pretrained(root / "adapter")
    tok.save_pretrained(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tokenizer and adapters: a (r=4, alpha=8), b (r=2, alpha=4, other modules), c (r=4)."""
    root = tmp_path_factory.mktemp("merge")
    tok_dir = root / "tok"
    train_tokenizer(SENTENCES, 300).save_pretrained(tok_dir)
    a = build_adapter(
        root / "a",
        tok_dir,
        r=4,
        alpha=8,
        seed=1,
        targets=["q_proj", "v_proj", "up_proj", "down_proj"],
    )
    b = build_adapter(
        root / "b",
        tok_dir,
        r=2,
        alpha=4,
        seed=2,
        targets=["q_proj", "k_proj", "o_proj", "gate_proj"],
    )
    c = build_adapter(
        root / "c",
        tok_dir,
        r=4,
        alpha=4,
        seed=3,
        targets=["q_proj", "v_proj", "up_proj", "down_proj"],
    )
    return {"root": root, "tok": tok_dir, "a": a, "b": b, "c": c}


def inputs(tok_dir: Path) -> torch.Tensor:
    tok = load_tokenizer(MODEL, tok_dir)
    return torch.tensor(
        [tok("The blue lamp is made in Lyon. Yes, we have 5 in stock.")["input_ids"]]
    )


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits.float()


def base_model(tok_dir: Path):
    return load_base_model(MODEL, load_tokenizer(MODEL, tok_dir))


def adapter_factors(artifact: Path) -> tuple[float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The adapter's scale and ``{module path: (A, B)}``."""
    from safetensors.torch import load_file

    cfg = json.loads((artifact / "adapter" / "adapter_config.json").read_text())
    tensors = load_file(str(artifact / "adapter" / "adapter_model.safetensors"))
    factors = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            factors[module] = (a, tensors[key.replace(".lora_A.", ".lora_B.")])
    return cfg["lora_alpha"] / cfg["r"], factors


@torch.no_grad()
def weighted_sum_model(tok_dir: Path, artifacts: list[Path], weights: list[float]):
    """The base with ``sum w_i * s_i * B_i @ A_i`` added to each adapted weight, by hand."""
    model = base_model(tok_dir)
    for artifact, w in zip(artifacts, weights, strict=True):
        scale, factors = adapter_factors(artifact)
        for module, (a, b) in factors.items():
            model.get_submodule(module).weight += w * scale * (b @ a)
    return model


def reload(out: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(out / "model"))


# ------------------------------------------------------------------------------- maths


def test_cat_of_different_ranks_is_the_exact_weighted_sum(made, tmp_path):
    weights = [0.7, -0.4]
    settings = MergeConfig(adapters=[made["a"], made["b"]], weights=weights, combination="cat")
    record = merge_adapters(settings, MODEL, tmp_path / "out")
    ids = inputs(made["tok"])
    want = logits(weighted_sum_model(made["tok"], [made["a"], made["b"]], weights), ids)
    got = logits(reload(tmp_path / "out"), ids)
    base = logits(base_model(made["tok"]), ids)
    assert (want - base).abs().max() > 0.1  # the adapters do move the logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert record["merged_rank"] == 6 and record["output"] == "model"


def test_cat_with_unit_weights_equals_both_adapters_active_at_once(made, tmp_path):
    from peft import PeftModel

    merge_adapters(MergeConfig(adapters=[made["a"], made["c"]]), MODEL, tmp_path / "out")
    both = PeftModel.from_pretrained(
        base_model(made["tok"]), str(made["a"] / "adapter"), adapter_name="a"
    )
    both.load_adapter(str(made["c"] / "adapter"), adapter_name="c")
    both.base_model.set_adapter(["a", "c"])
    ids = inputs(made["tok"])
    torch.testing.assert_close(
        logits(reload(tmp_path / "out"), ids), logits(both, ids), atol=ATOL, rtol=0
    )


def test_one_adapter_with_weight_one_matches_the_peft_model(made, tmp_path):
    from peft import PeftModel

    merge_adapters(MergeConfig(adapters=[made["b"]]), MODEL, tmp_path / "out")
    peft_model = PeftModel.from_pretrained(base_model(made["tok"]), str(made["b"] / "adapter"))
    ids = inputs(made["tok"])
    torch.testing.assert_close(
        logits(reload(tmp_path / "out"), ids), logits(peft_model, ids), atol=ATOL, rtol=0
    )


@torch.no_grad()
def test_linear_of_equal_ranks_follows_peft_definition(made, tmp_path):
    """linear averages the factors: A = sum sqrt(w s) A_i, B = sum sqrt(w s) B_i, update B @ A
    (cross terms included, so not the exact weighted sum)."""
    weights = [0.6, 0.8]
    settings = MergeConfig(adapters=[made["a"], made["c"]], weights=weights, combination="linear")
    merge_adapters(settings, MODEL, tmp_path / "out")
    want_model = base_model(made["tok"])
    parts = [adapter_factors(made[n]) for n in ("a", "c")]
    for module in parts[0][1]:
        a = sum(math.sqrt(w * s) * f[module][0] for w, (s, f) in zip(weights, parts, strict=True))
        b = sum(math.sqrt(w * s) * f[module][1] for w, (s, f) in zip(weights, parts, strict=True))
        want_model.get_submodule(module).weight += b @ a
    ids = inputs(made["tok"])
    got = logits(reload(tmp_path / "out"), ids)
    torch.testing.assert_close(got, logits(want_model, ids), atol=ATOL, rtol=0)
    exact = logits(weighted_sum_model(made["tok"], [made["a"], made["c"]], weights), ids)
    assert (got - exact).abs().max() > 1e-3  # the cross terms: linear is not cat


@pytest.mark.parametrize(
    ("combination", "density"),
    [
        ("svd", None),
        ("ties", 0.8),
        ("ties_svd", 0.8),
        ("dare_linear", 0.8),
        ("dare_ties", 0.8),
        ("dare_linear_svd", 0.8),
        ("dare_ties_svd", 0.8),
        ("magnitude_prune", 0.8),
        ("magnitude_prune_svd", 0.8),
    ],
)
def test_approximate_combinations_move_toward_the_adapters(made, tmp_path, combination, density):
    weights = [0.5, 0.5]
    settings = MergeConfig(
        adapters=[made["a"], made["c"]], weights=weights, combination=combination, density=density
    )
    merge_adapters(settings, MODEL, tmp_path / "out")
    ids = inputs(made["tok"])
    got = logits(reload(tmp_path / "out"), ids)
    target = logits(weighted_sum_model(made["tok"], [made["a"], made["c"]], weights), ids)
    base = logits(base_model(made["tok"]), ids)
    assert torch.isfinite(got).all()
    assert (got - base).abs().max() > 1e-3
    # measured: 0.27 (svd) to 0.62 (dare_linear) of the base's distance to the exact sum
    assert (got - target).norm() < 0.8 * (base - target).norm()


def test_dare_is_repeatable_with_its_seed(made, tmp_path):
    settings = MergeConfig(
        adapters=[made["a"], made["c"]], combination="dare_ties", density=0.5, seed=7
    )
    merge_adapters(settings, MODEL, tmp_path / "one")
    merge_adapters(settings, MODEL, tmp_path / "two")
    other = settings.model_copy(update={"seed": 8})
    merge_adapters(other, MODEL, tmp_path / "three")
    ids = inputs(made["tok"])
    one, two, three = (logits(reload(tmp_path / n), ids) for n in ("one", "two", "three"))
    assert torch.equal(one, two)
    assert not torch.equal(one, three)


def test_svd_rank_sets_the_rank_of_the_combined_adapter(made, tmp_path):
    settings = MergeConfig(
        adapters=[made["a"], made["b"]], combination="svd", svd_rank=3, unload=False
    )
    record = merge_adapters(settings, MODEL, tmp_path / "out")
    assert record["merged_rank"] == 3
    assert json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())["r"] == 3


# -------------------------------------------------------------------------------- output


def test_output_reloads_and_records_its_inputs(made, tmp_path):
    out = tmp_path / "out"
    settings = MergeConfig(adapters=[made["a"], made["b"] / "adapter"], weights=[1.0, 0.5])
    record = merge_adapters(settings, MODEL, out)
    assert sorted(p.name for p in out.iterdir()) == ["merge.json", "model", "tokenizer"]
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "merge.json").read_text()) == record
    assert [i["path"] for i in record["inputs"]] == [str(made["a"]), str(made["b"] / "adapter")]
    for i, art in zip(record["inputs"], [made["a"], made["b"]], strict=True):
        data = (art / "adapter" / "adapter_model.safetensors").read_bytes()
        assert i["sha256"] == hashlib.sha256(data).hexdigest()
    assert [i["weight"] for i in record["inputs"]] == [1.0, 0.5]
    assert record["settings"]["combination"] == "cat"
    assert len(load_tokenizer(MODEL, out / "tokenizer")) == len(load_tokenizer(MODEL, made["tok"]))
    ids = inputs(made["tok"])
    want = logits(weighted_sum_model(made["tok"], [made["a"], made["b"]], [1.0, 0.5]), ids)
    torch.testing.assert_close(logits(reload(out), ids), want, atol=ATOL, rtol=0)
    # nothing else next to it: the staging folder was renamed into place
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_adapter_only_output_applies_like_the_standalone_model(made, tmp_path):
    from peft import PeftModel

    settings = MergeConfig(adapters=[made["a"], made["b"]], weights=[0.3, 0.9], unload=False)
    record = merge_adapters(settings, MODEL, tmp_path / "out")
    assert record["output"] == "adapter"
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    peft_model = PeftModel.from_pretrained(
        base_model(made["tok"]), str(tmp_path / "out" / "adapter")
    )
    ids = inputs(made["tok"])
    want = logits(weighted_sum_model(made["tok"], [made["a"], made["b"]], [0.3, 0.9]), ids)
    torch.testing.assert_close(logits(peft_model, ids), want, atol=ATOL, rtol=0)


def test_a_damaged_adapter_fails_before_anything_is_written(made, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(made["c"], broken)
    (broken / "adapter" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "merged" / "out"
    with pytest.raises(InputError, match=r"cannot read adapter .*broken"):
        merge_adapters(MergeConfig(adapters=[made["a"], broken]), MODEL, out)
    assert not (tmp_path / "merged").exists() or list((tmp_path / "merged").iterdir()) == []


def test_an_adapter_failing_to_load_midway_leaves_no_output(made, tmp_path, monkeypatch):
    """The second adapter fails inside PEFT after the staging folder exists: it is removed."""
    from peft import PeftModel

    real = PeftModel.load_adapter

    def load_adapter(self, model_id, adapter_name, *args, **kwargs):
        if adapter_name == "a1":
            raise FileNotFoundError(f"{model_id}: gone")
        return real(self, model_id, adapter_name, *args, **kwargs)

    monkeypatch.setattr(PeftModel, "load_adapter", load_adapter)
    (tmp_path / "merged").mkdir()
    with pytest.raises(InputError, match=r"cannot load adapter .*/c: .*gone"):
        merge_adapters(
            MergeConfig(adapters=[made["a"], made["c"]]), MODEL, tmp_path / "merged" / "out"
        )
    assert list((tmp_path / "merged").iterdir()) == []


def test_a_crash_after_the_model_is_saved_leaves_no_output(made, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def save_pretrained(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", save_pretrained)
    (tmp_path / "merged").mkdir()
    with pytest.raises(OSError, match="disk full"):
        merge_adapters(MergeConfig(adapters=[made["a"]]), MODEL, tmp_path / "merged" / "out")
    assert list((tmp_path / "merged").iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_output(made, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    out = tmp_path / "out"
    merge_adapters(MergeConfig(adapters=[made["a"]]), MODEL, out)
    before = (out / "merge.json").read_text()
    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        merge_adapters(MergeConfig(adapters=[made["c"]]), MODEL, out, overwrite=True)
    assert (out / "merge.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_non_empty_output_is_kept_unless_overwrite(made, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    settings = MergeConfig(adapters=[made["a"]])
    with pytest.raises(InputError, match="not empty"):
        merge_adapters(settings, MODEL, out)
    assert (out / "keep.txt").read_text() == "mine"
    merge_adapters(settings, MODEL, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["merge.json", "model", "tokenizer"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ---------------------------------------------------------------------------- validation


def test_weights_need_one_per_adapter(made):
    with pytest.raises(ValidationError, match="weights has 1 values for 2 adapters"):
        MergeConfig(adapters=[made["a"], made["c"]], weights=[1.0])


def test_an_unknown_combination_is_refused(made):
    with pytest.raises(ValidationError, match=r"combination[\s\S]*'cat'"):
        MergeConfig(adapters=[made["a"]], combination="average")


def test_linear_needs_equal_ranks_and_names_them(made):
    with pytest.raises(ValidationError) as e:
        MergeConfig(adapters=[made["a"], made["b"]], combination="linear")
    msg = str(e.value)
    assert f"{made['a']} (r=4)" in msg and f"{made['b']} (r=2)" in msg and "use cat" in msg


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"combination": "ties"}, "set density"),
        ({"combination": "cat", "density": 0.5}, "density only applies"),
        ({"combination": "dare_linear", "density": 1.5}, "less than or equal to 1"),
        (
            {"combination": "svd", "majority_sign_method": "frequency"},
            "majority_sign_method only applies",
        ),
        ({"combination": "linear", "svd_rank": 2}, "svd_rank only applies"),
    ],
)
def test_settings_that_do_not_fit_the_combination_are_refused(made, settings, message):
    with pytest.raises(ValidationError, match=message):
        MergeConfig(adapters=[made["a"], made["c"]], **settings)


def test_a_missing_adapter_is_named(made, tmp_path):
    with pytest.raises(ValidationError, match=r"nowhere does not exist"):
        MergeConfig(adapters=[made["a"], tmp_path / "nowhere"])


def test_merge_settings_turns_errors_into_a_config_error(made):
    with pytest.raises(
        ConfigError, match=r"invalid merge settings:\n  weights|weights has 3 values"
    ):
        merge_settings({"adapters": [str(made["a"])], "weights": [1, 2, 3]})
    assert merge_settings({"adapters": [str(made["a"])]}).combination == "cat"


def test_fully_trained_modules_are_refused(made, tmp_path):
    """PEFT refuses two adapters sharing a modules_to_save module, and gives a single one a fresh
    copy of the untrained module: neither is a meaningful merge."""
    art = build_adapter(
        tmp_path / "full",
        made["tok"],
        r=4,
        alpha=8,
        seed=4,
        targets=["q_proj"],
        modules_to_save=["lm_head"],
    )
    with pytest.raises(ValidationError, match="lm_head fully \\(modules_to_save\\)"):
        MergeConfig(adapters=[art])


def test_adapters_of_different_base_names_are_refused(made, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(made["c"], other)
    cfg_file = other / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "base_model_name_or_path": "org/another-model"}))
    with pytest.raises(InputError, match="trained on different bases.*org/another-model"):
        merge_adapters(MergeConfig(adapters=[made["a"], other]), MODEL, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_adapters_of_another_tiny_model_are_refused(made, tmp_path):
    wider = ModelConfig.model_validate({"tiny": {**TINY, "hidden_size": 48}})
    art = build_adapter(
        tmp_path / "wide", made["tok"], r=4, alpha=8, seed=5, targets=["q_proj"], model=wider
    )
    with pytest.raises(InputError, match=r"wide does not fit the base model.*q_proj"):
        merge_adapters(MergeConfig(adapters=[made["a"], art]), MODEL, tmp_path / "out")


def test_adapters_of_another_seed_are_refused_by_their_manifests(made, tmp_path):
    import shutil

    arts = []
    for name, seed in (("s0", 0), ("s1", 1)):
        art = tmp_path / name
        shutil.copytree(made["a"], art)
        model = {"name_or_path": None, "tiny": {**MODEL.tiny.model_dump(mode="json"), "seed": seed}}
        (art / "manifest.json").write_text(json.dumps({"config": {"model": model}}))
        arts.append(art)
    with pytest.raises(InputError, match=r"s1 was trained on base .*'seed': 1"):
        merge_adapters(MergeConfig(adapters=arts), MODEL, tmp_path / "out")


def test_adapters_with_different_tokenizers_are_refused(made, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(made["c"], other)
    shutil.rmtree(other / "tokenizer")
    train_tokenizer(["completely different words here"] * 20, 280).save_pretrained(
        other / "tokenizer"
    )
    with pytest.raises(InputError, match="tokenizers differ"):
        merge_adapters(MergeConfig(adapters=[made["a"], other]), MODEL, tmp_path / "out")


def test_the_module_is_not_a_training_method():
    assert not hasattr(merge, "CONFIG") and not hasattr(merge, "build_trainer")


def test_the_cli_merges_and_names_bad_input(made, tmp_path):
    """`tuneline merge A B -w 0.7 -w -0.4 -o OUT`, as a user runs it, on the tiny base."""
    import yaml
    from typer.testing import CliRunner

    from tuneline.cli import app

    config = tmp_path / "pipeline.yaml"
    lengths = {"max_length": 64}
    config.write_text(
        yaml.safe_dump({"model": {"tiny": TINY}, "format": lengths, "train": lengths, "evaluate": lengths})
    )
    a, b = str(made["a"]), str(made["b"])
    args = ["merge", a, b, "-w", "0.7", "-w", "-0.4", "-o", str(tmp_path / "out"), "-c", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "merged 2 adapter(s) with cat" in result.output
    ids = inputs(made["tok"])
    want = logits(weighted_sum_model(made["tok"], [made["a"], made["b"]], [0.7, -0.4]), ids)
    torch.testing.assert_close(logits(reload(tmp_path / "out"), ids), want, atol=ATOL, rtol=0)

    bad = CliRunner().invoke(app, [*args[:-4], "-o", str(tmp_path / "out2"), "-c", str(config), "--combination", "linear"])
    assert bad.exit_code == 2 and "rank" in bad.output and "Traceback" not in bad.output
