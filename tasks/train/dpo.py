"""dpo: Direct Preference Optimization on preference rows (TRL's ``DPOTrainer``).

The recipe: each preference row becomes ``{"prompt", "chosen", "rejected"}``
(``preference_example``: both replies end in one eos), and the loss raises the policy's
log-probability ratio to the reference model on the chosen reply over the rejected one
(``loss_type`` ``sigmoid``: the DPO paper's loss), ``beta`` deciding how far the policy may
drift from the reference. Only preference rows are used (``tuneline.splits.METHOD_ROWS``).

The reference model is the base: with a LoRA adapter it is the same model with the adapter
disabled (no second copy in memory); with full fine-tuning (no adapter) it is a frozen copy of
the base made here (TRL would reload it from ``config._name_or_path``, which the tiny model
built from a config does not have).

Packing: none. TRL 1.16's ``DPOConfig.padding_free`` is "temporarily unavailable" (it warns and
falls back to padding) and DPO has no packing, so ``train.packing`` is ignored: each batch is
the chosen and rejected sequences of its pairs, padded to the longest.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field

from tuneline.sections import Section
from tuneline.splits import SplitRow, preference_example, usable_rows

DPOLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]


class DPOMethod(Section):
    """Direct Preference Optimization: prefer the chosen reply over the rejected one."""

    name: Literal["dpo"] = Field(
        default="dpo", description="Direct Preference Optimization (TRL DPOTrainer)."
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="Strength of the pull towards the reference model (higher: stay closer).",
    )
    loss_type: DPOLoss = Field(
        default="sigmoid", description="DPO loss variant (sigmoid: the paper's; ipo, hinge, ...)."
    )
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="Score every pair with the reference model once before training instead of "
        "at every step: one forward pass per pair less per epoch (the reference never changes).",
    )


PACKS = False  # TRL 1.16 has no padding-free DPO: the stage says train.packing is ignored
CONFIG = DPOMethod


def reference_copy(model, peft_config):
    """A frozen copy of the base as the reference model for full fine-tuning; ``None`` (the
    adapter-disabled policy is the reference) when an adapter is trained."""
    if peft_config is not None or hasattr(model, "peft_config"):
        return None
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


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
    """TRL ``DPOTrainer`` over the preference rows, ready to ``train()``.

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
    rows = usable_rows("dpo", rows)
    import datasets
    from trl import DPOConfig, DPOTrainer

    method = cfg.train.method if isinstance(cfg.train.method, DPOMethod) else DPOMethod()
    dataset = datasets.Dataset.from_list([preference_example(r, tokenizer.eos_token) for r in rows])
    config = DPOConfig(
        **args,
        max_length=cfg.train.max_length,
        beta=method.beta,
        loss_type=method.loss_type,
        precompute_ref_log_probs=method.precompute_ref_log_probs,
    )
    return DPOTrainer(
        model=model,
        ref_model=reference_copy(model, peft_config),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
