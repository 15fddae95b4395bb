"""scale_bench.py — how the data stages scale with the number of records (baseline).

Generates N unique chat records (about 1 KB each) from public text in ../shared/data: OpenAI
``messages`` rows whose user turn is an alpaca instruction and whose assistant turn recombines
sentences of alpaca answers and English common-crawl text, each with a per-record unique token
so dedup keeps it. A few percent are planted duplicates (exact copies and copies with one
sentence changed) and a few percent carry a PII value (email, phone, name). Writes them as
JSONL to a temp folder and runs ingest -> pii -> dedup -> augment (no teacher) -> format with
``tuneline.stage.execute`` on a temp artifact root, with the default config (only
``ingest.sources`` and ``ingest.languages: [en]`` set).

Each N runs in its own process (a fresh interpreter, so one N's memory does not carry into
the next). Per stage: seconds, records/s (records the stage read), records kept, and peak RSS
of the process and its children (pii's worker processes), sampled every 0.2 s with psutil, next
to the RSS when the stage started. Then the ratio of peak RSS at the largest N to the smallest
(issue target: 100k within 1.3x of 10k) and ingest->format seconds extrapolated linearly from
the largest N to 1M records (target: <= 2 h on 2 cores with PII on).

    .venv/bin/python bench/scale_bench.py                      # --n 2000 --n 10000, a few minutes
    .venv/bin/python bench/scale_bench.py --n 10000 --n 100000
    .venv/bin/python bench/scale_bench.py --no-pii             # skip NER (pii.enabled=false)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TUNELINE_PROGRESS", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STAGES = ("ingest", "pii", "dedup", "augment", "format")
SAMPLE_S = 0.2
TARGET_RSS_RATIO = 1.3
TARGET_1M_S = 2 * 3600

# ---------------------------------------------------------------- records

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_EN = {
    "the",
    "and",
    "of",
    "to",
    "is",
    "in",
    "that",
    "for",
    "with",
    "a",
    "are",
    "it",
    "on",
    "you",
    "this",
}
FIRST = ["Amara", "Liam", "Sofia", "Kenji", "Olivia", "Mateo", "Priya", "Noah", "Elena", "Tomasz"]
LAST = [
    "Okafor",
    "Johnson",
    "Rossi",
    "Tanaka",
    "Schmidt",
    "Morales",
    "Mehta",
    "Nowak",
    "Larsen",
    "Dubois",
]


def _sentences(text: str) -> list[str]:
    out = []
    for s in _SENT.split(text.replace("\n", " ")):
        s = " ".join(s.split())
        if (
            40 <= len(s) <= 300
            and s[-1] in ".!?"
            and s.isascii()
            and not re.search(r"\d{5,}|@|https?:", s)
        ):
            words = s.lower().split()
            if sum(w in _EN for w in words) >= max(2, len(words) // 8):
                out.append(s)
    return out


def load_pools() -> tuple[list[str], list[str]]:
    """Prompts (alpaca instructions) and English answer sentences (alpaca + common crawl)."""
    alpaca = json.loads((DATA / "instruction" / "alpaca_en_demo.json").read_text())
    prompts = sorted(
        {r["instruction"].strip() for r in alpaca if 20 <= len(r["instruction"].strip()) <= 200}
    )
    sents: list[str] = []
    for r in alpaca:
        sents += _sentences(r["output"])
    with gzip.open(DATA / "web" / "common_crawl_sample_697.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            sents += _sentences(json.loads(line)["text"])
    return prompts, sorted(set(sents))


def _token(i: int, rng: random.Random) -> str:
    """A letters-only unique token (digits could read as phone or licence numbers)."""
    letters = "bcdfghjklmnpqrstvwxz"
    s = ""
    i += 1
    while i:
        i, r = divmod(i, 20)
        s += letters[r]
    return "ref " + "".join(rng.choice(letters) for _ in range(3)) + s


def _pii(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    kind = rng.choice(["EMAIL", "PHONE", "PERSON"])
    if kind == "EMAIL":
        return (
            kind,
            f"You can reach me at {first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com.",
        )
    if kind == "PHONE":
        return kind, f"My phone number is (415) 555-{rng.randint(1000, 9999)}."
    return kind, f"My name is {first} {last} and I need help with this."


def make_records(
    n: int, seed: int = 0, dup_rate: float = 0.03, pii_rate: float = 0.03
) -> tuple[list[dict], dict]:
    """``n`` rows: (1 - dup_rate) unique records, the rest planted duplicates of earlier ones
    (two thirds exact, one third with one answer sentence replaced)."""
    rng = random.Random(seed)
    prompts, sents = load_pools()
    rows: list[dict] = []
    bodies: list[tuple[str, list[str]]] = []
    stats = {
        "unique": 0,
        "exact_dup": 0,
        "near_dup": 0,
        "pii": 0,
        "pool_prompts": len(prompts),
        "pool_sentences": len(sents),
    }
    for i in range(n):
        if bodies and rng.random() < dup_rate:
            user, answer = rng.choice(bodies)
            if rng.random() < 2 / 3:
                stats["exact_dup"] += 1
            else:
                answer = list(answer)
                answer[rng.randrange(len(answer))] = rng.choice(sents)
                stats["near_dup"] += 1
        else:
            user = f"{rng.choice(prompts)} ({_token(i, rng)})"
            if rng.random() < pii_rate:
                user = f"{_pii(rng)[1]} {user}"
                stats["pii"] += 1
            answer, size = [], len(user)
            while size < 950:
                s = rng.choice(sents)
                answer.append(s)
                size += len(s) + 1
            bodies.append((user, answer))
            stats["unique"] += 1
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": " ".join(answer)},
                ]
            }
        )
    return rows, stats


# ---------------------------------------------------------------- measuring


class RssSampler(threading.Thread):
    """Samples RSS of this process plus its children every SAMPLE_S; ``mark()`` starts a new
    window. ``peak`` is the highest total; ``peak_children`` the children's share at their highest
    (forked children share pages with the parent, so the total can count some memory twice)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.peak = 0
        self.peak_children = 0
        self._halt = threading.Event()

    def sample(self) -> tuple[int, int]:
        own = self.proc.memory_info().rss
        children = 0
        for p in self.proc.children(recursive=True):
            try:
                children += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return own + children, children

    def rss(self) -> int:
        return self.sample()[0]

    def update(self) -> None:
        total, children = self.sample()
        self.peak = max(self.peak, total)
        self.peak_children = max(self.peak_children, children)

    def mark(self) -> int:
        self.peak, self.peak_children = self.sample()
        return self.peak

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            self.update()

    def stop(self) -> None:
        self._halt.set()


def one(n: int, pii: bool, seed: int, executor: str = "local", workers: int | None = None) -> dict:
    """Runs the five data stages on n generated records in this process; returns the figures."""
    from tuneline import registry
    from tuneline.config import load_config
    from tuneline.stage import execute

    stages = [registry.get(s) for s in STAGES]

    tmp = Path(tempfile.mkdtemp(prefix="tuneline-scale-"))
    try:
        t0 = time.perf_counter()
        rows, stats = make_records(n, seed)
        src = tmp / "records.jsonl"
        with src.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        del rows
        stats["gen_s"] = time.perf_counter() - t0
        stats["mean_bytes"] = src.stat().st_size / n
        overrides = [
            f"run.artifact_root={tmp / 'artifacts'}",
            f"ingest.sources=[{{path: {src}}}]",
            "ingest.languages=[en]",
        ]
        if not pii:
            overrides.append("pii.enabled=false")
        overrides.append(f"run.executor={executor}")
        if workers:
            overrides.append(f"run.workers={workers}")
        cfg = load_config(None, overrides)
        sampler = RssSampler()
        sampler.start()
        refs: dict[str, object] = {}
        out = []
        for stage in stages:
            start_rss = sampler.mark()
            t = time.perf_counter()
            outcome = execute(stage, cfg, [refs[i] for i in stage.inputs])
            secs = time.perf_counter() - t
            sampler.update()
            peak, peak_children = sampler.peak, sampler.peak_children
            refs[stage.name] = outcome.ref
            rep = outcome.report
            n_in = rep.get("records_in", rep.get("records_read"))
            if n_in is None:  # format reports only what it wrote: it reads augment's records
                n_in = out[-1]["kept"] if out else n
            out.append({"stage": stage.name, "seconds": secs, "in": n_in, "kept": rep.get("records_out"),
                        "rss_start": start_rss, "rss_peak": peak, "rss_children": peak_children})  # fmt: skip
            if stage.name == "dedup":
                stats["dedup_found"] = [rep.get("exact_duplicates"), rep.get("near_duplicates")]
            if stage.name == "pii":
                stats["pii_report"] = {
                    k: v for k, v in rep.items() if k not in ("examples", "samples")
                }
        sampler.stop()
        if executor == "ray":
            import ray

            ray.shutdown()
        return {
            "n": n,
            "pii": pii,
            "gen": stats,
            "stages": out,
            "executor": executor,
            "workers": workers,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- report

MB = 1024 * 1024


def print_table(res: dict) -> None:
    g = res["gen"]
    print(f"\nrun.executor={res['executor']}, run.workers={res['workers'] or 'one per core'}")
    print(f"N = {res['n']:,} rows ({g['unique']:,} unique, {g['exact_dup']} exact + {g['near_dup']} near "
          f"duplicates planted, {g['pii']} with PII; {g['mean_bytes']:.0f} B/row; generated in {g['gen_s']:.1f} s)")  # fmt: skip
    print(f"pools: {g['pool_prompts']} prompts, {g['pool_sentences']:,} answer sentences")
    if g.get("dedup_found"):
        print(f"dedup dropped {g['dedup_found'][0]} exact + {g['dedup_found'][1]} near duplicates")
    print(
        f"{'stage':<9}{'s':>9}{'records/s':>11}{'in':>9}{'kept':>9}{'RSS start MB':>14}{'peak RSS MB':>13}{'of it children':>16}"
    )
    total = 0.0
    for s in res["stages"]:
        total += s["seconds"]
        rate = s["in"] / s["seconds"] if s["seconds"] > 0 else float("inf")
        kept = "-" if s["kept"] is None else f"{s['kept']:,}"
        print(f"{s['stage']:<9}{s['seconds']:>9.1f}{rate:>11.0f}{s['in']:>9,}{kept:>9}"
              f"{s['rss_start'] / MB:>14.0f}{s['rss_peak'] / MB:>13.0f}{s['rss_children'] / MB:>16.0f}")  # fmt: skip
    peak = max(s["rss_peak"] for s in res["stages"])
    print(
        f"{'total':<9}{total:>9.1f}{res['n'] / total:>11.0f}{'':>9}{'':>9}{'':>14}{peak / MB:>13.0f}"
    )


def print_speedup(by_workers: dict) -> None:
    """Stage seconds per run.workers value, and the speed-up over the fewest workers."""
    ws = sorted(by_workers, key=lambda w: w or 0)
    print(f"\nspeed-up with run.workers (executor: {by_workers[ws[0]][0]['executor']})")
    print("| N | stage | " + " | ".join(f"s, {w} workers" for w in ws) + " | speed-up |")
    print("|---|---|" + "---:|" * (len(ws) + 1))
    for i, res in enumerate(by_workers[ws[0]]):
        for j, st in enumerate(res["stages"]):
            secs = [by_workers[w][i]["stages"][j]["seconds"] for w in ws]
            print(f"| {res['n']:,} | {st['stage']} | " + " | ".join(f"{x:.1f}" for x in secs)
                  + f" | {secs[0] / secs[-1]:.2f}x |")  # fmt: skip
        tot = [sum(s["seconds"] for s in by_workers[w][i]["stages"]) for w in ws]
        print(
            f"| {res['n']:,} | **total** | "
            + " | ".join(f"{x:.1f}" for x in tot)
            + f" | {tot[0] / tot[-1]:.2f}x |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n",
        type=int,
        action="append",
        help="records per run (repeatable; default 2000 and 10000)",
    )
    ap.add_argument(
        "--no-pii", action="store_true", help="pii.enabled=false: skip NER for a quicker run"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", choices=["local", "ray"], default="local", help="run.executor")
    ap.add_argument(
        "--workers",
        type=int,
        action="append",
        help="run.workers (repeatable: each N runs once per value, and a speed-up table follows)",
    )
    ap.add_argument("--_one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._one:  # child: one N, figures as JSON
        res = one(args._one, not args.no_pii, args.seed, args.executor, (args.workers or [None])[0])
        Path(args._out).write_text(json.dumps(res))
        return

    sizes = sorted(set(args.n or [2000, 10000]))
    print(f"scale_bench: N = {', '.join(f'{n:,}' for n in sizes)}; PII {'off' if args.no_pii else 'on'}; "
          f"{os.cpu_count()} CPUs; each N in a fresh process")  # fmt: skip
    results = []
    by_workers: dict[int | None, list[dict]] = {}
    for w in args.workers or [None]:
        for n in sizes:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                out = f.name
            cmd = [sys.executable, __file__, "--_one", str(n), "--_out", out, "--seed", str(args.seed),
                   "--executor", args.executor]  # fmt: skip
            if w:
                cmd += ["--workers", str(w)]
            if args.no_pii:
                cmd.append("--no-pii")
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            res = json.loads(Path(out).read_text())
            os.unlink(out)
            res["process_s"] = time.perf_counter() - t
            by_workers.setdefault(w, []).append(res)
            print_table(res)
    if len(by_workers) > 1:
        print_speedup(by_workers)
    results = by_workers[(args.workers or [None])[-1]]

    print()
    small, large = results[0], results[-1]
    p_small = max(s["rss_peak"] for s in small["stages"])
    p_large = max(s["rss_peak"] for s in large["stages"])
    if len(results) > 1:
        ratio = p_large / p_small
        if small["n"] >= 10_000 and large["n"] >= 100_000:
            verdict = "met" if ratio <= TARGET_RSS_RATIO else "missed"
        else:
            verdict = "these sizes are smaller than the target's"
        print(f"peak RSS {large['n']:,} vs {small['n']:,}: {p_large / MB:.0f} / {p_small / MB:.0f} MB = {ratio:.2f}x "
              f"(target: 100k within {TARGET_RSS_RATIO}x of 10k; {verdict})")  # fmt: skip
        for a, b in zip(small["stages"], large["stages"], strict=True):
            grow = (b["rss_peak"] - b["rss_start"]) / MB, (a["rss_peak"] - a["rss_start"]) / MB
            print(f"  {a['stage']:<8} peak {a['rss_peak'] / MB:6.0f} -> {b['rss_peak'] / MB:6.0f} MB "
                  f"({b['rss_peak'] / a['rss_peak']:.2f}x); growth within the stage {grow[1]:+.0f} -> {grow[0]:+.0f} MB")  # fmt: skip
    total = sum(s["seconds"] for s in large["stages"])
    est = total * 1_000_000 / large["n"]
    verdict = "met" if est <= TARGET_1M_S else "missed"
    note = (
        ""
        if not args.no_pii
        else " (PII off: not comparable with the target, which is with PII on)"
    )
    print(f"ingest->format at 1M records, linear from {large['n']:,}: {total:.1f} s x {1_000_000 / large['n']:.0f} = "
          f"{est:,.0f} s = {est / 3600:.1f} h (target <= {TARGET_1M_S / 3600:.0f} h on 2 cores with PII on: {verdict}){note}")  # fmt: skip


if __name__ == "__main__":
    main()
