"""How much a re-run costs when nothing, or one stage's config, changed.

Runs the demo pipeline three times side by side in one process, on a fresh artifact store:
a cold run, the same config again (every stage reused), and a run with one dedup setting
changed (dedup -> evaluate recomputed). Prints wall times and ratios to the cold run.

    python bench/cache_reuse.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TUNELINE_PROGRESS", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.finetune import finetune  # noqa: E402
from tuneline.config import DEMO_CONFIG, load_config  # noqa: E402


def timed(cfg) -> tuple[float, dict]:
    t0 = time.perf_counter()
    summary = finetune(config=cfg)
    return time.perf_counter() - t0, summary


def main() -> None:
    root = tempfile.mkdtemp(prefix="tuneline-bench-")
    base = load_config(DEMO_CONFIG, [f"run.artifact_root={root}"])
    changed = load_config(DEMO_CONFIG, [f"run.artifact_root={root}", "dedup.hashes_per_bucket=4"])
    rows = []
    for label, cfg in (("cold", base), ("unchanged", base), ("dedup changed", changed)):
        secs, summary = timed(cfg)
        ran = [s for s, o in summary["stages"].items() if not o["reused"]]
        work = sum(o["seconds"] for o in summary["stages"].values() if not o["reused"])
        rows.append((label, secs, work, ran))
    cold = rows[0][1]
    print(f"{'run':<15}{'wall s':>9}{'stage work s':>14}{'vs cold':>9}  stages run")
    for label, secs, work, ran in rows:
        print(f"{label:<15}{secs:>9.1f}{work:>14.1f}{secs / cold:>9.2f}  {', '.join(ran) or '-'}")


if __name__ == "__main__":
    main()
