"""orpo: Odds Ratio Preference Optimization on preference rows (TRL's experimental
``ORPOTrainer``).

The recipe: each preference row becomes ``{"prompt", "chosen", "rejected"}``
(``preference_example``: both replies end in one eos). The loss is the SFT loss on the chosen
reply plus ``beta`` (the paper's lambda) times a log-odds-ratio term that makes the chosen reply
likelier than the rejected one: instruction tuning and preference alignment in one pass, with
no reference model (so no second copy of the model, adapter or not). Only preference rows are
used (``tuneline.splits.METHOD_ROWS``).

Packing: none. ``ORPOConfig`` has neither ``packing`` nor ``padding_free``: its collator pads
each batch's chosen and rejected sequences to the longest, so ``train.packing`` is ignored.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field

from tuneline.sections import Section
from tuneline.splits import SplitRow, preference_example, usable_rows


class ORPOMethod(Section):
    """ORPO: SFT on the chosen reply plus an odds-ratio preference term, no reference model."""

    name: Literal["orpo"] = Field(
        default="orpo", description="Odds Ratio Preference Optimization (TRL ORPOTrainer)."
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="Weight of the odds-ratio preference term against the SFT loss (ORPO's lambda).",
    )


PACKS = False  # TRL 1.16 has no padding-free ORPO: the stage says train.packing is ignored
CONFIG = ORPOMethod


def _trainer_class():
    """``ORPOTrainer`` counting the tokens it trains on.

    Its batches hold ``chosen_input_ids``/``rejected_input_ids``, not ``input_ids``, so the
    Trainer's own count (``include_num_input_tokens_seen``) would warn at every step and stay
    at 0; here both sequences' non-padding tokens are counted.
    """
    import torch

    with warnings.catch_warnings():  # "trl.experimental is unstable": chosen knowingly
        warnings.filterwarnings("ignore", message=".*trl.experimental")
        from trl.experimental.orpo import ORPOTrainer

    class CountingORPOTrainer(ORPOTrainer):
        def _track_num_input_tokens(self, inputs):
            mode = self.args.include_num_input_tokens_seen  # "no", "all" or "non_padding"
            if mode == "no" or "chosen_input_ids" not in inputs:
                return super()._track_num_input_tokens(inputs)
            if mode == "non_padding":
                n = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
            else:
                n = inputs["chosen_input_ids"].numel() + inputs["rejected_input_ids"].numel()
            n = torch.as_tensor(n, device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(n).sum().item()

    return CountingORPOTrainer


def build_trainer(
    rows: list[SplitRow],
    cfg,
    *,
    model,
    tokenizer,
    args: dict[str, Any],
    peft_config,
    callbacks: list,
):
    """TRL ``ORPOTrainer`` over the preference rows, ready to ``train()``.

    Args:
        rows: train rows (only preference rows are used).
        cfg: the ``train`` and ``model`` sections (``train.max_length``, ``train.method``).
        model: the base model (PEFT wraps it with ``peft_config``).
        tokenizer: the tokenizer the splits were counted with.
        args: the ``TrainingArguments`` every method shares.
        peft_config: the adapter to train, or ``None`` for full fine-tuning.
        callbacks: trainer callbacks (progress and logging).

    Raises:
        InputError: no preference row in ``rows``.
    """
    rows = usable_rows("orpo", rows)
    import datasets

    trainer_class = _trainer_class()
    from trl.experimental.orpo import ORPOConfig

    method = cfg.train.method if isinstance(cfg.train.method, ORPOMethod) else ORPOMethod()
    dataset = datasets.Dataset.from_list([preference_example(r, tokenizer.eos_token) for r in rows])
    config = ORPOConfig(
        **args,
        max_length=cfg.train.max_length,
        beta=method.beta,
        # Its pair collator needs the prompt/chosen/rejected columns (ORPO would switch this
        # off itself, with a warning).
        remove_unused_columns=False,
    )
    return trainer_class(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
