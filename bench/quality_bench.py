"""quality_bench.py — the figures behind quality.gates' defaults, on the public sets.

Runs ingest -> pii -> dedup -> augment (no teacher) -> format -> quality with the default config
on each public set in ../shared/data (never the project's data/sample/), with every gate off so
that each set's report is complete, then applies the default gates (``QualityGates()``) to the
report and prints each gate's figure and verdict. Two deliberately wrong configs show what the
gates exist to stop: a source read with the wrong language setting, and a templated set that is
mostly one chat repeated.

    .venv/bin/python bench/quality_bench.py        # ~3 min on 2 cores
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# (name, source, format, extra overrides, what the run should do)
CASES: list[tuple[str, str, str, list[str], str]] = [
    ("alpaca_en_demo", "instruction/alpaca_en_demo.json", "auto", [], "pass"),
    # {instruction, instances: [...]} is no shape ingest reads: every row is unparseable
    ("self_instruct_seed_tasks (unsupported shape)", "instruction/self_instruct_seed_tasks.jsonl", "auto", [], "stop"),
    ("sharegpt_toolcall_demo", "instruction/sharegpt_toolcall_demo.json", "sharegpt", [], "pass"),
    ("dpo_en_demo", "preference/dpo_en_demo.json", "auto", [], "pass"),
    ("hh_rlhf_harmless_test", "preference/hh_rlhf_harmless_test.jsonl.gz", "auto", [], "pass"),
    ("common_crawl_sample (en only)", "web/common_crawl_sample_697.jsonl.gz", "auto", ["ingest.languages=[en]"], "pass"),
    ("alpaca_en_demo, languages: [de] (wrong)", "instruction/alpaca_en_demo.json", "auto", ["ingest.languages=[de]"], "stop"),
    ("sharegpt_identity (templated)", "instruction/sharegpt_identity.json", "sharegpt", [], "stop"),
]  # fmt: skip
GATES_OFF = [
    "quality.gates.max_residual_pii=null",
    "quality.gates.min_kept_fraction=null",
    "quality.gates.max_duplicate_fraction=null",
    "quality.gates.min_train_records=null",
]


def one(name: str, source: str, fmt: str, extra: list[str], root: Path) -> dict:
    """Runs the data stages and quality on one set; returns the figures and the default gates' verdicts."""
    from tasks.quality import QualityGates, check_gates
    from tuneline import registry
    from tuneline.config import load_config
    from tuneline.stage import execute

    overrides = [
        f"run.artifact_root={root}",
        f"ingest.sources=[{{path: {DATA / source}, format: {fmt}}}]",
        *GATES_OFF,
        *extra,
    ]
    cfg = load_config(None, overrides)
    refs: dict = {}
    t0 = time.perf_counter()
    report = {}
    for stage_name in ("ingest", "pii", "dedup", "augment", "format", "quality"):
        stage = registry.get(stage_name)
        try:
            outcome = execute(stage, cfg, [refs[i] for i in stage.inputs])
        except Exception as e:  # noqa: BLE001 - a set the stages cannot take is a figure too
            return {"name": name, "error": f"{stage_name}: {type(e).__name__}: {str(e)[:200]}"}
        refs[stage_name] = outcome.ref
        report = outcome.report
    gates = check_gates(report, QualityGates())
    return {"name": name, "seconds": time.perf_counter() - t0, "report": report, "gates": gates}


def main() -> None:
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    from tasks.quality import QualityGates

    defaults = QualityGates()
    print(
        "default gates: "
        + ", ".join(f"{k}={v}" for k, v in defaults.model_dump().items())
        + f"\nsets from {DATA}\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tuneline-quality-bench-"))
    rows = []
    try:
        for name, source, fmt, extra, expect in CASES:
            res = one(name, source, fmt, extra, tmp / str(len(rows)))
            res["expect"] = expect
            rows.append(res)
            took = "error" if "error" in res else f"{res['seconds']:.0f} s"
            print(f"  {name}: {took}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        "\n| set | read | kept by ingest | residual PII | duplicates | train rows | gates failed | expected |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        if "error" in r:  # a stage stopped the run before quality: a stop too
            ok = "as expected" if r["expect"] == "stop" else "**stop, expected pass**"
            print(f"| {r['name']} | | | | | | stopped by {r['error'].split(':')[0]} | {ok} |")
            continue
        g = r["gates"]

        def val(gate: str, fmt: str = "{}", g=g) -> str:
            v = g[gate]["value"]
            return "–" if v is None else fmt.format(v)

        failed = [k for k, v in g.items() if v["status"] == "fail"]
        verdict = "stop" if failed else "pass"
        ok = "as expected" if verdict == r["expect"] else f"**{verdict}, expected {r['expect']}**"
        ing = r["report"].get("ingest", {})
        print(
            f"| {r['name']} | {ing.get('read', '–')} | {val('min_kept_fraction', '{:.0%}')} "
            f"| {val('max_residual_pii')} | {val('max_duplicate_fraction', '{:.1%}')} "
            f"| {val('min_train_records')} | {', '.join(failed) or '–'} | {ok} |"
        )
    print()
    for r in rows:
        if "error" in r:
            print(f"{r['name']}: {r['error']}")
        for v in r.get("gates", {}).values():
            if v["status"] == "fail":
                print(f"{r['name']}: {v['message']}")


if __name__ == "__main__":
    main()
