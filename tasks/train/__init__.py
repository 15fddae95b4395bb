"""train: fine-tunes a LoRA adapter on the format stage's train split.

The whole loop is here, readable in one sitting: load the tokenizer the splits were counted
with and the base model (a hub id, a local path or the seeded tiny Llama: one code path), let
the configured method build its TRL trainer over the train rows with a PEFT ``LoraConfig``
(``train.method``: one module per method in this package, today ``sft.py``), train, and keep
what the later stages need: ``adapter/`` (PEFT ``save_pretrained``), ``tokenizer/``,
``metrics.json``, ``log_history.json`` and ``loss.png``. Only the adapter is trained and saved,
so the artifact stays megabytes even for a large base model, and evaluate/export rebuild the
base themselves.

A method module (``tasks/train/<method>.py``) defines ``CONFIG``, its config model
(``name: Literal["<method>"]`` plus its own settings), and ``build_trainer(rows, cfg, *, model,
tokenizer, args, peft_config, callbacks)``, which returns a ready transformers ``Trainer``;
``tasks/train/config.py`` finds it and adds it to ``train.method``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.train.config import METHODS, LoraConfig, TrainConfig
from tuneline import progress
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.models import load_base_model, load_tokenizer
from tuneline.scratch import scratch_dir
from tuneline.splits import load_split
from tuneline.stage import Stage

__all__ = ["METHODS", "STAGE", "LoraConfig", "TrainConfig", "lora_config", "run", "summary"]


# ------------------------------------------------------------------------- shared recipe


def lora_config(cfg):
    """PEFT LoRA config from ``train.lora`` (``all-linear``: every linear layer but the head)."""
    from peft import LoraConfig

    lora = cfg.train.lora
    modules_to_save = lora.modules_to_save
    if modules_to_save is None:
        # A tokenizer trained from scratch means embeddings nobody has trained: an adapter on
        # top of random embeddings can barely move the loss, so those train fully.
        modules_to_save = ["embed_tokens", "lm_head"] if cfg.model.name_or_path is None else []
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
    )


def training_args(cfg, output_dir: str) -> dict[str, Any]:
    """The ``TrainingArguments`` every method shares, from ``train``: a method passes them to
    its TRL config (``SFTConfig(**args, ...)``) and adds its own.

    Args:
        cfg: the ``train`` and ``model`` sections.
        output_dir: scratch directory for the trainer; nothing is saved there (save_strategy=no).
    """
    import torch

    t = cfg.train
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        learning_rate=t.resolved_learning_rate(cfg.model),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,  # the first loss is the "before" point of the report
        include_num_input_tokens_seen="non_padding",
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        # TRL defaults to bf16 and gradient checkpointing; both only pay off on a GPU.
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=cuda,
        disable_tqdm=not progress.enabled(),
    )


def step_logger():
    """A callback that logs each loss line and moves the ``train-progress`` artifact, so the
    Prefect UI shows training move."""
    from transformers import TrainerCallback

    logger = progress.logger()

    class LogLoss(TrainerCallback):
        bar: progress.ProgressHandle | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress.progress_handle("train", f"training: 0/{state.max_steps} steps")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                step, total, loss = state.global_step, state.max_steps, logs["loss"]
                logger.info("train: step %d/%d loss %.4f", step, total, loss)
                if self.bar:
                    self.bar.update(
                        100 * step / max(total, 1),
                        f"training: {step}/{total} steps, loss {loss:.4f}",
                    )

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar:
                self.bar.update(100.0, f"trained: {state.global_step} steps")

    return LogLoss()


# -------------------------------------------------------------------------------- report


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    points = [(h["step"], h["loss"]) for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("train: loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(m: dict[str, Any]) -> str:
    """Steps, loss first to last, speed and trainable parameters."""
    model_name = m.get("model") or "tiny Llama"
    method = str(m.get("method", "sft")).upper()  # reports from before methods were named: SFT
    return "\n".join(
        [
            "## train",
            (
                f"LoRA {method} of `{model_name}`: {m['steps']} steps, {m['epochs']:.2f} epochs over "
                f"{m['train_rows']} rows ({m['train_sequences']} {'packed ' if m['packing'] else ''}sequences)."
            ),
            "",
            "| metric | value |",
            "|---|---|",
            f"| loss first → last | {m['first_loss']:.4f} → {m['last_loss']:.4f} |",
            f"| mean train loss | {m['train_loss']:.4f} |",
            f"| runtime | {m['runtime_s']:.1f} s |",
            f"| samples/s | {m['samples_per_s']:.2f} |",
            f"| trained tokens/s | {m['tokens_per_s']:.0f} ({m['trained_tokens']} tokens) |",
            (
                f"| trainable params | {m['trainable_params']:,} of {m['total_params']:,} "
                f"({m['trainable_share']:.2%}) |"
            ),
        ]
    )


# ------------------------------------------------------------------------------------ run


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Trains a LoRA adapter with ``train.method`` on the train split and saves it with its
    metrics.

    Args:
        inputs: ``[format artifact]`` (``tokenizer/``, ``splits/train.jsonl.gz``).
        cfg: the ``train`` and ``model`` sections decide the output.
        out: receives ``adapter/``, ``tokenizer/``, ``metrics.json``, ``log_history.json``,
            ``loss.png`` and the report.

    Raises:
        InputError: the train split is empty.
    """
    import datasets
    from transformers import PrinterCallback

    fmt = inputs[0]
    rows = load_split(fmt, "train")
    if not rows:
        raise InputError(
            f"train: the train split of format artifact {fmt.ref.short} is empty, nothing to learn; "
            "check the format report (split sizes, rejected records) and the stages before it"
        )
    tokenizer = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    model = load_base_model(cfg.model, tokenizer)
    method = METHODS[cfg.train.method.name]

    if not progress.enabled():
        datasets.disable_progress_bars()  # TRL's dataset preparation bars
    # A scratch dir, not the artifact: nothing the trainer might drop there should be published.
    with scratch_dir("train") as scratch:
        trainer = method.build_trainer(
            rows,
            cfg,
            model=model,
            tokenizer=tokenizer,
            args=training_args(cfg, str(scratch)),
            peft_config=lora_config(cfg),
            callbacks=[step_logger()],
        )
        if not progress.enabled():
            trainer.remove_callback(PrinterCallback)  # step_logger's lines instead of printed dicts
        result = trainer.train()

    trainer.model.save_pretrained(out.file("adapter"))
    tokenizer.save_pretrained(out.file("tokenizer"))

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    trainable, total = trainer.model.get_nb_trainable_parameters()
    runtime = result.metrics["train_runtime"]
    tokens = trainer.state.num_input_tokens_seen
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": result.global_step,
        "epochs": trainer.state.epoch,
        "runtime_s": runtime,
        "samples_per_s": result.metrics["train_samples_per_second"],
        "trained_tokens": tokens,
        "tokens_per_s": tokens / runtime if runtime else 0.0,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "train_rows": len(rows),
        "train_sequences": len(trainer.train_dataset),
        "packing": cfg.train.packing,
        "device": str(trainer.args.device),
    }
    out.file("metrics.json").write_text(json.dumps(metrics, indent=2))
    out.file("log_history.json").write_text(json.dumps(history, indent=2))
    plot_loss(history, out.file("loss.png"))

    out.report.update(metrics)
    out.report["method"] = cfg.train.method.name
    out.report["model"] = cfg.model.name_or_path or "tiny Llama"


def check_lengths_fit_model(cfg) -> None:
    """train.max_length must fit the tiny model's positions."""
    cfg.model.check_fits("train.max_length", cfg.train.max_length)


def highlights(report: dict[str, Any]) -> str:
    return f"train loss {report['train_loss']:.3f}" if "train_loss" in report else ""


STAGE = Stage(
    name="train",
    version=1,
    config=TrainConfig,
    run=run,
    summary=summary,
    inputs=("format",),
    uses=("model",),
    records=False,
    check=check_lengths_fit_model,
    highlights=highlights,
    description="TRL training with PEFT.",
)
