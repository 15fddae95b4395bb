"""One training process under ``accelerate launch`` (see ``distributed.py``):

    accelerate launch --config_file accelerate.yaml -m tasks.train.worker \\
        --store ROOT --format-ref REF --config CONFIG.json --dest DIR --checkpoints DIR

opens the format artifact, validates the pipeline config and calls ``tasks.train.fit`` (never
``run``, which would launch again); the main process writes ``DEST``. A failure prints one
``distributed.FAILURE_MARK`` line (rank, error class, message) before its traceback, so the
launching process can name the rank and keep the error's class.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tasks.train.distributed import FAILURE_MARK
from tuneline.die_with_parent import die_with_parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tasks.train.worker", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--store", required=True, help="Artifact root (the format artifact's store).")
    p.add_argument(
        "--format-ref",
        required=True,
        help="The format artifact: its ref as JSON ({stage, key, uri}), or STAGE/KEY in --store.",
    )
    p.add_argument("--config", required=True, help="The pipeline config as JSON (or YAML).")
    p.add_argument(
        "--dest", required=True, help="Folder the main process writes the artifact's files into."
    )
    p.add_argument("--checkpoints", required=True, help="Resumable checkpoints' folder.")
    return p.parse_args(argv)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def setup_logging() -> None:
    """The ``tuneline`` logger to stdout, prefixed with the rank; only rank 0 says more than
    warnings (every rank runs the same loop)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"[rank {rank()}] %(message)s"))
    log = logging.getLogger("tuneline")
    log.addHandler(handler)
    log.setLevel(logging.INFO if rank() == 0 else logging.WARNING)
    log.propagate = False


def load_config(path: Path):
    from tuneline.config import PipelineConfig

    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return PipelineConfig.model_validate(data)


def open_format(store_root: str, ref: str):
    from tuneline.artifacts import ArtifactRef, ArtifactStore

    store = ArtifactStore(store_root)
    if ref.lstrip().startswith("{"):
        parsed = ArtifactRef.model_validate_json(ref)
    else:
        stage, _, key = ref.partition("/")
        parsed = store.ref(stage, key)
    return store.open(parsed)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # torchrun starts workers in sessions of their own: if it is killed (it dies with the
    # stage's process, see distributed.launch_command), they must not train on as orphans.
    if die_with_parent() and os.getppid() == 1:
        sys.exit("train worker: the launcher is already gone")
    setup_logging()
    try:
        from tasks.train import fit

        cfg = load_config(Path(args.config))
        fmt = open_format(args.store, args.format_ref)
        fit(fmt, cfg, Path(args.dest), Path(args.checkpoints))
    except BaseException as e:
        report = {"rank": rank(), "type": type(e).__name__, "message": str(e)}
        print(FAILURE_MARK + json.dumps(report), file=sys.stderr, flush=True)
        raise
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
