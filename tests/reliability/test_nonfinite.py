"""NaN and infinity are stopped where they enter (issue 16: `train.learning_rate=.inf` was
accepted, trained a 100% NaN adapter, and every export then "matched" it with Δ0): a setting that
is not a finite number in range fails validation naming its field, and a NaN or infinite training
loss, eval loss or export logit fails the stage that sees it, with nothing published."""

from __future__ import annotations

import pytest
import torch

from tasks import evaluate, train
from tasks.export import equivalence
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore
from tuneline.config import ConfigError, load_config
from tuneline.errors import NonFiniteError, TunelineError, is_transient

# ------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("override", "field", "says"),
    [
        ("train.learning_rate=.inf", "train.learning_rate", "finite number"),  # YAML's inf
        ("train.learning_rate=inf", "train.learning_rate", "finite number"),
        ("train.learning_rate=nan", "train.learning_rate", "finite number"),
        ("train.learning_rate=-.inf", "train.learning_rate", "finite number"),
        ("train.max_steps=-5", "train.max_steps", "greater than or equal to -1"),
        ("train.max_steps=0", "train.max_steps", "must be -1"),
        ("train.epochs=.nan", "train.epochs", "finite number"),
        ("train.seed=-1", "train.seed", "greater than or equal to 0"),
        ("run.retry_delay_seconds=.inf", "run.retry_delay_seconds", "finite number"),
        ("export.tolerance={merged: .nan}", "export.tolerance.merged", "finite number"),
        ("export.min_top1={q8_0: 1.5}", "export.min_top1", "no export could pass"),
    ],
)
def test_a_setting_that_is_not_a_finite_number_in_range_fails_validation(override, field, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert f"  {field}: " in str(e.value) and says in str(e.value), str(e.value)


def test_finite_settings_in_range_still_pass():
    cfg = load_config(None, ["train.learning_rate=3e-4", "train.max_steps=1", "train.seed=7"])
    assert (cfg.train.learning_rate, cfg.train.max_steps, cfg.train.seed) == (3e-4, 1, 7)
    assert load_config(None, ["train.max_steps=-1"]).train.max_steps == -1


def test_a_nan_model_is_a_user_error_not_retried():
    err = NonFiniteError("x")
    assert isinstance(err, TunelineError) and not is_transient(err)


# ---------------------------------------------------------------------------------- train


def test_a_training_loss_that_goes_nan_fails_train_and_saves_nothing(tmp_path):
    root = str(tmp_path / "artifacts")
    store = ArtifactStore(root)
    # A finite rate (so it passes validation) that no model survives: the weights overflow to
    # inf within a step or two and the loss turns NaN.
    settings = {"learning_rate": 1e30, "max_steps": 4, "logging_steps": 1, "checkpoint_steps": 0}
    cfg = tiny_config(root, train=settings)
    fmt = write_format_artifact(store, cfg)
    with pytest.raises(NonFiniteError, match=r"train: .*(loss is nan|NaN or infinite)") as e:
        with store.writer("train", "n" * 64, [fmt.ref], {}) as out:
            train.run([fmt], cfg, out)
            out.commit()
    assert "this run used 1e+30 (train.learning_rate); lower it" in str(e.value)
    assert not list((tmp_path / "artifacts" / "train").glob("*/current.json"))


def test_a_nan_loss_the_logs_never_showed_is_caught_in_the_weights():
    class Result:
        training_loss = 1.25

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = torch.nn.Parameter(torch.ones(4), requires_grad=False)
            self.lora_A = torch.nn.Parameter(torch.tensor([1.0, float("nan"), 2.0, 3.0]))

    cfg = tiny_config("unused", train={"learning_rate": 1e-2})
    trainer = type("Trainer", (), {"model": Model()})()
    with pytest.raises(NonFiniteError, match=r"25% of weight lora_A is NaN or infinite"):
        train.check_finite(trainer, Result(), cfg)
    Result.training_loss = float("nan")
    with pytest.raises(NonFiniteError, match=r"the mean training loss is nan"):
        train.check_finite(trainer, Result(), cfg)


# ------------------------------------------------------------------------------- evaluate


class _ConstantLM(torch.nn.Module):
    """A causal LM stand-in whose logits are all ``value``, over a vocabulary of 8."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, 8), self.value)
        return type("Out", (), {"logits": logits})()


def test_a_nan_eval_loss_fails_evaluate_naming_the_model():
    batches = [[([1, 2, 3, 4], 2), ([1, 5, 6], 1)]]
    ok = evaluate.score(_ConstantLM(0.0), batches, 0, "tuned")
    assert ok["loss"] == pytest.approx(2.0794, abs=1e-3)  # ln 8: every token equally likely
    with pytest.raises(NonFiniteError, match=r"the tuned model's eval loss is nan over 5 tokens"):
        evaluate.score(_ConstantLM(float("nan")), batches, 0, "tuned")
    with pytest.raises(NonFiniteError, match=r"base model's eval loss is nan .*model.name_or_path"):
        evaluate.score(_ConstantLM(float("inf")), batches, 0, "base")


# --------------------------------------------------------------------------------- export


def test_a_nan_logit_fails_the_export_comparison():
    reference = [torch.zeros(3, 8), torch.ones(2, 8)]
    assert equivalence.compare(reference, [x.clone() for x in reference], "f16") == (0.0, 1.0, 5)
    broken = [x.clone() for x in reference]
    broken[1][0, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"export q8_0 gives NaN or infinite logits at 1 of 5"):
        equivalence.compare(reference, broken, "q8_0")
    # A NaN trained model and its NaN exports used to "match" with Δ0.
    nan = [torch.full((3, 8), float("nan"))]
    with pytest.raises(NonFiniteError, match=r"the trained model gives NaN .*train.learning_rate"):
        equivalence.compare(nan, [x.clone() for x in nan], "merged")
    inf = [torch.zeros(3, 8)]
    inf[0][2, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"export adapter gives NaN or infinite"):
        equivalence.compare([torch.zeros(3, 8)], inf, "adapter")
