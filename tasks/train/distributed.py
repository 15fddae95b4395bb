"""train on several processes: the accelerate config tuneline writes, and the launch.

With ``train.distributed.num_processes > 1`` the train stage does not call ``fit`` itself: it
writes an accelerate config (``accelerate_config``) and the pipeline config into a scratch
folder and runs

    python -m tuneline.die_with_parent <our pid> accelerate.commands.launch \\
        --config_file <scratch>/accelerate.yaml -m tasks.train.worker \\
        --store <artifact root> --format-ref <format ref as JSON> --config <scratch>/config.json \\
        --dest <artifact folder> --checkpoints <checkpoint folder>

in its own process group. accelerate starts ``num_processes`` copies of ``tasks.train.worker``
through torch's launcher (``torch.distributed.run``); each runs the same ``fit`` and the main
one writes the artifact's files, ``metrics.json`` (the report) among them. Their output is
streamed to the stage's log. A worker that fails makes the launch fail with an error that names
its rank and shows the end of the output (an ``InputError`` in a worker stays an
``InputError``); an interrupt or any error here kills the launcher and every worker.

The accelerate config, by strategy:

- ``ddp``: ``MULTI_GPU``, one full replica per process, gradients averaged (NCCL on GPUs). On a
  machine without CUDA the same launcher (torchrun) runs CPU processes: ``MULTI_GPU`` with
  ``use_cpu: true``, and the processes set themselves up as ``MULTI_CPU`` with gloo.
  accelerate's own ``MULTI_CPU`` type is launched through ``mpirun`` (it needs an MPI
  hostfile) and would start only one process without it.
- ``fsdp``: ``FSDP`` version 1, the layers wrapped per decoder block (the model's
  ``_no_split_modules``, ``LlamaDecoderLayer`` for Llama), ``use_orig_params`` because a PEFT
  model has frozen and trainable parameters inside one block, and ``FULL_STATE_DICT``: the
  trainer's ``save_model`` then gathers the whole (adapter) state dict and PEFT's
  ``save_pretrained`` writes an ordinary ``adapter_model.safetensors``, which evaluate, merge
  and export load as they are. A ``SHARDED_STATE_DICT`` saves per-rank shards
  (``pytorch_model_fsdp_0/``) that ``PeftModel.from_pretrained`` cannot read. FSDP 1 rather
  than 2 because it takes all three ``train.distributed.fsdp_sharding`` strategies
  (FSDP 2 only knows whether to reshard after forward: no ``HYBRID_SHARD``).

``render(cfg)`` is the YAML for launching by hand (``accelerate launch --config_file``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tuneline.errors
from tuneline import progress
from tuneline.artifacts import Artifact
from tuneline.errors import ConfigError, TunelineError
from tuneline.scratch import scratch_dir

WORKER_MODULE = "tasks.train.worker"
# A worker that fails prints this, then one line of JSON: its rank, the error's class and message.
FAILURE_MARK = "TUNELINE-WORKER-FAILED "
TAIL_LINES = 40  # output lines a failure shows
KILL_GRACE_S = 5.0  # after SIGTERM, before SIGKILL

__all__ = [
    "WorkerFailed",
    "accelerate_config",
    "launch",
    "launch_command",
    "layer_classes",
    "render",
    "write_accelerate_config",
]


class WorkerFailed(RuntimeError):
    """A launched training process failed (not for a reason the config or input explain).

    Args:
        message: what failed, with the ranks.
        ranks: the ranks that reported a failure (empty when none could be told).
        returncode: the launcher's exit status.
        tail: the last lines of the output.
    """

    def __init__(self, message: str, ranks: list[int], returncode: int | None, tail: str):
        super().__init__(message)
        self.ranks, self.returncode, self.tail = ranks, returncode, tail


# ------------------------------------------------------------------------------- config


def layer_classes(model) -> list[str]:
    """The class names of the model's decoder blocks (FSDP wraps each in its own unit), from
    the model class's ``_no_split_modules``, without loading any weights.

    Args:
        model: the ``model`` section: the tiny Llama, or a hub id / local path whose
            ``config.json`` names its architecture.

    Raises:
        ConfigError: the model's class does not say which its blocks are.
    """
    import transformers

    if model.name_or_path is None:
        return list(transformers.LlamaForCausalLM._no_split_modules)
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.revision:
        kwargs["revision"] = model.revision
    config = transformers.AutoConfig.from_pretrained(model.name_or_path, **kwargs)
    candidates = [getattr(transformers, a, None) for a in config.architectures or []]
    with contextlib.suppress(Exception):
        candidates.append(transformers.AutoModelForCausalLM._model_mapping[type(config)])
    auto_map = getattr(config, "auto_map", None) or {}
    if model.trust_remote_code and "AutoModelForCausalLM" in auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        with contextlib.suppress(Exception):
            candidates.append(
                get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], model.name_or_path)
            )
    for cls in candidates:
        names = getattr(cls, "_no_split_modules", None)
        if names:
            return list(names)
    raise ConfigError(
        f"train.distributed: FSDP wraps each decoder block of the model, and the class of "
        f"{model.name_or_path!r} (architectures {config.architectures}) does not name its blocks "
        "(_no_split_modules); use strategy: ddp, or write the accelerate config by hand "
        "(fsdp_transformer_layer_cls_to_wrap)"
    )


def accelerate_config(cfg, cpu: bool | None = None) -> dict[str, Any]:
    """The accelerate config of ``train.distributed``, as the keys of accelerate's YAML.

    Args:
        cfg: the pipeline config (``train.distributed``; ``model`` for FSDP's wrap class).
        cpu: processes on CPU (gloo, no mixed precision); None: when CUDA is not available
            here (never for fsdp, which is for GPUs).

    Raises:
        ConfigError: ``train.distributed.strategy`` is none, or FSDP is asked for on CPU.
    """
    d = cfg.train.distributed
    if d.strategy == "none":
        raise ConfigError(
            "train.distributed.strategy is none: one process, nothing to launch; set strategy: "
            "ddp or fsdp and num_processes"
        )
    if cpu is None:
        import torch

        # FSDP is for GPUs: rendered on a machine without them, it is for one that has them.
        cpu = d.strategy != "fsdp" and not torch.cuda.is_available()
    if cpu and d.strategy == "fsdp":
        raise ConfigError(
            "train.distributed.strategy fsdp needs GPUs (accelerate launches FSDP on CUDA "
            "devices only); on CPU use strategy: ddp"
        )
    out: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        # ddp on CPU: torchrun's launcher too (see the module doc); the processes use gloo.
        "distributed_type": "FSDP" if d.strategy == "fsdp" else "MULTI_GPU",
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "gpu_ids": "all",
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": "no" if cpu else "bf16",
        "num_machines": 1,
        "num_processes": d.num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
        "use_cpu": cpu,
    }
    if d.main_process_port is not None:
        out["main_process_port"] = d.main_process_port
    if d.strategy == "fsdp":
        out["fsdp_config"] = {
            "fsdp_version": 1,
            # FSDP 1 reads this one (accelerate's launcher always exports FSDP_SHARDING_STRATEGY,
            # FULL_SHARD unless set here, and the plugin prefers it to reshard_after_forward).
            "fsdp_sharding_strategy": d.fsdp_sharding,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": ",".join(layer_classes(cfg.model)),
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
            "fsdp_offload_params": False,
            # Frozen base weights and trainable LoRA weights share a wrapped block.
            "fsdp_use_orig_params": True,
            # Only rank 0 reads the checkpoint; the others get its weights by broadcast
            # (sync_module_states), so a 70B model is not in CPU memory num_processes times.
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_activation_checkpointing": False,  # train.gradient_checkpointing does that
        }
    return out


def render(cfg, cpu: bool | None = None) -> str:
    """The accelerate config of ``train.distributed`` as YAML, for ``accelerate launch
    --config_file`` by hand (``tuneline accelerate-config CONFIG``).

    Args:
        cfg: the pipeline config.
        cpu: as in ``accelerate_config``; None: this machine's (GPUs when CUDA is available).
    """
    import yaml

    d = cfg.train.distributed
    head = (
        f"# accelerate config for train.distributed: {d.strategy}, {d.num_processes} processes.\n"
        f"# accelerate launch --config_file THIS_FILE -m {WORKER_MODULE} --help\n"
    )
    return head + yaml.safe_dump(accelerate_config(cfg, cpu), sort_keys=False)


def write_accelerate_config(cfg, path: str | os.PathLike, cpu: bool | None = None) -> Path:
    """Writes ``render(cfg, cpu)`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(render(cfg, cpu))
    return path


# ------------------------------------------------------------------------------- launch


def free_port() -> int:
    """A TCP port free on this host now (the rendezvous of the launched processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_root(fmt: Artifact) -> str:
    """The root of the store ``fmt`` is in (its ref's uri is ``<root>/<stage>/<key>``)."""
    return fmt.ref.uri.removesuffix(f"/{fmt.ref.stage}/{fmt.ref.key}")


def launch_command(
    config_file: Path, fmt: Artifact, config_json: Path, dest: Path, checkpoints: Path
) -> list[str]:
    """The command that launches the workers (under ``tuneline.die_with_parent``, so the
    launcher dies with this process however it dies)."""
    return [
        sys.executable,
        "-m",
        "tuneline.die_with_parent",
        str(os.getpid()),
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "-m",
        WORKER_MODULE,
        "--store",
        store_root(fmt),
        "--format-ref",
        fmt.ref.model_dump_json(),
        "--config",
        str(config_json),
        "--dest",
        str(dest),
        "--checkpoints",
        str(checkpoints),
    ]


def child_env(cpu: bool) -> dict[str, str]:
    """This process's environment, plus: the repository on ``PYTHONPATH`` (the workers import
    ``tasks``), unbuffered output (lines arrive as they are written), one OpenMP thread per
    CPU process unless ``OMP_NUM_THREADS`` says otherwise."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def kill_tree(proc: subprocess.Popen) -> None:
    """Stops the launcher and every process under it: SIGTERM (torchrun passes it on to the
    workers), then SIGKILL to whatever is left. The workers run in sessions of their own
    (torchrun starts them so), so they are found by walking the tree, not by process group."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []

    def signal_all(sig: int) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, sig)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)

    signal_all(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=KILL_GRACE_S)
    if alive or proc.poll() is None:
        signal_all(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=KILL_GRACE_S)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)


def worker_failures(lines: list[str]) -> list[dict[str, Any]]:
    """The failures the workers reported (``FAILURE_MARK`` lines), in the order seen."""
    found = []
    for line in lines:
        _, mark, body = line.partition(FAILURE_MARK)
        if mark:
            with contextlib.suppress(ValueError):
                found.append(json.loads(body))
    return found


def failure(returncode: int, lines: list[str], tail: list[str], n: int) -> Exception:
    """The error for a launch that exited with ``returncode``: the error class a worker
    raised when it is one of ``tuneline.errors``' user errors (so the stage fails without a
    retry and the CLI shows its message), else ``WorkerFailed``; both name the ranks."""
    reports = worker_failures(lines)
    ranks = sorted({r["rank"] for r in reports if isinstance(r.get("rank"), int)})
    if not ranks:  # killed or crashed before it could say: torchrun's summary names it
        ranks = sorted(
            {int(m) for m in re.findall(r"\brank\s*:\s*(\d+)\s*\(local_rank", "\n".join(tail))}
        )
    who = (
        (f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}")
        if ranks
        else "a process (its rank unknown)"
    )
    shown = "\n".join(tail)
    if reports:
        first = reports[0]
        what = f"{first.get('type', 'Error')}: {first.get('message', '')}"
        message = f"train: {who} of {n} failed: {what}\n--- last lines of its output ---\n{shown}"
        cls = getattr(tuneline.errors, str(first.get("type")), None)
        if isinstance(cls, type) and issubclass(cls, TunelineError):
            with contextlib.suppress(Exception):
                err = cls(message)
                err.ranks = ranks  # type: ignore[attr-defined]
                return err
    else:
        message = (
            f"train: {who} of {n} failed (accelerate launch exited with {returncode})\n"
            f"--- last lines of its output ---\n{shown}"
        )
    return WorkerFailed(message, ranks, returncode, shown)


def launch(fmt: Artifact, cfg, dest: Path, checkpoints: Path) -> dict[str, Any]:
    """Runs ``fit`` in ``train.distributed.num_processes`` processes under ``accelerate
    launch`` and returns its report (the ``metrics.json`` the main process wrote).

    Args:
        fmt: the format artifact.
        cfg: the pipeline config.
        dest: the artifact folder the main process writes into.
        checkpoints: the resumable checkpoints' folder.

    Raises:
        TunelineError: a worker raised a user error (its class, e.g. ``InputError``), naming
            its rank.
        WorkerFailed: a worker failed otherwise (or was killed); names the rank, shows the end
            of the output.
    """
    import torch

    d = cfg.train.distributed
    cpu = not torch.cuda.is_available()
    if d.main_process_port is None:
        port = free_port()
        cfg = cfg.model_copy(
            update={
                "train": cfg.train.model_copy(
                    update={"distributed": d.model_copy(update={"main_process_port": port})}
                )
            }
        )
    log = progress.logger()
    with scratch_dir("train_launch") as tmp:
        config_file = write_accelerate_config(cfg, tmp / "accelerate.yaml", cpu=cpu)
        config_json = tmp / "config.json"
        config_json.write_text(json.dumps(cfg.model_dump(mode="json")))
        cmd = launch_command(config_file, fmt, config_json, Path(dest), Path(checkpoints))
        log.info(
            "train: launching %d %s processes (%s): %s",
            d.num_processes,
            "CPU" if cpu else "GPU",
            d.strategy,
            " ".join(cmd[5:9]),
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(cpu),
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group: killed as one
        )
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        marks: list[str] = []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                if FAILURE_MARK in line:
                    marks.append(line)
                    continue
                if line.strip():
                    log.info("%s", line)
            returncode = proc.wait()
        except BaseException:  # KeyboardInterrupt, a failing logger, ...: nobody left behind
            kill_tree(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        if returncode != 0:
            raise failure(
                returncode, marks, [t for t in tail if FAILURE_MARK not in t], d.num_processes
            )
        metrics = Path(dest) / "metrics.json"
        if not metrics.is_file():
            raise WorkerFailed(
                f"train: the {d.num_processes} processes exited cleanly but the main one wrote no "
                f"{metrics}\n--- last lines of the output ---\n" + "\n".join(tail),
                [],
                returncode,
                "\n".join(tail),
            )
        log.info("train: %d processes done in %.1f s", d.num_processes, time.monotonic() - started)
        return json.loads(metrics.read_text())
