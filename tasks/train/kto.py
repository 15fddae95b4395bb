"""kto: Kahneman-Tversky Optimization on unpaired good/bad replies (TRL's ``KTOTrainer``).

The recipe: each preference row gives two unpaired examples ``{"prompt", "completion",
"label"}`` (``kto_examples``): the chosen reply labelled desirable, the rejected one
undesirable, both ending in one eos. The loss raises the policy's log-ratio to the reference
model on desirable replies and lowers it on undesirable ones, each measured against a KL
baseline that TRL estimates from mismatched (prompt, reply) pairs within a batch; ``beta``
decides how far the policy may drift, ``desirable_weight``/``undesirable_weight`` balance the
two labels. Only preference rows are used (``tuneline.splits.METHOD_ROWS``).

TRL builds the KL pairs by rotating the replies of each batch in dataset order (it trains with
``train_sampling_strategy="sequential"``), so the examples are shuffled here, once, with
``train.seed``: a row's chosen and rejected replies would otherwise sit side by side and the
"mismatched" pair of one would be its own prompt's other reply. A batch needs at least two
examples (``train.batch_size`` >= 2) for that estimate.

The reference model is the base: the policy with its adapter disabled, or for full
fine-tuning a frozen copy of the base made here (as in dpo).

Packing: none. ``KTOConfig`` has neither ``packing`` nor ``padding_free`` in TRL 1.16 (its
collator pads each batch), so ``train.packing`` is ignored. KTO is stable API in TRL 1.16
(``trl.KTOTrainer``; ``trl.experimental.kto`` is a deprecated alias of it).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from tasks.train.dpo import reference_copy
from tuneline.errors import InputError
from tuneline.sections import Section
from tuneline.splits import SplitRow, kto_examples, usable_rows


class KTOMethod(Section):
    """KTO: desirable replies up, undesirable ones down, from unpaired labels."""

    name: Literal["kto"] = Field(
        default="kto", description="Kahneman-Tversky Optimization (TRL KTOTrainer)."
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="Strength of the pull towards the reference model (higher: stay closer).",
    )
    desirable_weight: float = Field(
        default=1.0, gt=0, description="Loss weight of desirable (chosen) examples."
    )
    undesirable_weight: float = Field(
        default=1.0, gt=0, description="Loss weight of undesirable (rejected) examples."
    )


PACKS = False  # TRL 1.16 has no padding-free KTO: the stage says train.packing is ignored
CONFIG = KTOMethod


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
    """TRL ``KTOTrainer`` over two unpaired examples per preference row, ready to ``train()``.

    Args:
        rows: train rows (only preference rows are used).
        cfg: the ``train`` and ``model`` sections (``train.max_length``, ``train.method``,
            ``train.seed``, ``train.batch_size``).
        model: the base model (PEFT wraps it with ``peft_config``).
        tokenizer: the tokenizer the splits were counted with.
        args: the ``TrainingArguments`` every method shares.
        peft_config: the adapter to train, or ``None`` for full fine-tuning.
        callbacks: trainer callbacks (progress and logging).

    Raises:
        InputError: no preference row in ``rows``, or ``train.batch_size`` is 1.
    """
    rows = usable_rows("kto", rows)
    if cfg.train.batch_size < 2:
        raise InputError(
            "train: method 'kto' needs train.batch_size >= 2 (its KL baseline pairs each prompt "
            f"with another example's reply in the same batch); got {cfg.train.batch_size}"
        )
    import datasets
    from trl import KTOConfig, KTOTrainer

    method = cfg.train.method if isinstance(cfg.train.method, KTOMethod) else KTOMethod()
    examples = [ex for r in rows for ex in kto_examples(r, tokenizer.eos_token)]
    random.Random(cfg.train.seed).shuffle(examples)
    dataset = datasets.Dataset.from_list(examples)
    config = KTOConfig(
        **args,
        max_length=cfg.train.max_length,
        beta=method.beta,
        desirable_weight=method.desirable_weight,
        undesirable_weight=method.undesirable_weight,
    )
    return KTOTrainer(
        model=model,
        ref_model=reference_copy(model, peft_config),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
