"""How fast a re-run gets back to the stage that failed, compared with the run that failed.

Does what a user does. A cold run of the demo config (deployments/demo.yaml, fresh store, a
private copy of data/sample) in which the last stage, evaluate, fails (TUNELINE_FAIL=evaluate:1,
run.retries=0): its wall time until the failure is the "full run" (the whole run but evaluate's
work, so a slightly small denominator). Then re-runs, each of the ways a user starts one, timed
from the call until evaluate's own work starts. In the process that ran a flow before (the
failed run; in the server's process an untimed warm-up flow), as in a notebook or a worker:

- ``finetune(config)``: the same run again, what ``tuneline run`` and a UI retry call;
- ``rerun_stage("evaluate", config)``: the ``rerun-stage`` flow, as its deployment runs it;
- ``finetune(config, from_stage="evaluate")``: what ``tuneline run --from evaluate`` calls;

and ``tuneline run CONFIG`` as a new process: what a user at a shell waits for, Python's start
and imports (and, with no PREFECT_API_URL, the temporary Prefect API's start) included.

"Evaluate's own work starts" is the entry of ``tasks.evaluate.STAGE.run``, the stage's plain function,
which this script wraps to take a timestamp (no library change). So the figure holds everything
the user waits through first: the flow run's creation, the six earlier stages found in the
store, the evaluate task's orchestration, its key and its inputs being opened. Before every
re-run the evaluate artifact the previous one wrote is deleted: the state the failure left.

Two Prefect APIs, each in its own process (``--child``), because Prefect keeps process-wide
clients and event workers bound to the first API URL they saw, so one process cannot honestly
switch: the ephemeral API (no PREFECT_API_URL; the temporary server a first flow call starts,
started here before the clock and reported on its own) and a local ``prefect server`` that this
script starts (own PREFECT_HOME in a temp dir, free loopback port) and stops at the end. The
full run happens once, with the ephemeral API; the server's re-runs start from the same store
in the same failed state, and their fraction is of that run.

    python bench/rerun_after_failure.py            # about 3 minutes on 2 cores
    python bench/rerun_after_failure.py --no-server --no-cli --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL = 0.05  # the re-run reaches the failed stage within 5 % of the full run's time
BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TUNELINE_PROGRESS": "0",
    "TUNELINE_FAIL": "evaluate:1",  # the first evaluate attempt in this store fails, later ones work
}


def demo_cfg(root: Path, sample: Path):
    """The real demo config on a private store and corpus copy; no retry, so it fails at once."""
    from tuneline.config import load_config

    cfg = load_config(REPO / "deployments" / "demo.yaml", [f"run.artifact_root={root}", "run.retries=0"])
    for s in cfg.ingest.sources:
        s.path = str(sample / Path(s.path).relative_to("data/sample"))
    return cfg


def stamp_evaluate_start(sink) -> None:
    """Wraps the evaluate stage's plain function so each call first records ``time.time()``."""
    import tasks.evaluate as ev

    inner = ev.STAGE.run

    def run(*args, **kwargs):
        sink(time.time())
        return inner(*args, **kwargs)

    object.__setattr__(ev.STAGE, "run", run)  # execute calls STAGE.run, so the wrapper is what the task runs


def drop_evaluate(cfg) -> None:
    """Back to the state the failure left: every stage's artifact but evaluate's."""
    from tuneline.pipeline import plan_keys

    key = plan_keys(cfg)["evaluate"].key
    shutil.rmtree(Path(cfg.run.artifact_root) / "evaluate" / key, ignore_errors=True)  # a local store


def timed_api_start(sink) -> None:
    """Records how long the temporary (ephemeral) Prefect API takes to start, if one is started."""
    from prefect.server.api.server import SubprocessASGIServer

    inner = SubprocessASGIServer.start

    def start(self, *args, **kwargs):
        if self.running:
            return inner(self, *args, **kwargs)
        t = time.perf_counter()
        inner(self, *args, **kwargs)
        sink(time.perf_counter() - t)

    SubprocessASGIServer.start = start


# ------------------------------------------------------------------------- child: one API mode


def child(mode: str, work: Path, repeats: int, full: bool) -> None:
    import yaml

    from flows.finetune import finetune
    from flows.rerun_stage import rerun_stage
    from tuneline.config import STAGES, load_config
    from tuneline.pipeline import plan_keys
    from tuneline.stage import InjectedFailure

    starts: list[float] = []
    stamp_evaluate_start(starts.append)
    cfg = demo_cfg(work / "artifacts", work / "sample")
    out: dict = {"mode": mode}

    if full:
        if mode == "ephemeral":
            # What the first flow call of a process does with no PREFECT_API_URL; started before
            # the clock so that the full run is not charged for it (reported on its own).
            from prefect.server.api.server import SubprocessASGIServer

            t = time.perf_counter()
            SubprocessASGIServer().start()
            out["api_start_s"] = time.perf_counter() - t
        t0 = time.time()
        try:
            finetune(config=cfg)
        except InjectedFailure:
            pass
        else:
            raise RuntimeError("the full run should have failed at evaluate (TUNELINE_FAIL=evaluate:1)")
        out["full_s"] = time.time() - t0
        assert (work / "artifacts" / "faults" / "evaluate").read_text() == "1", "one evaluate attempt expected"
        assert not starts, "the injected failure comes before evaluate's work"
        # the same config as a file, for `tuneline run CONFIG` in a new process
        path = work / "demo-bench.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        assert plan_keys(load_config(path)) == plan_keys(cfg), "the written config must keep every key"
    else:
        # Untimed: the ephemeral process has run a flow before its re-runs (the failed one), so
        # this one does too, or the first re-run alone would pay the process's first-flow set-up.
        finetune(config=cfg, to_stage="train")

    variants = {
        "finetune(config)": lambda: finetune(config=cfg),
        'rerun_stage("evaluate")': lambda: rerun_stage(stage="evaluate", config=cfg),
        'finetune(from_stage="evaluate")': lambda: finetune(config=cfg, from_stage="evaluate"),
    }
    out["reruns"] = {}
    for name, call in variants.items():
        rows = []
        for _ in range(repeats):
            drop_evaluate(cfg)
            starts.clear()
            t0 = time.time()
            summary = call()
            total = time.time() - t0
            reused = {s: o["reused"] for s, o in summary["stages"].items()}
            assert reused == {s: s != "evaluate" for s in STAGES}, f"{name}: unexpected stages {reused}"
            assert len(starts) == 1, f"{name}: evaluate ran {len(starts)} times"
            rows.append({"to_stage_s": starts[0] - t0, "total_s": total})
        out["reruns"][name] = rows
    drop_evaluate(cfg)  # leave the store as the failure left it, for the next mode
    (work / f"result-{mode}.json").write_text(json.dumps(out))


def cli_child(stamp: Path, args: list[str]) -> None:
    """``tuneline <args>`` in this fresh process; writes when the flow was called, when evaluate
    started and how long a temporary API took to start, to ``stamp``."""
    # `tuneline run` sets this before it imports prefect; the wrappers below import it earlier
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tuneline")
    marks: dict = {"api_start_s": 0.0}
    timed_api_start(lambda s: marks.update(api_start_s=marks["api_start_s"] + s))
    stamp_evaluate_start(lambda t: stamp.write_text(json.dumps({**marks, "evaluate": t})))
    import flows.finetune as ff

    flow = ff.finetune

    def finetune(*a, **kw):  # the CLI imports it from the module when it runs
        marks["flow_call"] = time.time()
        return flow(*a, **kw)

    ff.finetune = finetune
    from tuneline.cli import app

    app(args)


# ------------------------------------------------------------------------- parent


def run_child(mode: str, env: dict[str, str], work: Path, repeats: int, full: bool) -> dict:
    log = work / f"{mode}.log"
    cmd = [sys.executable, __file__, "--child", mode, str(work), str(repeats), "full" if full else "reruns"]
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise RuntimeError(f"the {mode} run failed ({rc}); the end of its output:\n{log.read_text()[-4000:]}")
    return json.loads((work / f"result-{mode}.json").read_text())


def cli_rerun(mode: str, env: dict[str, str], work: Path) -> dict:
    """``tuneline run CONFIG`` as a new process, on the store as the failure left it."""
    stamp, log = work / "evaluate-start.json", work / f"cli-{mode}.log"
    stamp.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--cli-child", str(stamp), "run", str(work / "demo-bench.yaml")]
    t0 = time.time()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    total = time.time() - t0
    if rc or not stamp.exists():
        raise RuntimeError(f"`tuneline run` ({mode}) failed ({rc}); the end of its output:\n{log.read_text()[-4000:]}")
    got = json.loads(stamp.read_text())
    return {
        "to_stage_s": got["evaluate"] - t0,
        "total_s": total,
        "to_flow_call_s": got["flow_call"] - t0,
        "api_start_s": got["api_start_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-server", action="store_true", help="skip the local `prefect server` mode")
    ap.add_argument("--no-cli", action="store_true", help="skip the new-process `tuneline run` re-runs")
    ap.add_argument("--repeats", type=int, default=3, help="re-runs of each kind per mode (median shown)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (stores, logs)")
    opts = ap.parse_args()

    from tuneline import ui

    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-rerun-"))
    shutil.copytree(REPO / "data" / "sample", work / "sample")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(BASE_ENV, PREFECT_HOME=str(work / "prefect-home"))
    load = [os.getloadavg()[0]]
    rows: list[tuple[str, str, dict]] = []  # (API, how, {to_stage_s, total_s, ...})
    procs = []
    try:
        eph = run_child("ephemeral", env, work, opts.repeats, full=True)
        full_s, api_starts = eph["full_s"], {"ephemeral": eph["api_start_s"]}
        rows += [("ephemeral", k, median_row(v)) for k, v in eph["reruns"].items()]
        if not opts.no_cli:
            rows.append(("ephemeral", "`tuneline run` (new process)", cli_rerun("ephemeral", env, work)))
        if not opts.no_server:
            home = work / "prefect-server"
            t = time.perf_counter()
            proc, api = ui.start_server(home, ui.free_port(), log=work / "server.log")
            procs.append(proc)
            ui.wait_healthy(api, proc)
            api_starts["server"] = time.perf_counter() - t
            senv = {**ui.prefect_env(home, api), **BASE_ENV}
            srv = run_child("server", senv, work, opts.repeats, full=False)
            rows += [("server", k, median_row(v)) for k, v in srv["reruns"].items()]
            if not opts.no_cli:
                rows.append(("server", "`tuneline run` (new process)", cli_rerun("server", senv, work)))
    finally:
        ui.stop(procs)
        if any(p.poll() is None for p in procs):
            raise RuntimeError("the prefect server this script started is still running")
    load.append(os.getloadavg()[0])

    print(
        f"Full run (cold demo config, evaluate fails, ephemeral API): {full_s:.1f} s.  "
        f"{os.cpu_count()} cores, 1-min load {load[0]:.1f} at start, {load[1]:.1f} at end"
    )
    print(
        f"{'API':<11}{'re-run':<32}{'to evaluate s':>14}{'of full run':>13}  {'goal <' + format(GOAL, '.0%'):<9}"
        f"{'re-run total s':>15}"
    )
    for api_mode, how, r in rows:
        frac = r["to_stage_s"] / full_s
        print(
            f"{api_mode:<11}{how:<32}{r['to_stage_s']:>14.2f}{frac:>13.1%}  {'met' if frac < GOAL else 'missed':<9}"
            f"{r['total_s']:>15.1f}"
        )
    print()
    starts = f"ephemeral {api_starts['ephemeral']:.1f} s (fresh database)"
    if "server" in api_starts:
        starts += f", local server {api_starts['server']:.1f} s (process start to healthy)"
    print(f"API start, before the in-process clocks: {starts}")
    for api_mode, _, r in rows:
        if "to_flow_call_s" in r:
            flow_to_eval = r["to_stage_s"] - r["to_flow_call_s"] - r["api_start_s"]
            print(
                f"New process, {api_mode}: {r['to_flow_call_s']:.1f} s to the flow call (Python, imports, config), "
                f"{r['api_start_s']:.1f} s temporary API start, {flow_to_eval:.1f} s flow start to evaluate."
            )
    if opts.keep:
        print(f"work dir (store, logs): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        for k, v in BASE_ENV.items():
            os.environ.setdefault(k, v)
        mode, work, repeats, what = sys.argv[2:6]
        child(mode, Path(work), int(repeats), full=what == "full")
    elif len(sys.argv) > 1 and sys.argv[1] == "--cli-child":
        cli_child(Path(sys.argv[2]), sys.argv[3:])
    else:
        main()
