"""merge: combines LoRA adapters trained on one base into one adapter or one standalone model.

This is a step of its own, run alone (``tuneline merge``), not a pipeline stage and not a
training method: it defines neither ``CONFIG`` nor ``build_trainer``, so ``tasks/train/config.py``
skips it.

The work is PEFT's ``add_weighted_adapter``: the base is loaded once (``load_base_model``: a hub
id/path, or the seeded tiny Llama, which the same seed rebuilds exactly), every adapter is loaded
into one ``PeftModel`` as ``a0``, ``a1``, ..., they are combined into ``merged`` and that one is
either merged into the base weights and unloaded (a standalone model, ``model/``, saved with
``save_pretrained`` as safetensors) or saved as an adapter (``adapter/``). The tokenizer goes to
``tokenizer/`` and ``merge.json`` records the settings, the inputs and their sha256.

What each combination computes, with ``s_i`` the adapter's scale (``lora_alpha / r``) and
``dW_i = s_i * B_i A_i`` its update:

- ``cat`` (the default): stacks the adapters' ranks (rank ``sum r_i``), so the update is exactly
  ``sum w_i dW_i`` for any ranks. Exact, and costs only a bigger rank.
- ``linear``: averages the factors, ``(sum sqrt(w_i s_i) B_i)(sum sqrt(w_i s_i) A_i)``: cross
  terms ``B_i A_j`` make it only an approximation of ``sum w_i dW_i``; needs equal ranks.
- ``svd``: ``sum w_i dW_i`` truncated to ``svd_rank`` (default: the largest rank) by SVD.
- ``ties``, ``dare_linear``, ``dare_ties``, ``magnitude_prune``: task-arithmetic methods that
  prune (``density``: the share kept; DARE prunes at random, seeded by ``seed``) and, for the
  TIES ones, resolve sign conflicts (``majority_sign_method``) on the A and B factors; need equal
  ranks. Their ``_svd`` variants apply the same to the full updates ``dW_i``, then truncate by SVD.

Fully trained modules (``modules_to_save``; the tiny model's adapters train ``embed_tokens`` and
``lm_head`` this way) cannot be combined: PEFT refuses two adapters that share one, and for a
single adapter the combined adapter gets a fresh copy of the *untrained* base module, silently
dropping the trained one. Such adapters are refused with an error that says so.

The output is written atomically: it is built in a hidden folder next to ``out_dir`` and renamed
into place at the end, so a failure leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tuneline.errors import ConfigError, InputError
from tuneline.sections import ModelConfig, Section

__all__ = [
    "COMBINATIONS",
    "AdapterSource",
    "MergeConfig",
    "merge_adapters",
    "merge_settings",
    "resolve_adapter",
]

Combination = Literal[
    "cat",
    "linear",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
]
COMBINATIONS: tuple[str, ...] = Combination.__args__  # type: ignore[attr-defined]
# PEFT combines A and B factor by factor for these: the ranks must match.
SAME_RANK = frozenset({"linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"})
PRUNING = frozenset(c for c in COMBINATIONS if c.startswith(("ties", "dare", "magnitude")))
SIGN_ELECTING = frozenset({"ties", "ties_svd", "dare_ties", "dare_ties_svd"})
SVD = frozenset(c for c in COMBINATIONS if c.endswith("svd"))
MERGED = "merged"  # the combined adapter's name in the PeftModel
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


# ------------------------------------------------------------------------------ adapters


@dataclass(frozen=True)
class AdapterSource:
    """One input adapter: where it was given, the folder with its files, and its train artifact."""

    given: Path
    adapter_dir: Path  # holds adapter_config.json and the weights
    artifact_dir: Path | None  # the train artifact around it (tokenizer/, manifest.json), if any
    config: dict[str, Any]  # adapter_config.json

    @property
    def weights_file(self) -> Path:
        for name in WEIGHT_FILES:
            if (self.adapter_dir / name).is_file():
                return self.adapter_dir / name
        raise InputError(f"merge: adapter {self.given} has no {' or '.join(WEIGHT_FILES)}")

    @property
    def rank(self) -> int:
        """The largest rank of the adapter (``r``, or its ``rank_pattern``'s largest)."""
        pattern = self.config.get("rank_pattern") or {}
        return max([int(self.config.get("r", 8)), *map(int, pattern.values())])

    @property
    def tokenizer_dir(self) -> Path | None:
        if self.artifact_dir is not None and (self.artifact_dir / "tokenizer").is_dir():
            return self.artifact_dir / "tokenizer"
        return None

    def manifest_model(self) -> dict[str, Any] | None:
        """The ``model`` section the train artifact was keyed with, when it has a manifest."""
        if self.artifact_dir is None:
            return None
        try:
            manifest = json.loads((self.artifact_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        model = (manifest.get("config") or {}).get("model")
        return model if isinstance(model, dict) else None


def resolve_adapter(path: str | os.PathLike) -> AdapterSource:
    """The adapter at ``path``: an adapter folder (with ``adapter_config.json``), a train
    artifact folder holding ``adapter/``, or a train artifact's key folder
    (``<root>/train/<key>``, whose ``current.json`` names the generation to read).

    Raises:
        InputError: neither, or an adapter this step cannot combine (not LoRA, DoRA, fully
            trained ``modules_to_save``, ``target_parameters``).
    """
    given = Path(path)
    pointer = given / "current.json"  # a train artifact's key folder: its current generation
    if pointer.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            given = given / json.loads(pointer.read_text())["generation"]
    if (given / "adapter_config.json").is_file():
        adapter_dir, artifact_dir = given, given.parent
    elif (given / "adapter" / "adapter_config.json").is_file():
        adapter_dir, artifact_dir = given / "adapter", given
    else:
        what = (
            "does not exist"
            if not given.exists()
            else "holds no adapter_config.json nor adapter/adapter_config.json"
        )
        raise InputError(
            f"merge: adapter {given} {what}; give a PEFT adapter folder or a train artifact folder"
        )
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"merge: adapter {given}: cannot read adapter_config.json ({e})") from None
    if not isinstance(config, dict):
        raise InputError(f"merge: adapter {given}: adapter_config.json is not a mapping")
    if config.get("peft_type", "LORA") != "LORA":
        raise InputError(
            f"merge: adapter {given} is a {config['peft_type']} adapter; only LoRA adapters merge"
        )
    if config.get("use_dora"):
        raise InputError(
            f"merge: adapter {given} is a DoRA adapter; add_weighted_adapter does not combine DoRA's "
            "magnitude vectors, so the result would be wrong"
        )
    if config.get("target_parameters"):
        raise InputError(
            f"merge: adapter {given} targets parameters (target_parameters); PEFT cannot combine those"
        )
    if config.get("modules_to_save"):
        raise InputError(
            f"merge: adapter {given} trains {', '.join(config['modules_to_save'])} fully (modules_to_save); "
            "PEFT's add_weighted_adapter cannot combine fully trained modules (it refuses two adapters "
            "that share one, and for one adapter it would silently use the untrained base module). "
            "Train the adapters with train.lora.modules_to_save: [] to merge them, or export a single "
            "adapter as it is"
        )
    if (artifact_dir / "manifest.json").is_file() or (artifact_dir / "tokenizer").is_dir():
        return AdapterSource(given, adapter_dir, artifact_dir, config)
    return AdapterSource(given, adapter_dir, None, config)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ settings


class MergeConfig(Section):
    """Settings of ``tuneline merge``: which adapters, how to combine them, what to write."""

    adapters: list[Path] = Field(
        min_length=1,
        description="Adapters to combine, all trained on the same base: each a PEFT adapter folder "
        "(with adapter_config.json) or a train artifact folder (with adapter/ and tokenizer/).",
    )
    weights: list[float] | None = Field(
        default=None,
        description="One weight per adapter, in order (negative subtracts); empty: 1.0 each.",
    )
    combination: Combination = Field(
        default="cat",
        description="PEFT add_weighted_adapter combination_type. cat (default) is exact for any "
        "ranks: the result is the weighted sum of the adapters' updates, at rank sum(r). linear "
        "averages the A and B factors (an approximation with cross terms) and needs equal ranks; "
        "svd truncates the exact sum to svd_rank; ties, dare_linear, dare_ties, magnitude_prune "
        "(equal ranks) and their _svd variants prune with density.",
    )
    density: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of values kept by ties, dare_* and magnitude_prune* (required for "
        "those, refused for the others).",
    )
    majority_sign_method: Literal["total", "frequency"] = Field(
        default="total",
        description="How ties and dare_ties (and their _svd variants) elect each value's sign: "
        "by total magnitude or by count.",
    )
    svd_rank: int | None = Field(
        default=None,
        ge=1,
        description="Rank of the result of the *_svd combinations; empty: the largest input rank.",
    )
    seed: int = Field(
        default=0, description="Seed of DARE's random pruning, so a merge repeats exactly."
    )
    unload: bool = Field(
        default=True,
        description="Write a standalone model (the combination merged into the base weights, "
        "model/); false: write the combined adapter only (adapter/).",
    )

    @field_validator("adapters")
    @classmethod
    def check_adapters_exist(cls, adapters: list[Path]) -> list[Path]:
        for path in adapters:
            resolve_adapter(path)  # raises, naming the adapter and the problem
        return adapters

    @model_validator(mode="after")
    def check_one_weight_per_adapter(self) -> MergeConfig:
        if self.weights is not None and len(self.weights) != len(self.adapters):
            raise ValueError(
                f"weights has {len(self.weights)} values for {len(self.adapters)} adapters; "
                "give one weight per adapter, in order"
            )
        return self

    @model_validator(mode="after")
    def check_density_fits_combination(self) -> MergeConfig:
        if self.combination in PRUNING and self.density is None:
            raise ValueError(
                f"combination {self.combination} prunes: set density (0 < density <= 1, the share kept)"
            )
        if self.combination not in PRUNING and self.density is not None:
            raise ValueError(
                f"density only applies to {', '.join(sorted(PRUNING))}; combination {self.combination} does not prune"
            )
        if (
            "majority_sign_method" in self.model_fields_set
            and self.combination not in SIGN_ELECTING
        ):
            raise ValueError(
                f"majority_sign_method only applies to {', '.join(sorted(SIGN_ELECTING))}, not {self.combination}"
            )
        if self.svd_rank is not None and self.combination not in SVD:
            raise ValueError(
                f"svd_rank only applies to {', '.join(sorted(SVD))}, not {self.combination}"
            )
        return self

    @model_validator(mode="after")
    def check_equal_ranks(self) -> MergeConfig:
        if self.combination not in SAME_RANK or len(self.adapters) < 2:
            return self
        ranks = {str(p): resolve_adapter(p).rank for p in self.adapters}
        if len(set(ranks.values())) > 1:
            listed = ", ".join(f"{p} (r={r})" for p, r in ranks.items())
            raise ValueError(
                f"combination {self.combination} needs adapters of equal rank, got {listed}; "
                "use cat (exact, rank is the sum) or svd (exact sum truncated to svd_rank)"
            )
        return self

    def resolved_weights(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [1.0] * len(self.adapters)


def merge_settings(data: dict[str, Any]) -> MergeConfig:
    """``MergeConfig`` from CLI options, or a ``ConfigError`` listing every bad field."""
    try:
        return MergeConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(settings)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("invalid merge settings:\n" + "\n".join(lines)) from None


# ------------------------------------------------------------------------- same base check


def _base_identity(model: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``model`` section that decides the base weights."""
    if model.get("name_or_path"):
        return {"name_or_path": model["name_or_path"], "revision": model.get("revision")}
    return {"name_or_path": None, "tiny": model.get("tiny")}


def check_same_base(sources: list[AdapterSource], model_cfg: ModelConfig) -> None:
    """Raises InputError when the adapters were not all trained on the base ``model_cfg`` builds:
    their ``base_model_name_or_path`` differ, or their train artifacts' ``model`` sections do
    (for the tiny model, its dimensions and seed), or their tokenizers' vocabularies do."""
    names = {str(s.given): s.config.get("base_model_name_or_path") or None for s in sources}
    if len(set(names.values())) > 1:
        listed = ", ".join(f"{p} ({n or 'tiny Llama/unnamed'})" for p, n in names.items())
        raise InputError(f"merge: the adapters were trained on different bases: {listed}")
    trained_on = next(iter(names.values()))
    if model_cfg.name_or_path and trained_on and trained_on != model_cfg.name_or_path:
        raise InputError(
            f"merge: the adapters were trained on {trained_on}, but model.name_or_path is "
            f"{model_cfg.name_or_path}; set model.name_or_path to the adapters' base"
        )
    if not model_cfg.name_or_path and trained_on:
        raise InputError(
            f"merge: the adapters were trained on {trained_on}, but the config builds the tiny "
            "Llama (model.name_or_path is empty); set model.name_or_path to the adapters' base"
        )
    want = _base_identity(model_cfg.model_dump(mode="json"))
    for s in sources:
        model = s.manifest_model()
        if model is not None and _base_identity(model) != want:
            raise InputError(
                f"merge: adapter {s.given} was trained on base {_base_identity(model)}, "
                f"not on the configured {want}; merge only adapters of one base"
            )
    vocabs = {}
    for s in sources:
        if s.tokenizer_dir is not None:
            from transformers import AutoTokenizer

            vocabs[str(s.given)] = AutoTokenizer.from_pretrained(str(s.tokenizer_dir)).get_vocab()
    if len({json.dumps(v, sort_keys=True) for v in vocabs.values()}) > 1:
        sizes = ", ".join(f"{p} ({len(v)} tokens)" for p, v in vocabs.items())
        raise InputError(
            f"merge: the adapters' tokenizers differ: {sizes}; they were trained on different bases"
        )


def check_shapes(source: AdapterSource, base) -> None:
    """Raises InputError when an adapter's tensors do not fit ``base`` (another architecture,
    width or vocabulary)."""
    if source.weights_file.suffix != ".safetensors":
        return
    from safetensors import safe_open

    problems = []
    try:
        with safe_open(str(source.weights_file), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise InputError(
            f"merge: cannot read adapter {source.given}: {source.weights_file.name}: {e}"
        ) from e
    for key, shape in shapes.items():
        module_path, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        try:
            module = base.get_submodule(module_path)
        except AttributeError:
            problems.append(f"{key}: the base has no module {module_path}")
            continue
        inp, out = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if kind == "A.weight" and inp is not None and shape[-1] != inp:
            problems.append(
                f"{key}: shape {list(shape)}, the base's {module_path} takes {inp} inputs"
            )
        if kind == "B.weight" and out is not None and shape[0] != out:
            problems.append(
                f"{key}: shape {list(shape)}, the base's {module_path} gives {out} outputs"
            )
    if problems:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise InputError(f"merge: adapter {source.given} does not fit the base model: {shown}")


# ----------------------------------------------------------------------------------- merge


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"merge: output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(
            f"merge: output folder {out_dir} is not empty; choose another or pass overwrite"
        )


def _publish(tmp: Path, out_dir: Path) -> None:
    """Moves the finished ``tmp`` to ``out_dir``, replacing what is there in two renames."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def merge_adapters(
    settings: MergeConfig,
    model_cfg: ModelConfig,
    out_dir: str | os.PathLike,
    tokenizer_path: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Combines ``settings.adapters`` on the base ``model_cfg`` builds and writes the result.

    Args:
        settings: the adapters, weights and combination.
        model_cfg: the ``model`` section the adapters were trained with (the base).
        out_dir: receives ``model/`` (``settings.unload``) or ``adapter/``, ``tokenizer/`` and
            ``merge.json``; written atomically.
        tokenizer_path: the tokenizer folder; default the first adapter's train artifact
            ``tokenizer/``, else the base model's own (a hub id/path).
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        What ``merge.json`` holds: settings, base, inputs (with sha256 of their weights), output.

    Raises:
        InputError: unusable adapters, adapters of different bases, no tokenizer for the tiny
            model, or a non-empty ``out_dir`` without ``overwrite``.
    """
    import peft
    import torch
    from peft import PeftModel

    from tuneline import progress
    from tuneline.models import load_base_model, load_tokenizer

    if not progress.enabled():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' loading and saving bars
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    sources = [resolve_adapter(p) for p in settings.adapters]
    weights = settings.resolved_weights()
    check_same_base(sources, model_cfg)

    if tokenizer_path is None:
        tokenizer_path = next(
            (s.tokenizer_dir for s in sources if s.tokenizer_dir is not None), None
        )
    if tokenizer_path is None and model_cfg.name_or_path is None:
        raise InputError(
            "merge: the tiny model's tokenizer is trained by the format stage: give train artifact "
            "folders (with tokenizer/) or a tokenizer path"
        )
    tokenizer = load_tokenizer(model_cfg, tokenizer_path)
    base = load_base_model(model_cfg, tokenizer)
    for s in sources:
        check_shapes(s, base)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        names = [f"a{i}" for i in range(len(sources))]
        model = None
        for name, s in zip(names, sources, strict=True):
            try:
                if model is None:
                    model = PeftModel.from_pretrained(base, str(s.adapter_dir), adapter_name=name)
                else:
                    model.load_adapter(str(s.adapter_dir), adapter_name=name)
            except Exception as e:
                raise InputError(f"merge: cannot load adapter {s.given}: {e}") from e
        assert model is not None
        kwargs: dict[str, Any] = {}
        if settings.combination in PRUNING:
            kwargs["density"] = settings.density
        if settings.combination in SIGN_ELECTING:
            kwargs["majority_sign_method"] = settings.majority_sign_method
        if settings.combination in SVD:
            kwargs["svd_rank"] = settings.svd_rank
        with torch.random.fork_rng():
            torch.manual_seed(settings.seed)  # DARE prunes at random
            model.add_weighted_adapter(
                names, weights, MERGED, combination_type=settings.combination, **kwargs
            )
        model.set_adapter(MERGED)
        merged_rank = model.peft_config[MERGED].r

        if settings.unload:
            for name in names:
                model.delete_adapter(name)
            standalone = model.merge_and_unload()
            standalone.save_pretrained(tmp / "model", safe_serialization=True)
            output = "model"
        else:
            model.save_pretrained(
                tmp / "adapter", selected_adapters=[MERGED], safe_serialization=True
            )
            # save_pretrained puts a non-default adapter in a subfolder named after it.
            nested = tmp / "adapter" / MERGED
            if nested.is_dir():
                for item in nested.iterdir():
                    os.replace(item, tmp / "adapter" / item.name)
                nested.rmdir()
            output = "adapter"
        tokenizer.save_pretrained(tmp / "tokenizer")

        record: dict[str, Any] = {
            "settings": settings.model_dump(mode="json"),
            "base": model_cfg.name_or_path or {"tiny": model_cfg.tiny.model_dump(mode="json")},
            "inputs": [
                {
                    "name": name,
                    "path": str(s.given),
                    "adapter_dir": str(s.adapter_dir.resolve()),
                    "weight": w,
                    "r": s.config.get("r"),
                    "lora_alpha": s.config.get("lora_alpha"),
                    "base_model_name_or_path": s.config.get("base_model_name_or_path"),
                    "weights_file": s.weights_file.name,
                    "sha256": sha256_of(s.weights_file),
                }
                for name, s, w in zip(names, sources, weights, strict=True)
            ],
            "output": output,
            "merged_rank": merged_rank,
            "tokenizer": str(tokenizer_path)
            if tokenizer_path is not None
            else model_cfg.name_or_path,
            "peft": peft.__version__,
        }
        (tmp / "merge.json").write_text(json.dumps(record, indent=2))
        _publish(tmp, out_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return record
