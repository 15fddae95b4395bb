"""cpt: continued pretraining, next-token loss on every token (TRL's ``SFTTrainer``).

The recipe: each train-split row becomes one plain ``{"text"}`` example (``cpt_example``: the
whole sequence, prompt and completion, ending in one eos; a preference row gives its prompt and
chosen reply), and the loss is on every token, template markers and prompts included: the model
learns the domain's text itself, not only to answer. Rows of every kind are used
(``tuneline.splits.METHOD_ROWS``).

Packing (``train.packing``) works as for sft: ``bfd`` packs whole examples into
``train.max_length`` rows and trains padding-free, with position_ids restarting at each example,
so a packed example never attends to another (flash attention uses the boundaries directly;
sdpa/eager turn them into a block-diagonal mask). Fewer, fuller rows, the same tokens.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneline.sections import Section
from tuneline.splits import SplitRow, cpt_example, usable_rows


class CPTMethod(Section):
    """Continued pretraining: next-token prediction on whole rows."""

    name: Literal["cpt"] = Field(
        default="cpt",
        description="Continued pretraining: loss on every token of each row (TRL SFTTrainer on text).",
    )


CONFIG = CPTMethod


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
    """TRL ``SFTTrainer`` over the rows' whole texts, ready to ``train()``.

    Args:
        rows: train rows of any kind.
        cfg: the ``train`` and ``model`` sections (``train.max_length``, ``train.packing``).
        model: the base model (PEFT wraps it with ``peft_config``).
        tokenizer: the tokenizer the splits were counted with.
        args: the ``TrainingArguments`` every method shares.
        peft_config: the adapter to train, or ``None`` for full fine-tuning.
        callbacks: trainer callbacks (progress and logging).

    Raises:
        InputError: ``rows`` is empty.
    """
    rows = usable_rows("cpt", rows)
    import datasets
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.Dataset.from_list([cpt_example(r, tokenizer.eos_token) for r in rows])
    config = SFTConfig(
        **args,
        dataset_text_field="text",
        max_length=cfg.train.max_length,
        # A language-modeling dataset has no completion mask; say so anyway: every token counts.
        completion_only_loss=False,
        assistant_only_loss=False,
        packing=cfg.train.packing,
        # Whole examples, padding-free, no cross-example attention (see sft.py).
        packing_strategy="bfd",
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
