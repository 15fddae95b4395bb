"""sft: supervised fine-tuning on prompt/completion rows (TRL's ``SFTTrainer``).

The recipe: each train-split row becomes ``{"prompt", "completion"}`` (``sft_example``: one eos
at the end of the reply), the loss is on the completion tokens only, and short examples may be
packed into full-length rows. Everything every method shares (model, adapter, optimizer
settings, logging) comes in from the stage (``tasks/train/__init__.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneline.sections import Section
from tuneline.splits import SplitRow, sft_example


class SFTMethod(Section):
    """Supervised fine-tuning: learn the reference completion of every row."""

    name: Literal["sft"] = Field(
        default="sft", description="Supervised fine-tuning (TRL SFTTrainer)."
    )


CONFIG = SFTMethod


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
    """TRL ``SFTTrainer`` over ``rows``, ready to ``train()``.

    Args:
        rows: the train split (rows of any kind: a preference row trains on its chosen reply).
        cfg: the ``train`` and ``model`` sections (``train.max_length``, ``train.packing``).
        model: the base model (PEFT wraps it with ``peft_config``).
        tokenizer: the tokenizer the splits were counted with.
        args: the ``TrainingArguments`` every method shares (``output_dir``, rates, logging).
        peft_config: the LoRA adapter to train.
        callbacks: trainer callbacks (progress and logging).
    """
    import datasets
    from trl import SFTConfig, SFTTrainer

    dataset = datasets.Dataset.from_list([sft_example(r, tokenizer.eos_token) for r in rows])
    config = SFTConfig(
        **args,
        max_length=cfg.train.max_length,
        # Loss on completion tokens only: the prompt is given at inference, never written by
        # the model. A text row has an empty prompt, so a document is learned whole.
        completion_only_loss=True,
        packing=cfg.train.packing,
        # bfd packs whole examples (best fit, nothing cut mid-example) and trains padding-free:
        # the batch is one row whose position_ids restart at each example. Flash-attention
        # kernels use those boundaries directly; on sdpa/eager (CPU), transformers >= 5 turns
        # the restarting position_ids into a block-diagonal mask when no attention_mask and no
        # cache are passed (TRL passes use_cache=False), so examples never attend to each
        # other (tests/tasks/test_train.py checks this). "wrapped" would cut examples mid-way
        # and let them attend across boundaries. Cost without flash attention: the mask is
        # quadratic in batch_size * max_length, fine on CPU-sized models.
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
