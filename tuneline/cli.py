"""`tuneline`: run the pipeline, see what the store holds, list stages, check configs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

# Offline by design: Prefect's telemetry would only log failed lookups.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tuneline.config import DEMO_CONFIG, ConfigError, PipelineConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)

ConfigArg = Annotated[
    Path | None,
    typer.Argument(help="Pipeline YAML (default: the embedded demo, deployments/demo.yaml)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: -s train.epochs=1 -s pii.operator=mask (repeatable)."),
]


def _load(config: Path | None, overrides: list[str] | None) -> PipelineConfig:
    try:
        return load_config(config or (DEMO_CONFIG if DEMO_CONFIG.exists() else None), overrides or [])
    except ConfigError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def _selection(**sel):
    """The run's selection, checked before anything starts (exit 2 on a bad one)."""
    from pydantic import ValidationError

    from tuneline.pipeline import Selection

    try:
        return Selection(**sel)
    except ValidationError as e:
        for problem in e.errors():
            err.print(f"[red]{problem['msg'].removeprefix('Value error, ')}[/red]")
        raise typer.Exit(2) from None


def _preflight(cfg: PipelineConfig, selection) -> None:
    """What this machine must have for the stages the run computes (API keys set, task
    folders, GPUs), checked before Prefect starts: exit 2, one line per problem."""
    from tuneline import preflight

    try:
        preflight.check(cfg, selection)
    except ConfigError as e:
        for line in str(e).splitlines():
            err.print(line, style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _counts(stage: str, report: dict) -> tuple[str, str]:
    from tuneline import registry

    if not registry.get(stage).records:
        return "", ""
    return str(report.get("records_out", "")), str(report.get("records_rejected", ""))


def _highlights(stage: str, report: dict) -> str:
    """One line of what a stage did, from its report."""
    from tuneline import registry

    bits = []
    if "rejected_by_reason" in report:
        bits.append(", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items()))
    fn = registry.get(stage).highlights
    try:
        bits.append(fn(report) if fn else "")
    except (KeyError, TypeError, ValueError):  # an older report without the field
        pass
    return "; ".join(b for b in bits if b)


@app.command()
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    only: Annotated[str | None, typer.Option("--only", help="Run just this stage (its inputs must exist).")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Run from this stage on (earlier ones must exist).")] = None,
    to_stage: Annotated[str | None, typer.Option("--to", help="Stop after this stage.")] = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Recompute this stage and the ones after it (repeatable).")
    ] = None,
) -> None:
    """Run the pipeline; stages whose artifacts exist for this config are reused."""
    cfg = _load(config, set_)
    selection = _selection(only=only, from_stage=from_stage, to_stage=to_stage, force=force or [])
    from tuneline import redaction

    redaction.protect(cfg)  # before any library can log a key or a URL's password
    _preflight(cfg, selection)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tuneline")

    from tuneline import scratch
    from tuneline.ui import TemporaryAPI

    scratch.sweep()  # scratch folders and Prefect homes of runs that were killed
    # Without PREFECT_API_URL, our own temporary Prefect API (not Prefect's): it dies with this
    # process even on kill -9, and boots while the flow is imported.
    api = TemporaryAPI.maybe_start()
    try:
        from flows.finetune import finetune
        from tuneline.errors import user_error
        from tuneline.orchestration import quiet_console_for_user_errors

        quiet_console_for_user_errors()
        try:
            with api.serving() if api else contextlib.nullcontext():
                summary = finetune(config=cfg, only=only, from_stage=from_stage, to_stage=to_stage, force=force or [])
        except Exception as e:
            cause = user_error(e)
            # A library's message may quote a key or a URL's password: redacted like the logs.
            if cause is not None:  # a user or input error: its message says what to change
                err.print(f"[red]error: {redaction.redact_text(str(cause))}[/red]")
                err.print("Finished stages are saved; fix the cause and run the same command again to resume.")
                raise typer.Exit(1) from None
            # a stage failed after its retries (or Prefect's API did not start): say which
            err.print(f"[red]run failed: {type(e).__name__}: {redaction.redact_text(str(e))}[/red]")
            err.print("Finished stages are saved; fix the cause and run the same command again to resume.")
            raise typer.Exit(1) from None
    finally:
        if api:
            api.stop()
    _print_summary(cfg, summary)


def _print_summary(cfg: PipelineConfig, summary: dict) -> None:
    from tuneline.artifacts import ArtifactRef, ArtifactStore

    store = ArtifactStore(cfg.run.artifact_root)
    t = Table(title=f"tuneline run '{cfg.run.name}' ({summary['seconds']:.1f} s)")
    for col in ("stage", "status", "artifact", "kept", "dropped", "s", "what happened"):
        t.add_column(col, overflow="fold")
    for stage, o in summary["stages"].items():
        art = store.open(ArtifactRef(**o["ref"]))
        rep = art.report
        t.add_row(
            stage,
            "[dim]reused[/dim]" if o["reused"] else "[green]ran[/green]",
            o["ref"]["key"][:12],
            *_counts(stage, rep),
            f"{o['seconds']:.1f}",
            _highlights(stage, rep),
        )
    console.print(t)
    shown = (
        ("quality", "Data-quality report", "report.md"),
        ("evaluate", "Evaluation report", "report.md"),
        ("export", "Exports (adapter/, merged/, gguf/, serving/)", ""),
        ("card", "Model card", "README.md"),
    )
    for stage, what, name in shown:
        if stage in summary["stages"]:
            art = store.open(ArtifactRef(**summary["stages"][stage]["ref"]))
            console.print(f"{what}: {art.uri}/{name}")
    console.print(f"Artifacts: {store.root}   (tuneline status shows what is stored)")


@app.command()
def status(config: ConfigArg = None, set_: SetOpt = None) -> None:
    """Which stage artifacts exist for a config, with keys and counts."""
    cfg = _load(config, set_)
    from tuneline.artifacts import ArtifactStore
    from tuneline.pipeline import plan_keys

    store = ArtifactStore(cfg.run.artifact_root)
    t = Table(title=f"artifacts for '{cfg.run.name}' under {store.root}")
    for col in ("stage", "artifact", "state", "kept", "dropped", "created"):
        t.add_column(col)
    for stage, ref in plan_keys(cfg).items():
        if store.exists(stage, ref.key):
            art = store.open(ref)
            rep, man = art.report, art.manifest
            t.add_row(stage, ref.short, "[green]done[/green]", *_counts(stage, rep), man.get("created", ""))
        else:
            t.add_row(stage, ref.short, "[yellow]missing[/yellow]", "", "", "")
    console.print(t)


@app.command()
def stages() -> None:
    """The stages in order, with what each does and what its artifact depends on."""
    import importlib

    from tuneline import registry

    t = Table(title="tuneline stages")
    for col in ("#", "stage", "reads", "config sections", "version", "module", "does"):
        t.add_column(col, overflow="fold")
    for i, st in enumerate(registry.stages(), 1):
        doc = (importlib.import_module(st.module).__doc__ or "").strip()
        doc = doc.splitlines()[0].removeprefix(f"{st.name}:").strip() if doc else st.describe()
        reads = ", ".join(st.inputs) or "source files"
        t.add_row(str(i), st.name, reads, ", ".join(st.sections), str(st.version), st.module, doc)
    console.print(t)


@app.command()
def ui(
    port: Annotated[int | None, typer.Option("--port", help="Server port (default: a free one).")] = None,
    worker: Annotated[bool, typer.Option(help="Start a worker on the `tuneline` pool.")] = True,
) -> None:
    """Local Prefect server + deployments (prefect.yaml) + worker; prints the UI URL; Ctrl-C stops all."""
    from tuneline.ui import serve_ui

    try:
        serve_ui(port=port, worker=worker)
    except (RuntimeError, TimeoutError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None


@app.command()
def deployments(
    check: Annotated[bool, typer.Option("--check", help="Only report drift; exit 1 if prefect.yaml is stale.")] = False,
) -> None:
    """Sync prefect.yaml's deployments with deployments/*.yaml (one deployment per config)."""
    from tuneline.deployments import sync
    from tuneline.ui import REPO

    try:
        res = sync(REPO, check=check)
    except (ConfigError, ValueError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    verb = "would " if check else ""
    for name in res.added:
        console.print(f"{verb}add deployment [bold]{name}[/bold] (deployments/{name}.yaml)")
    for name in res.updated:
        console.print(f"{verb}update the config parameter of [bold]{name}[/bold] from deployments/{name}.yaml")
    for name in res.orphaned:
        err.print(f"[yellow]deployment {name!r} runs finetune but deployments/{name}.yaml does not exist[/yellow]")
    if not res.changed:
        console.print("prefect.yaml is in step with deployments/*.yaml")
    elif check:
        err.print("prefect.yaml is stale: run `tuneline deployments`, then `prefect deploy --all`")
        raise typer.Exit(1)


@app.command("config")
def show_config(
    config: ConfigArg = None,
    set_: SetOpt = None,
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON schema of every field instead.")] = False,
) -> None:
    """Validate a config and print it resolved (defaults filled in), or print the schema."""
    if schema:
        console.print_json(json.dumps(PipelineConfig.model_json_schema()))
        return
    cfg = _load(config, set_)
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _verdict(problems: list) -> str:
    """A row's state: ok, or which files are missing and which changed."""
    from rich.markup import escape

    if not problems:
        return "[green]ok[/green]"
    parts = []
    for state in ("missing", "changed"):
        names = [p.name for p in problems if p.state == state]
        if names:
            parts.append(f"{state}: {', '.join(names)}")
    return f"[red]{escape('; '.join(parts))}[/red]"


@app.command()
def verify(config: ConfigArg = None, set_: SetOpt = None) -> None:
    """Check every stored artifact of a config against its manifest (size and sha256 of every
    file); exit 1 if a file is missing or changed."""
    cfg = _load(config, set_)
    from tuneline.artifacts import ArtifactStore
    from tuneline.pipeline import plan_keys

    store = ArtifactStore(cfg.run.artifact_root)
    t = Table(title=f"artifacts of '{cfg.run.name}' under {store.root}, checked against their manifests")
    for col in ("stage", "artifact", "files", "state"):
        t.add_column(col, overflow="fold")
    bad: list[tuple[str, str, list]] = []
    for stage, ref in plan_keys(cfg).items():
        if not store.exists(stage, ref.key):
            t.add_row(stage, ref.short, "", "[dim]not stored[/dim]")
            continue
        art = store.open(ref)
        problems = art.verify()
        if problems:
            bad.append((stage, f"{ref.short} {art.generation}", problems))
        t.add_row(stage, f"{ref.short} {art.generation}", str(len(art.files)), _verdict(problems))
    console.print(t)
    if bad:
        # One plain line per file as well: table cells fold long names.
        for stage, which, problems in bad:
            for p in problems:
                err.print(f"{stage} {which}: {p}", markup=False, highlight=False)
        names = " ".join(f"--force {stage}" for stage, _, _ in bad)
        err.print(f"[red]{len(bad)} artifact(s) do not match their manifests; recompute them: tuneline run {names}[/red]")
        raise typer.Exit(1)


@app.command()
def plan(
    config: ConfigArg = None,
    set_: SetOpt = None,
    gpu_memory: Annotated[
        str, typer.Option("--gpu-memory", help="Memory of one GPU: 80GiB, 141GB, '24 GiB'.")
    ] = "80GiB",
    shape: Annotated[
        str | None, typer.Option("--shape", help="Plan for a bench shape instead of model: llama-3.2-1b, llama-3-8b.")
    ] = None,
    model_config: Annotated[
        Path | None, typer.Option("--model-config", help="Plan for the model in this config.json instead of model:.")
    ] = None,
    peak_tflops: Annotated[float, typer.Option("--peak-tflops", help="The GPU's bf16 peak (H200: 790).")] = 790.0,
    mfu: Annotated[float, typer.Option("--mfu", help="Achieved fraction of the peak (bench median: 0.33).")] = 0.33,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """GPU memory and tokens/s of the train stage from the model's config alone; the largest
    micro-batch that fits --gpu-memory, with or without gradient checkpointing."""
    if shape or model_config:  # a pretrained model, not the tiny one (and not its length limit)
        set_ = [f"model.name_or_path={shape or model_config}", *(set_ or [])]
    from tasks.train import adapters
    from tasks.train import plan as planner

    with adapters.no_device_checks():  # a GPU config is planned on any machine
        cfg = _load(config, set_)

    try:
        gpu = planner.parse_memory(gpu_memory)
        if shape and model_config:
            raise planner.PlanError("give --shape or --model-config, not both")
        arch = (
            planner.shape(shape) if shape
            else planner.read_model_config(model_config) if model_config
            else planner.arch_of(cfg)
        )
        if peak_tflops <= 0 or not 0 < mfu <= 1:
            raise planner.PlanError("--peak-tflops must be positive and --mfu in (0, 1]")
        result = planner.plan(planner.setup_of(cfg, arch), gpu, peak_tflops, mfu)
    except planner.PlanError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
        return
    s, mem, rec = result["setup"], result["memory"], result["recommendation"]
    gib = 2**30
    ckpt = "on" if s["gradient_checkpointing"] else "off"
    console.print(
        f"train plan: {s['arch']['name']} ({result['params']['total'] / 1e9:.2f}B params), "
        f"{s['adapter']}, batch {s['batch_size']} × {s['seq_len']} tokens, checkpointing {ckpt}, "
        f"{s['attention']} attention, logits {result['assumptions']['logits']}"
    )
    t = Table()
    t.add_column("peak GPU memory", overflow="fold")
    t.add_column("GiB", justify="right")
    for part in ("weights", "trainable", "gradients", "optimizer", "activations", "logits", "workspace"):
        t.add_row(part, f"{mem[part] / gib:.2f}")
    t.add_row("allocated (torch peak)", f"{mem['allocated'] / gib:.2f}")
    t.add_row("CUDA context + allocator slack", f"{mem['overhead'] / gib:.2f}")
    t.add_row("[bold]total[/bold]", f"[bold]{mem['total'] / gib:.2f}[/bold]")
    console.print(t)
    speed = result["speed"]
    console.print(
        f"trainable params: {result['params']['trainable']:,}   tokens/s: ~{speed['tokens_per_s']:,.0f} "
        f"(peak {peak_tflops:g} TFLOP/s × MFU {mfu:g})   s/optimizer step: {speed['step_s']:.2f}"
    )
    verdict = "[green]fits[/green]" if rec["fits_as_written"] else "[red]does not fit[/red]"
    console.print(f"as written: {verdict} in {gpu / gib:.1f} GiB   recommended: {rec['advice']}")


@app.command()
def merge(
    adapters: Annotated[
        list[Path],
        typer.Argument(help="Adapters to combine: train artifact folders (with adapter/) or PEFT adapter folders."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write model/ (or adapter/), tokenizer/, merge.json.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose model: is the adapters' base (default: the demo's).")
    ] = None,
    set_: SetOpt = None,
    weights: Annotated[
        list[float] | None, typer.Option("--weight", "-w", help="One per adapter, in order (repeatable; default 1.0 each).")
    ] = None,
    combination: Annotated[
        str, typer.Option("--combination", help="cat (exact weighted sum), linear, svd, ties, dare_linear, dare_ties, ...")
    ] = "cat",
    density: Annotated[float | None, typer.Option("--density", help="Share kept by ties/dare/magnitude_prune.")] = None,
    svd_rank: Annotated[int | None, typer.Option("--svd-rank", help="Rank of a *_svd result.")] = None,
    adapter_only: Annotated[
        bool, typer.Option("--adapter-only", help="Write the combined adapter instead of a standalone merged model.")
    ] = False,
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="Tokenizer folder (default: the first train artifact's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
) -> None:
    """Combines adapters trained on one base (PEFT add_weighted_adapter) and merges the result
    into a standalone model; runs alone, on any train artifacts."""
    from tasks.train.merge import merge_adapters, merge_settings
    from tuneline.errors import TunelineError

    cfg = _load(config, set_)
    data = {"adapters": adapters, "weights": weights or None, "combination": combination, "unload": not adapter_only}
    if density is not None:
        data["density"] = density
    if svd_rank is not None:
        data["svd_rank"] = svd_rank
    try:
        settings = merge_settings(data)
        result = merge_adapters(settings, cfg.model, out, tokenizer_path=tokenizer, overwrite=overwrite)
    except (ConfigError, TunelineError) as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    kind = "model" if settings.unload else "adapter"
    console.print(
        f"merged {len(adapters)} adapter(s) with {settings.combination} into {out / kind} "
        f"(inputs and checksums in {out / 'merge.json'})"
    )
    del result


@app.command("accelerate-config")
def accelerate_config(
    config: ConfigArg = None,
    set_: SetOpt = None,
    cpu: Annotated[
        bool | None, typer.Option("--cpu/--gpu", help="Processes on CPU (gloo) or GPUs (default: what this machine has).")
    ] = None,
) -> None:
    """Prints the accelerate config the train stage launches with (train.distributed), to
    launch `python -m tasks.train.worker` by hand: another scheduler, several nodes."""
    from tasks.train import adapters, distributed

    with adapters.no_device_checks():  # written here, launched on the GPU machine
        cfg = _load(config, set_)
    try:
        sys.stdout.write(distributed.render(cfg, cpu=cpu))
    except ConfigError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


@app.command("runs")
def runs_cmd(
    config: ConfigArg = None,
    set_: SetOpt = None,
    every: Annotated[bool, typer.Option("--all", help="Every run in the store, not only this config's run.name.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the headline metrics over time into this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """The runs of a config (its run.name) from the run lineage records: when, which train and
    evaluate artifacts, and their headline metrics; --plot draws them over time."""
    from tuneline import monitoring
    from tuneline.artifacts import ArtifactStore

    cfg = _load(config, set_)
    store = ArtifactStore(cfg.run.artifact_root)
    name = None if every else cfg.run.name
    rows = monitoring.runs(store, name)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    if not rows:
        err.print(f"no runs of {name or 'any pipeline'} in {cfg.run.artifact_root} (a run leaves a record when it finishes)")
        raise typer.Exit(1)
    if not as_json:
        cols = monitoring.metric_columns(rows)
        t = Table(title=f"runs of {name or 'every pipeline'} ({len(rows)})")
        for c in ["finished", *([] if name else ["run"]), "s", "train", "evaluate", *cols]:
            t.add_column(c, justify="right" if c not in ("finished", "run", "train", "evaluate") else "left")
        for r in rows:
            cells = [(r["finished"] or "").replace("T", " ")[:16], *([] if name else [str(r["run"])]), f"{r['seconds'] or 0:.0f}"]
            cells += [r["train_key"] or "-", r["evaluate_key"] or "-"]
            cells += [f"{r[c]:.4g}" if isinstance(r.get(c), int | float) else "-" for c in cols]
            t.add_row(*cells)
        console.print(t)
    if plot is not None:
        try:
            drawn = monitoring.plot(rows, plot, f"runs of {name or 'every pipeline'}")
        except ValueError as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from None
        err.print(f"plotted {', '.join(drawn)} over {len(rows)} runs: {plot}")


if __name__ == "__main__":
    app()
