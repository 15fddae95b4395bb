"""lm-evaluation-harness benchmarks for the evaluate stage, on local models and local data only.

``run_harness`` runs ``lm_eval.simple_evaluate`` with the ``hf`` backend (``HFLM``) on:

- an in-memory model (the tiny Llama, or base + adapter as a ``PeftModel`` from
  ``load_trained``): wrapped as ``HFLM(pretrained=model, tokenizer=tokenizer)``;
- a local model folder (a merged model, or a base with ``peft=<adapter dir>``): loaded by HFLM.

Tasks are lm-eval task YAMLs found in ``HarnessConfig.task_dirs``; their data is local
(``dataset_path: json`` + ``dataset_kwargs: {data_files: ...}``), and a relative data file is
read from the YAML's own folder, so a task folder can be moved as a whole. The run is offline:
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are set while it runs, and lm-eval's built-in
tasks (which download their data from the hub) are only indexed when ``builtin_tasks`` is on.

lm-eval is imported inside the functions (it is heavy and, where installed without it, absent).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from tuneline.errors import ConfigError, InputError
from tuneline.sections import SEED_MAX, Section

# Environment that keeps transformers, datasets and the hub client off the network.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class HarnessConfig(Section):
    tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval task (or group/tag) names to run, as named in the task YAMLs.",
    )
    task_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders of lm-eval task YAMLs over local data files "
        "(`dataset_path: json`, `dataset_kwargs: {data_files: ...}`; relative paths are read "
        "from the YAML's folder).",
    )
    builtin_tasks: bool = Field(
        default=False,
        description="Also look tasks up among lm-eval's built-in tasks; they fetch their data "
        "from the Hugging Face hub, so this needs the network or a filled HF datasets cache.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="At most this many examples per task (null: all)."
    )
    batch_size: int = Field(default=8, ge=1, description="Requests per forward pass.")
    num_fewshot: int | None = Field(
        default=None, ge=0, description="Few-shot examples per prompt (null: each task's own)."
    )
    bootstrap_iters: int = Field(
        default=1000,
        ge=0,
        description="Bootstrap resamples for the standard errors of non-mean metrics "
        "(0: no standard errors at all).",
    )
    seed: int = Field(
        default=1234,
        ge=0,
        le=SEED_MAX,
        description="Seed for few-shot sampling and the model RNGs.",
    )


# ------------------------------------------------------------------------------ the tasks


def task_manager(settings: HarnessConfig):
    """An lm-eval ``TaskManager`` indexing ``settings.task_dirs`` (and built-ins when asked).

    Args:
        settings: the harness section.

    Raises:
        InputError: a task folder does not exist.
    """
    from lm_eval.tasks import TaskManager

    for folder in settings.task_dirs:
        if not Path(folder).is_dir():
            raise InputError(
                f"evaluate.harness.task_dirs: {str(folder)!r} is not a folder; point it at a "
                "folder of lm-eval task YAMLs"
            )
    return TaskManager(
        include_path=[str(p) for p in settings.task_dirs] or None,
        include_defaults=settings.builtin_tasks,
    )


def _searched(settings: HarnessConfig) -> str:
    dirs = [str(p) for p in settings.task_dirs] or ["(no task_dirs)"]
    return ", ".join(dirs) + (" and lm-eval's built-in tasks" if settings.builtin_tasks else "")


def resolve_data_files(name: str, cfg: dict[str, Any], yaml_dir: Path) -> dict[str, Any]:
    """``cfg`` with relative ``dataset_kwargs.data_files`` made absolute against ``yaml_dir``.

    datasets reads a relative data file from the working directory, which would tie a task
    folder to wherever the pipeline is started; the YAML's own folder is what its author meant.

    Args:
        name: the task name (for the error).
        cfg: the task's YAML config, includes resolved.
        yaml_dir: the folder of the task's YAML.

    Raises:
        InputError: a data file does not exist.
    """
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    files = kwargs.get("data_files")
    if files is None:
        return cfg

    def fix(path: str) -> str:
        p = Path(path).expanduser()
        p = p if p.is_absolute() else yaml_dir / p
        # A glob or a URL is datasets' business; a plain missing file is the user's.
        if "://" not in path and not any(c in path for c in "*?[") and not p.exists():
            raise InputError(
                f"evaluate.harness: task {name!r} reads the data file {path!r}, not found at {p} "
                f"(relative paths are read from the task YAML's folder {yaml_dir}); "
                "fix dataset_kwargs.data_files in its YAML"
            )
        return path if "://" in path else str(p)

    if isinstance(files, str):
        files = fix(files)
    elif isinstance(files, list):
        files = [fix(f) for f in files]
    elif isinstance(files, dict):
        files = {
            split: fix(f) if isinstance(f, str) else [fix(x) for x in f]
            for split, f in files.items()
        }
    kwargs["data_files"] = files
    return {**cfg, "dataset_kwargs": kwargs}


def task_specs(settings: HarnessConfig, manager) -> list[str | dict[str, Any]]:
    """What to hand ``simple_evaluate``: a task's full config (data files resolved) for a
    single task from a YAML, the name for a group or tag.

    Args:
        settings: the harness section (task names, folders searched).
        manager: from :func:`task_manager`.

    Raises:
        InputError: no task is named, or a name is not in the index.
    """
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    if not settings.tasks:
        raise InputError(
            "evaluate.harness.tasks is empty; name at least one lm-eval task from "
            + _searched(settings)
        )
    index = manager.task_index
    specs: list[str | dict[str, Any]] = []
    for name in settings.tasks:
        entry = index.get(name)
        if entry is None:
            known = sorted(index)[:20]
            raise InputError(
                f"evaluate.harness.tasks: unknown task {name!r}; searched {_searched(settings)}; "
                f"known there: {', '.join(known) or 'none'}"
                + (" ..." if len(index) > len(known) else "")
            )
        if entry.kind == Kind.TASK and entry.yaml_path is not None:
            cfg = load_yaml(entry.yaml_path, resolve_func=True)
            specs.append(resolve_data_files(name, cfg, Path(entry.yaml_path).parent))
        else:
            specs.append(name)
    return specs


def check_tasks(settings: HarnessConfig) -> None:
    """What the harness will read exists: lm-eval, the task folders, every named task and its
    local data files (the stage's preflight, before the first stage runs).

    Raises:
        ConfigError: lm-eval is not installed.
        InputError: as ``task_manager`` and ``task_specs`` raise them.
    """
    if importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(
            "evaluate.harness needs lm-evaluation-harness: pip install lm-eval (or remove "
            "evaluate.harness)"
        )
    task_specs(settings, task_manager(settings))


# ------------------------------------------------------------------------------ the model


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Sets the hub/datasets offline switches for the block, then restores the environment.

    datasets and huggingface_hub read the variables once, when imported, so their
    module-level flags are switched too (importing them here if need be).
    """
    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    flags = []
    for module_name in ("datasets.config", "huggingface_hub.constants"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)
            for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
                if hasattr(module, attr):
                    flags.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in flags:
            setattr(module, attr, value)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def harness_lm(model, tokenizer, settings: HarnessConfig, peft: str | Path | None = None):
    """The lm-eval ``HFLM`` for a model object or a local model folder.

    Args:
        model: a ``PreTrainedModel`` / ``PeftModel`` in memory, or a local model folder.
        tokenizer: the tokenizer object (or its folder).
        settings: batch size.
        peft: an adapter folder put on ``model`` by HFLM (folder models only; an in-memory
            model carries its adapter already, as a ``PeftModel``).

    Raises:
        InputError: the folder or adapter does not exist, or ``peft`` is given with an object.
    """
    import torch
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, Path)):
        if not Path(model).is_dir():
            raise InputError(
                f"evaluate.harness: model folder {str(model)!r} not found; pass a local model "
                "folder (no hub downloads here) or the model object"
            )
        if peft is not None and not Path(peft).is_dir():
            raise InputError(
                f"evaluate.harness: adapter folder {str(peft)!r} not found; pass the train "
                "artifact's adapter/ folder"
            )
        return HFLM(
            pretrained=str(model),
            tokenizer=tokenizer,
            peft=str(peft) if peft is not None else None,
            device="cuda" if torch.cuda.is_available() else "cpu",
            batch_size=settings.batch_size,
        )
    if peft is not None:
        raise InputError(
            "evaluate.harness: peft= applies to a model folder; an in-memory model must carry "
            "its adapter already (a PeftModel, as load_trained returns it)"
        )
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)


# ------------------------------------------------------------------------------ results


def _number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN, inf and lm-eval's "N/A" become None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def tidy_results(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-task metrics from ``simple_evaluate``'s output, JSON-safe.

    ``{"acc,none": 0.3, "acc_stderr,none": 0.15, "alias": ...}`` becomes ``{"acc": 0.3,
    "acc_stderr": 0.15, "n_samples": 10}``; a filter other than ``none`` keeps its name
    (``exact_match,strict-match`` -> ``exact_match/strict-match``).

    Args:
        raw: the dict ``lm_eval.simple_evaluate`` returned.
    """
    counts = raw.get("n-samples", {})
    out: dict[str, dict[str, Any]] = {}
    for task, metrics in raw.get("results", {}).items():
        row: dict[str, Any] = {}
        for key, value in metrics.items():
            if "," not in key:  # "alias", "name": labels, not metrics
                continue
            metric, flt = key.split(",", 1)
            row[metric if flt == "none" else f"{metric}/{flt}"] = _number(value)
        n = counts.get(task, {})
        if n:
            row["n_samples"] = int(n.get("effective", n.get("original", 0)))
        out[task] = row
    return out


def run_harness(
    model, tokenizer, settings: HarnessConfig, peft: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """Runs the configured lm-eval tasks on one model, offline; per-task metrics.

    Args:
        model: a model object (the tiny Llama, a ``PeftModel``, a base with its adapter
            disabled) or a local model folder (a merged model, or a base with ``peft``).
        tokenizer: the tokenizer object (or folder) the model was trained with.
        settings: tasks, task folders, limit, batch size, few-shot count.
        peft: an adapter folder for a folder ``model``.

    Returns:
        ``{task: {"acc": ..., "acc_stderr": ..., "acc_norm": ..., "n_samples": N}}``.

    Raises:
        InputError: an unknown task (naming the folders searched), a missing data file or
            model folder.
    """
    import lm_eval

    manager = task_manager(settings)
    specs = task_specs(settings, manager)
    with offline():
        lm = harness_lm(model, tokenizer, settings, peft)
        raw = lm_eval.simple_evaluate(
            model=lm,
            tasks=specs,
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            task_manager=manager,
            bootstrap_iters=settings.bootstrap_iters,
            log_samples=False,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
        )
    if raw is None:  # only ranks other than 0 of a distributed run get None
        return {}
    return tidy_results(raw)
