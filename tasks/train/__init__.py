"""train: fine-tunes the base on the format stage's train split.

The whole loop is ``fit``, readable in one sitting: take the train rows the method can use
(``tuneline.splits.rows_for_method``), load the tokenizer the splits were counted with and the
base model (a hub id, a local path or the seeded tiny Llama: one code path; 4-bit for qlora),
let the method build its TRL trainer (``train.method``: one module per method in this package:
``cpt``, ``sft``, ``dpo``, ``orpo``, ``kto``) with what trains (``train.adapter``, see
``adapters.py``), train (resuming from the last checkpoint a killed run left), and keep what
the later stages need: ``adapter/`` (PEFT ``save_pretrained``; ``model/`` when the model's own
weights train), ``tokenizer/``, ``metrics.json``, ``log_history.json``, ``curves.png`` (loss,
learning rate, grad norm, tokens/s, reward margin and accuracy) and ``loss.png``. With
``train.distributed`` the same ``fit`` runs in every process under ``accelerate launch``
(``distributed.py``).

A method module (``tasks/train/<method>.py``) defines ``CONFIG``, its config model
(``name: Literal["<method>"]`` plus its own settings), and ``build_trainer(rows, cfg, *, model,
tokenizer, args, peft_config, callbacks)``, which returns a ready transformers ``Trainer``;
``tasks/train/config.py`` finds it and adds it to ``train.method``; ``PACKS = False`` says the
method cannot pack (the stage then logs that ``train.packing`` is ignored). The other modules here
(``adapters``, ``merge``, ``plan``, ``distributed``, ``worker``) are not methods.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from tasks.train import adapters
from tasks.train.config import METHODS, LoraConfig, TrainConfig
from tuneline import progress
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import ConfigError, InputError, NonFiniteError
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import METHOD_ROWS, load_split, rows_for_method
from tuneline.stage import Stage

__all__ = ["METHODS", "STAGE", "LoraConfig", "TrainConfig", "lora_config", "run", "summary"]


# ------------------------------------------------------------------------- shared recipe


def lora_config(cfg):
    """PEFT config of ``train.adapter`` (None for full and hft); see ``adapters.peft_config``."""
    return adapters.peft_config(cfg)


def training_args(cfg, output_dir: str) -> dict[str, Any]:
    """The ``TrainingArguments`` every method shares, from ``train``: a method passes them to
    its TRL config (``SFTConfig(**args, ...)``) and adds its own.

    Args:
        cfg: the ``train`` and ``model`` sections.
        output_dir: where the trainer writes its resumable checkpoints (``checkpoint-<step>/``
            every ``train.checkpoint_steps``), outside the artifact.
    """
    import torch

    t = cfg.train
    cuda = torch.cuda.is_available()
    checkpointing = t.gradient_checkpointing if t.gradient_checkpointing is not None else cuda
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
        # The trainer's default hides NaN/inf step losses behind the window's mean: a diverged
        # run then logs a finite loss while its weights are NaN. Logged as they are, the first
        # one stops the run (nonfinite_guard).
        logging_nan_inf_filter=False,
        include_num_input_tokens_seen="non_padding",
        save_strategy="steps" if t.checkpoint_steps else "no",
        save_steps=t.checkpoint_steps or 500,
        save_total_limit=2,  # the last one resumes; the one before covers a kill mid-save
        report_to="none",
        use_cpu=not cuda,
        # TRL defaults to bf16 and gradient checkpointing; both only pay off on a GPU.
        bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=checkpointing,
        use_liger_kernel=t.liger_kernel,
        # Every trainable weight is in every forward pass, so DDP need not search the graph
        # for unused ones each step; hft's frozen half is unused by design, so it must.
        ddp_find_unused_parameters=t.adapter == "hft",
        disable_tqdm=not progress.enabled(),
    )


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir_for(store, key: str) -> Path:
    """Where a run keeps its resumable checkpoints until its artifact is committed: keyed by
    the artifact key, so the re-run of a killed run (same config, same inputs) finds them.
    Beside the store's staging folders (on local disk for a remote store), not in them."""
    return store.staging_base / ".checkpoints" / "train" / key


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` in ``directory``, or None.

    The trainer writes a checkpoint file by file and ``trainer_state.json`` last, so a
    checkpoint without it (the run was killed while saving) is skipped.
    """

    def complete(p: Path) -> bool:
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return False
        return p.name.removeprefix("checkpoint-").isdigit()

    done = [p for p in directory.glob("checkpoint-*") if complete(p)]
    return max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


def step_logger():
    """A callback that logs each loss line and moves the ``train-progress`` artifact, so the
    Prefect UI shows training move."""
    from transformers import TrainerCallback

    logger = progress.logger()

    class LogLoss(TrainerCallback):
        bar: progress.ProgressHandle | None = None

        t0 = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.monotonic()
            self.bar = progress.progress_handle("train", f"training: 0/{state.max_steps} steps")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.log_history and "loss" in state.log_history[-1]:
                # Wall time since training began, so the report can plot tokens/s.
                state.log_history[-1]["train_wall_s"] = round(time.monotonic() - self.t0, 3)
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


def diverged(what: str, cfg) -> NonFiniteError:
    """The error of a run whose loss or weights are no longer finite numbers.

    Args:
        what: what was seen, and where (``the training loss is nan at step 7 of 40``).
        cfg: the ``train`` and ``model`` sections (the learning rate the run used).
    """
    lr = cfg.train.resolved_learning_rate(cfg.model)
    return NonFiniteError(
        f"train: {what}: training diverged, and nothing is saved. The usual cause is a learning "
        f"rate too high for the model: this run used {lr:g} (train.learning_rate); lower it "
        "(10x is a start). If a lower rate diverges too, look for extreme rows in the train split "
        "(the format report's longest rows, a bad source)."
    )


def nonfinite_guard(cfg):
    """A callback that fails the run at the first logged loss that is NaN or infinite: every
    step after it trains NaN weights, and a checkpoint saved from them would resume NaN."""
    from transformers import TrainerCallback

    class StopOnNonFinite(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if isinstance(loss, float) and not math.isfinite(loss):
                step = f"step {state.global_step} of {state.max_steps}"
                raise diverged(f"the training loss is {loss} at {step}", cfg)

    return StopOnNonFinite()


def check_finite(trainer, result, cfg) -> None:
    """Raises ``NonFiniteError`` when the run's mean loss or any weight that trained is NaN or
    infinite, before anything is saved (a step the logs did not show can still break them).

    Args:
        trainer: the trainer, after ``train()``.
        result: what ``train()`` returned.
        cfg: the ``train`` and ``model`` sections.
    """
    import torch

    if not math.isfinite(result.training_loss):
        raise diverged(f"the mean training loss is {result.training_loss}", cfg)
    every = adapters.trains_full_weights(cfg)  # hft's halves take turns: check both
    for name, p in trainer.model.named_parameters():
        if (every or p.requires_grad) and p.is_floating_point() and p.numel():
            finite = torch.isfinite(p.detach())
            if not bool(finite.all()):
                share = 1 - finite.float().mean().item()
                raise diverged(f"{share:.0%} of weight {name} is NaN or infinite", cfg)


# -------------------------------------------------------------------------------- report

# What the curves show: every series the trainer logs that a reader of a run looks at, with
# the title of its panel. DPO, ORPO and KTO add their reward margins and accuracies.
CURVES = {
    "loss": "training loss",
    "learning_rate": "learning rate",
    "grad_norm": "grad norm",
    "tokens_per_s": "trained tokens/s",
    "rewards/margins": "reward margin (chosen - rejected)",
    "rewards/accuracies": "reward accuracy",
}


def with_speed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log history with ``tokens_per_s`` between consecutive loss lines (from the tokens
    seen and the wall time the trainer logs with each)."""
    out, prev = [], None
    for h in history:
        h = dict(h)
        if "loss" in h and "num_input_tokens_seen" in h and "train_wall_s" in h:
            if prev is not None and h["train_wall_s"] > prev["train_wall_s"]:
                h["tokens_per_s"] = (h["num_input_tokens_seen"] - prev["num_input_tokens_seen"]) / (
                    h["train_wall_s"] - prev["train_wall_s"]
                )
            prev = h
        out.append(h)
    return out


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> list[str]:
    """One PNG with a panel per logged series of ``CURVES`` against step; returns the series
    plotted."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    series = {
        key: [(h["step"], h[key]) for h in history if key in h and "step" in h]
        for key in CURVES
    }
    series = {k: v for k, v in series.items() if v}
    cols = 2
    rows = max(1, (len(series) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3 * rows), squeeze=False)
    for ax, (key, points) in zip(axes.flat, series.items(), strict=False):
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3)
        ax.set_title(CURVES[key], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return list(series)


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss against step, as a PNG (the first panel of ``curves.png`` on its own)."""
    plot_curves([{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h], path, "train: loss")


ADAPTER_NAMES = {
    "lora": "LoRA",
    "dora": "DoRA",
    "qlora": "QLoRA",
    "full": "full",
    "hft": "half (HFT)",
}


def summary(m: dict[str, Any]) -> str:
    """Steps, loss first to last, speed, trainable parameters and, for preference methods, the
    reward margin and accuracy first to last."""
    model_name = m.get("model") or "tiny Llama"
    method = str(m.get("method", "sft")).upper()  # reports from before methods were named: SFT
    adapter = ADAPTER_NAMES.get(m.get("adapter", "lora"), m.get("adapter"))
    lines = [
        "## train",
        (
            f"{adapter} {method} of `{model_name}`: {m['steps']} steps, {m['epochs']:.2f} epochs over "
            f"{m['train_rows']} rows ({m['train_sequences']} {'packed ' if m['packing'] else ''}sequences)."
        ),
    ]
    if m.get("resumed_from_step"):
        lines.append(f"Resumed from the checkpoint of step {m['resumed_from_step']}.")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| loss first → last | {m['first_loss']:.4f} → {m['last_loss']:.4f} |",
        f"| mean train loss | {m['train_loss']:.4f} |",
    ]
    for key, label in (("reward_margin", "reward margin"), ("reward_accuracy", "reward accuracy")):
        if key in m:
            first, last = m[key]
            lines.append(f"| {label} first → last | {first:.4f} → {last:.4f} |")
    lines += [
        f"| runtime | {m['runtime_s']:.1f} s |",
        f"| samples/s | {m['samples_per_s']:.2f} |",
        f"| trained tokens/s | {m['tokens_per_s']:.0f} ({m['trained_tokens']} tokens) |",
        (
            f"| trainable params | {m['trainable_params']:,} of {m['total_params']:,} "
            f"({m['trainable_share']:.2%}) |"
        ),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ run


def fit(fmt: Artifact, cfg, dest: Path, checkpoints: Path) -> dict[str, Any]:
    """Trains with ``train.method`` and ``train.adapter`` on the rows of the train split the
    method can use, and writes what later stages need into ``dest``. Under ``accelerate
    launch`` every process runs this and the main one writes.

    Args:
        fmt: the format artifact (``tokenizer/``, ``splits/train.jsonl.gz``).
        cfg: the ``train`` and ``model`` sections decide the output.
        dest: receives ``adapter/`` (or ``model/`` for full and hft), ``tokenizer/``,
            ``metrics.json``, ``log_history.json``, ``curves.png`` and ``loss.png``.
        checkpoints: where resumable checkpoints go; a complete one found there is resumed.

    Returns:
        The report: the metrics, the method, the adapter and the model.

    Raises:
        InputError: the train split holds no row the method can use.
        NonFiniteError: a logged loss, the mean loss or a trained weight is NaN or infinite.
    """
    import datasets
    from transformers import PrinterCallback

    name = cfg.train.method.name
    all_rows = load_split(fmt, "train")
    if not all_rows:
        raise InputError(
            f"train: the train split of format artifact {fmt.ref.short} is empty, nothing to learn; "
            "check the format report (split sizes, rejected records) and the stages before it"
        )
    rows = rows_for_method(name, all_rows)
    if not rows:
        kinds = ", ".join(METHOD_ROWS.get(name, ())) or "?"
        raise InputError(
            f"train: method {name} trains on {kinds} rows, and the train split of format artifact "
            f"{fmt.ref.short} has none of its {len(all_rows)} rows; check the format report "
            "(rows per method), or choose another train.method"
        )
    tokenizer = load_tokenizer(cfg.model, fmt.path / "tokenizer")
    model = adapters.prepare(load_base_model(cfg.model, tokenizer, **adapters.base_model_kwargs(cfg)), cfg)
    callbacks = [step_logger(), nonfinite_guard(cfg)]  # the loss line is logged, then judged
    if cfg.train.adapter == "hft":
        callbacks.append(adapters.hft_callback(cfg, model))

    if cfg.train.packing and not getattr(METHODS[name], "PACKS", True):
        progress.logger().info("train: %s does not pack; train.packing is ignored", name)
    if not progress.enabled():
        datasets.disable_progress_bars()  # TRL's dataset preparation bars
    trainer = METHODS[name].build_trainer(
        rows,
        cfg,
        model=model,
        tokenizer=tokenizer,
        args=training_args(cfg, str(checkpoints)),
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )
    if not progress.enabled():
        trainer.remove_callback(PrinterCallback)  # step_logger's lines instead of printed dicts
    resume = last_checkpoint(checkpoints)
    if resume is not None:
        progress.logger().info("train: resuming from %s", resume.name)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    check_finite(trainer, result, cfg)

    history = with_speed(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    trainable, total = count_parameters(trainer.model, cfg)
    runtime = result.metrics["train_runtime"]
    tokens = trainer.state.num_input_tokens_seen
    report: dict[str, Any] = {
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
        "split_rows": len(all_rows),
        "train_sequences": len(trainer.train_dataset),
        "packing": cfg.train.packing,
        "device": str(trainer.args.device),
        "processes": trainer.args.world_size,
        "resumed_from_step": int(resume.name.removeprefix("checkpoint-")) if resume else 0,
        "method": name,
        "adapter": cfg.train.adapter,
        "model": cfg.model.name_or_path or "tiny Llama",
    }
    for key, out_key in (("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy")):
        seen = [h[key] for h in history if key in h]
        if seen:
            report[out_key] = [seen[0], seen[-1]]
    weights = dest / ("model" if adapters.trains_full_weights(cfg) else "adapter")
    if trainer.is_fsdp_enabled:
        # Gathering the sharded weights is a collective: every process takes part, and the
        # trainer writes them (FULL_STATE_DICT) from the main one only.
        trainer.save_model(str(weights))
    if not trainer.is_world_process_zero():
        return report
    if trainer.is_fsdp_enabled:
        (weights / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody needs
    else:
        trainer.model.save_pretrained(weights)
    tokenizer.save_pretrained(dest / "tokenizer")
    (dest / "log_history.json").write_text(json.dumps(history, indent=2))
    report["curves"] = plot_curves(history, dest / "curves.png", f"train: {name} ({cfg.train.adapter})")
    plot_loss(history, dest / "loss.png")
    (dest / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def count_parameters(model, cfg) -> tuple[int, int]:
    """(trainable, total) parameters; for hft, trainable counts both halves (each trains in
    its rounds)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    if adapters.trains_full_weights(cfg):
        return total, total
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Trains on the train split (in this process, or in ``train.distributed.num_processes``
    processes under ``accelerate launch``) and saves the result with its metrics.

    Args:
        inputs: ``[format artifact]`` (``tokenizer/``, ``splits/train.jsonl.gz``).
        cfg: the ``train`` and ``model`` sections decide the output.
        out: receives what ``fit`` writes and the report.

    Raises:
        InputError: the train split holds no row the method can use.
        NonFiniteError: training diverged (NaN or infinite loss or weights).
    """
    fmt = inputs[0]
    checkpoints = checkpoint_dir_for(out.store, out.key)
    checkpoints.mkdir(parents=True, exist_ok=True)
    if cfg.train.distributed.num_processes > 1:
        from tasks.train import distributed

        report = distributed.launch(fmt, cfg, out.path, checkpoints)
    else:
        report = fit(fmt, cfg, out.path, checkpoints)
    out.report.update(report)
    # Checkpoints live until the artifact they lead to is committed; after that they are
    # dead weight (gigabytes for a real model).
    out.on_commit(lambda: shutil.rmtree(checkpoints, ignore_errors=True))


def check_train_config(cfg) -> None:
    """train.max_length must fit the tiny model's positions; what needs CUDA has it here."""
    cfg.model.check_fits("train.max_length", cfg.train.max_length)
    adapters.check_runs_here(cfg)


def preflight(cfg) -> None:
    """Before the first stage that trains: FSDP has GPUs here. Not in ``check`` (validation):
    FSDP configs are written and validated on machines without GPUs for those that have them
    (`tuneline config`, `accelerate-config`, deployments), and a run that stops before train
    needs none."""
    import torch

    if cfg.train.distributed.strategy == "fsdp" and not torch.cuda.is_available():
        raise ConfigError(
            "train.distributed.strategy is fsdp, which accelerate launches on CUDA GPUs only, and "
            "this machine has none: use strategy: ddp here (CPU processes over gloo), or run the "
            "train stage on a GPU machine"
        )


def headline(report: dict[str, Any]) -> dict[str, float]:
    """Followed from run to run: the mean and last training loss, and trained tokens/s."""
    return {k: report[k] for k in ("train_loss", "last_loss", "tokens_per_s")}


def highlights(report: dict[str, Any]) -> str:
    return f"train loss {report['train_loss']:.3f}" if "train_loss" in report else ""


STAGE = Stage(
    name="train",
    version=2,
    config=TrainConfig,
    run=run,
    summary=summary,
    inputs=("format",),
    uses=("model",),
    records=False,
    check=check_train_config,
    preflight=preflight,
    highlights=highlights,
    headline=headline,
    description="TRL training with PEFT.",
)
