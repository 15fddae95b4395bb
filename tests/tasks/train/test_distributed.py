"""train.distributed: the accelerate config tuneline writes, and the train stage on two CPU
processes (DDP over gloo) under ``accelerate launch``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from tasks import train
from tasks.train import distributed
from tests.support.catalogue import tiny_config, write_format_artifact
from tuneline.artifacts import ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.errors import ConfigError, InputError
from tuneline.models import load_base_model, load_tokenizer
from tuneline.splits import load_split


def pipeline(strategy: str, n: int = 2, **more) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"train": {"distributed": {"strategy": strategy, "num_processes": n, **more}}}
    )


def accepted_by_accelerate(conf: dict, tmp_path: Path):
    """The config as accelerate's launcher reads it (``accelerate launch --config_file``)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(conf))
    loaded = load_config_from_file(str(path))
    assert isinstance(loaded, ClusterConfig)
    return loaded


# ----------------------------------------------------------------------------------- config


def test_ddp_on_gpus_is_multi_gpu_in_bf16(tmp_path):
    conf = distributed.accelerate_config(pipeline("ddp", 4, main_process_port=29555), cpu=False)
    assert conf["distributed_type"] == "MULTI_GPU"
    assert conf["num_processes"] == 4
    assert conf["mixed_precision"] == "bf16"
    assert conf["use_cpu"] is False
    assert conf["main_process_port"] == 29555
    assert "fsdp_config" not in conf
    loaded = accepted_by_accelerate(conf, tmp_path)
    assert loaded.distributed_type.value == "MULTI_GPU" and loaded.num_processes == 4
    assert loaded.main_process_port == 29555 and loaded.mixed_precision == "bf16"


def test_ddp_on_cpu_uses_torchs_launcher_without_mixed_precision(tmp_path):
    # MULTI_GPU + use_cpu: torchrun starts the processes, which set up MULTI_CPU over gloo
    # (accelerate's MULTI_CPU type would need mpirun).
    conf = distributed.accelerate_config(pipeline("ddp"), cpu=True)
    assert conf["distributed_type"] == "MULTI_GPU" and conf["use_cpu"] is True
    assert conf["num_processes"] == 2 and conf["mixed_precision"] == "no"
    assert "main_process_port" not in conf  # launch picks a free one
    loaded = accepted_by_accelerate(conf, tmp_path)
    assert loaded.use_cpu is True and loaded.num_processes == 2


def test_fsdp_wraps_each_decoder_block_and_saves_a_full_state_dict(tmp_path):
    conf = distributed.accelerate_config(
        pipeline("fsdp", 8, fsdp_sharding="SHARD_GRAD_OP"), cpu=False
    )
    assert conf["distributed_type"] == "FSDP" and conf["num_processes"] == 8
    assert conf["mixed_precision"] == "bf16"
    f = conf["fsdp_config"]
    assert f["fsdp_version"] == 1
    assert f["fsdp_sharding_strategy"] == "SHARD_GRAD_OP"
    assert f["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert f["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert f["fsdp_use_orig_params"] is True
    assert f["fsdp_cpu_ram_efficient_loading"] is True and f["fsdp_sync_module_states"] is True
    assert f["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    loaded = accepted_by_accelerate(conf, tmp_path)
    assert loaded.distributed_type.value == "FSDP" and loaded.fsdp_config == f


def test_fsdp_config_reaches_accelerates_plugin_as_meant(tmp_path, monkeypatch):
    """What a launched process sees: the launcher turns the file into FSDP_* variables, and
    accelerate's FSDP plugin reads them."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import ShardingStrategy, StateDictType

    cfg = pipeline("fsdp", 2, fsdp_sharding="SHARD_GRAD_OP")
    path = distributed.write_accelerate_config(cfg, tmp_path / "a.yaml", cpu=False)
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "tasks.train.worker"]
    )
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == 2
    env = prepare_multi_gpu_env(args)
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(k, v)
    if not torch.cuda.is_available():  # the plugin asks for the current GPU (sync_module_states)
        monkeypatch.setattr("accelerate.utils.dataclasses.is_cuda_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1
    assert plugin.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.use_orig_params is True
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.cpu_ram_efficient_loading is True and plugin.sync_module_states is True


def test_wrap_class_comes_from_the_models_config_without_weights(tmp_path):
    from transformers import LlamaConfig, Qwen2Config

    LlamaConfig(architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "llama")
    Qwen2Config(architectures=["Qwen2ForCausalLM"]).save_pretrained(tmp_path / "qwen")
    for name, want in (("llama", "LlamaDecoderLayer"), ("qwen", "Qwen2DecoderLayer")):
        cfg = PipelineConfig.model_validate({"model": {"name_or_path": str(tmp_path / name)}})
        assert distributed.layer_classes(cfg.model) == [want]
        assert list((tmp_path / name).iterdir()) == [tmp_path / name / "config.json"]


def test_render_is_the_yaml_of_the_config_and_refuses_what_cannot_run():
    cfg = pipeline("fsdp", 4)
    text = distributed.render(cfg)  # fsdp renders for GPUs even on a machine without them
    assert "accelerate launch --config_file" in text.splitlines()[1]
    assert yaml.safe_load(text) == distributed.accelerate_config(cfg, cpu=False)
    with pytest.raises(ConfigError, match="strategy is none"):
        distributed.render(PipelineConfig())
    with pytest.raises(ConfigError, match="needs GPUs"):
        distributed.accelerate_config(cfg, cpu=True)


def test_distributed_modules_are_not_training_methods():
    from tasks.train import worker

    for mod in (distributed, worker):
        assert not hasattr(mod, "CONFIG") and not hasattr(mod, "build_trainer")
    assert "distributed" not in train.METHODS and "worker" not in train.METHODS


# ------------------------------------------------------------------------- two processes


def run_train(store: ArtifactStore, fmt, cfg: PipelineConfig, key: str):
    with store.writer("train", key, [fmt.ref], {}) as out:
        train.run([fmt], cfg, out)
        ref = out.commit()
    return store.open(ref)


def workers_of(root: str) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes launched for the artifact root ``root`` (the
    launcher, the workers)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if root in cmd and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            found.append((p.pid, cmd))
    return found


@pytest.fixture(scope="module")
def store_and_format(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ddp") / "artifacts")
    store = ArtifactStore(root)
    return store, write_format_artifact(store, tiny_config(root)), root


DDP = {"epochs": 1, "distributed": {"strategy": "ddp", "num_processes": 2}}


@pytest.mark.slow  # 23-35 s on 2 shared cores
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU (gloo) path; GPUs run NCCL")
def test_ddp_on_two_cpu_processes_trains_and_saves_one_adapter(store_and_format):
    from peft import PeftModel

    store, fmt, root = store_and_format
    cfg = tiny_config(root, train=DDP)
    art = run_train(store, fmt, cfg, key="d" * 64)
    m = art.report
    assert m["processes"] == 2
    assert m["last_loss"] < m["first_loss"] - 0.5, (m["first_loss"], m["last_loss"])
    # The global batch doubles, so one epoch takes half the optimizer steps of one process
    # (168 rows: 21 steps of 8 alone, 11 steps of 2 x 8 here).
    one_process_steps = math.ceil(m["train_sequences"] / cfg.train.batch_size)
    assert one_process_steps == 21
    assert m["steps"] == math.ceil(one_process_steps / 2) == 11
    assert m["epochs"] == pytest.approx(1.0)

    tok = load_tokenizer(cfg.model, art.path / "tokenizer")
    row = load_split(fmt, "train")[0]
    ids = tok(row.text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = load_base_model(cfg.model, tok).eval()(ids, labels=ids).loss.item()
        tuned_model = PeftModel.from_pretrained(
            load_base_model(cfg.model, tok), art.path / "adapter"
        )
        tuned = tuned_model.eval()(ids, labels=ids).loss.item()
    assert tuned < base - 0.5, (base, tuned)
    assert not workers_of(root)


def test_a_failing_worker_names_its_rank_and_leaves_no_process(store_and_format):
    store, fmt, root = store_and_format
    cfg = tiny_config(root, train={**DDP, "method": "dpo"})  # dpo needs preference rows: none
    with pytest.raises(InputError) as e:
        run_train(store, fmt, cfg, key="e" * 64)
    msg = str(e.value)
    assert "train: rank" in msg and "of 2 failed: InputError" in msg, msg
    assert "dpo trains on preference rows" in msg and "last lines of its output" in msg
    assert e.value.ranks and set(e.value.ranks) <= {0, 1}
    assert not workers_of(root)


def test_an_interrupt_kills_the_launcher_and_every_worker(store_and_format, tmp_path, monkeypatch):
    """A KeyboardInterrupt while the workers train (here: raised by the log handler at the
    first step line) leaves no process behind."""
    store, fmt, root = store_and_format
    cfg = tiny_config(root, train={**DDP, "epochs": 50, "checkpoint_steps": 0})
    seen: list[list[tuple[int, str]]] = []

    class Interrupting:
        def info(self, msg, *args):
            line = msg % args if args else msg
            if "train: step 1/" in line:
                seen.append(workers_of(root))
                raise KeyboardInterrupt

    monkeypatch.setattr(distributed.progress, "logger", lambda: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        distributed.launch(fmt, cfg, tmp_path / "dest", tmp_path / "checkpoints")
    # The launcher (die_with_parent + accelerate launch) and the two workers were running...
    assert seen and sum("tasks.train.worker" in cmd for _, cmd in seen[0]) >= 2
    # ... and none is left.
    assert not workers_of(root)
    assert not (tmp_path / "dest" / "metrics.json").exists()


def test_the_cli_prints_a_config_accelerate_reads(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from tuneline.cli import app

    args = ["accelerate-config", "-s", "train.distributed.strategy=fsdp", "-s", "train.distributed.num_processes=8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rendered = yaml.safe_load(res.output)
    assert rendered["distributed_type"] == "FSDP" and rendered["num_processes"] == 8
    assert rendered["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    none = CliRunner().invoke(app, ["accelerate-config"])
    assert none.exit_code == 2 and "strategy is none" in none.output
