"""What Prefect costs per stage: flow wall time minus the stages' own work, two kinds of API.

Runs the demo pipeline (deployments/demo.yaml, fresh store, private copy of data/sample) cold,
then three times with every stage reused (the purest measure: the stages have almost nothing
to do), under (a) the ephemeral API, what a run gets with no PREFECT_API_URL: a temporary
server that the first flow call of a process starts (started here before the clock, and
reported on its own), and (b) a local ``prefect server`` that this script starts on a free
loopback port with its own PREFECT_HOME, and stops at the end.

A stage's own work is ``StageOutcome.seconds``: wall time inside ``tuneline.stage.execute``, from before
the artifact key is computed to after the artifact is committed (or found). It excludes the
task's orchestration (task run creation, state events, retries set-up), the flow run's start
and end, and the lineage record, which is what "outside stages" below measures:
``(flow wall - sum of stage seconds) / 7``. It includes the Prefect calls a stage makes itself:
its report and summary artifacts (``publish_report``, on reuse too) and train's progress
artifact. This script times those by wrapping them (no library change) and shows them as
"inside stages", so the brief's definition stays intact and the whole Prefect cost is visible.

Each API mode runs in its own process (``--child``): Prefect keeps process-wide clients and
event workers bound to the first API URL they saw (``temporary_settings`` would change the
client but not the events worker that records task runs), so switching URLs in one process
would not measure, or even reach, the second API. Logging stays at Prefect's default (INFO,
shipped to the API) as in a user's run; the children's output goes to log files.

    python bench/prefect_overhead.py        # about 2-3 minutes on 2 cores
    python bench/prefect_overhead.py --no-server --reused 5
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
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TUNELINE_PROGRESS": "0",
}


def time_prefect_calls_in_stages(sink: dict[str, float]) -> None:
    """Adds the seconds of every Prefect artifact call a stage makes to ``sink``, by stage."""
    import tuneline.orchestration as st

    publish = st.publish_report

    def publish_report(stage, *args, **kwargs):
        t = time.perf_counter()
        try:
            return publish(stage, *args, **kwargs)
        finally:
            sink[stage.name] += time.perf_counter() - t

    st.publish_report = publish_report  # the task wrapper looks it up in the module at call time

    init, update = st.PrefectProgress.__init__, st.PrefectProgress.update

    def timed(fn):
        def wrapper(self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                sink[self._bench_stage] += time.perf_counter() - t

        return wrapper

    def progress_init(self, stage, *args, **kwargs):
        self._bench_stage = stage
        return timed(init)(self, stage, *args, **kwargs)

    st.PrefectProgress.__init__ = progress_init
    st.PrefectProgress.update = timed(update)


def child(mode: str, work: Path, reused: int) -> None:
    from flows.finetune import finetune
    from tuneline.config import STAGES, load_config

    cfg = load_config(REPO / "deployments" / "demo.yaml", [f"run.artifact_root={work / f'artifacts-{mode}'}"])
    for s in cfg.ingest.sources:
        s.path = str(work / "sample" / Path(s.path).relative_to("data/sample"))
    in_stage: dict[str, float] = defaultdict(float)
    time_prefect_calls_in_stages(in_stage)
    out: dict = {"mode": mode, "runs": []}
    if mode == "ephemeral":
        from prefect.server.api.server import SubprocessASGIServer

        t = time.perf_counter()
        SubprocessASGIServer().start()  # what the first flow call would do; not in any run's clock
        out["api_start_s"] = time.perf_counter() - t

    for i in range(1 + reused):
        in_stage.clear()
        t0 = time.perf_counter()
        summary = finetune(config=cfg)
        wall = time.perf_counter() - t0
        stages = summary["stages"]
        assert list(stages) == list(STAGES)
        expect_reused = i > 0
        assert all(o["reused"] == expect_reused for o in stages.values()), {s: o["reused"] for s, o in stages.items()}
        out["runs"].append(
            {
                "kind": "reused" if expect_reused else "cold",
                "wall_s": wall,
                "stage_s": sum(o["seconds"] for o in stages.values()),
                "in_stage_prefect_s": sum(in_stage.values()),
                "n": len(stages),
            }
        )
    (work / f"result-{mode}.json").write_text(json.dumps(out))


def run_child(mode: str, env: dict[str, str], work: Path, reused: int) -> dict:
    log = work / f"{mode}.log"
    with open(log, "wb") as fh:
        cmd = [sys.executable, __file__, "--child", mode, str(work), str(reused)]
        rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise RuntimeError(f"the {mode} run failed ({rc}); the end of its output:\n{log.read_text()[-4000:]}")
    return json.loads((work / f"result-{mode}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-server", action="store_true", help="skip the local `prefect server` mode")
    ap.add_argument("--reused", type=int, default=3, help="runs with every stage reused, after the cold one")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (stores, logs)")
    opts = ap.parse_args()

    from tuneline import ui

    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-overhead-"))
    shutil.copytree(REPO / "data" / "sample", work / "sample")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(BASE_ENV, PREFECT_HOME=str(work / "prefect-ephemeral"))
    load = [os.getloadavg()[0]]
    results = []
    procs = []
    try:
        results.append(run_child("ephemeral", env, work, opts.reused))
        if not opts.no_server:
            home = work / "prefect-server"
            t = time.perf_counter()
            proc, api = ui.start_server(home, ui.free_port(), log=work / "server.log")
            procs.append(proc)
            ui.wait_healthy(api, proc)
            start = time.perf_counter() - t
            results.append(
                {
                    **run_child("server", {**ui.prefect_env(home, api), **BASE_ENV}, work, opts.reused),
                    "api_start_s": start,
                }
            )
    finally:
        ui.stop(procs)
        if any(p.poll() is None for p in procs):
            raise RuntimeError("the prefect server this script started is still running")
    load.append(os.getloadavg()[0])

    def figures(res: dict, kind: str) -> dict[str, float]:
        runs = [r for r in res["runs"] if r["kind"] == kind]
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "stage_s", "in_stage_prefect_s")}
        n = runs[0]["n"]
        med["outside_per_stage"] = (med["wall_s"] - med["stage_s"]) / n
        med["inside_per_stage"] = med["in_stage_prefect_s"] / n
        med["total_per_stage"] = med["outside_per_stage"] + med["inside_per_stage"]
        return med

    names = [r["mode"] for r in results]
    label = {"ephemeral": "ephemeral API", "server": "local server"}
    print(
        f"Prefect overhead per stage, demo config, 7 stages ({os.cpu_count()} cores, 1-min load "
        f"{load[0]:.1f} at start, {load[1]:.1f} at end; reused: median of {opts.reused})"
    )
    print(f"{'':<48}" + "".join(f"{label[m]:>16}" for m in names))
    lines = [
        ("flow wall s", "wall_s"),
        ("sum of stage seconds", "stage_s"),
        ("outside stages, per stage s", "outside_per_stage"),
        ("Prefect calls inside stages, per stage s", "inside_per_stage"),
        ("Prefect per stage, both, s", "total_per_stage"),
    ]
    for kind in ("cold", "reused"):
        figs = [figures(r, kind) for r in results]
        for text, key in lines:
            print(f"{kind + ': ' + text:<48}" + "".join(f"{f[key]:>16.2f}" for f in figs))
    print(f"{'API start s (before the clocks)':<48}" + "".join(f"{r['api_start_s']:>16.1f}" for r in results))
    if opts.keep:
        print(f"work dir (stores, logs): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        for k, v in BASE_ENV.items():
            os.environ.setdefault(k, v)
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
