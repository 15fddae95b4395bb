"""Runs over time: the headline numbers of every run of a pipeline, from its lineage records.

Every finished run writes a lineage record (``<root>/runs/<time>-<pid>-<id>.json``: the run's
name, config and the artifact of every stage, see ``tuneline.runner``). A scheduled deployment
therefore leaves one record per run, and ``runs(store, name)`` turns them into rows: when, how
long, which train and evaluate artifacts, and each stage's ``headline(report)`` numbers (train
loss; eval loss base → tuned; task metrics). ``tuneline runs`` prints them and ``--plot``
draws them against time, so whether quality moves from one run to the next is one command.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tuneline import registry
from tuneline.artifacts import ArtifactRef, ArtifactStore

log = logging.getLogger(__name__)


def records(store: ArtifactStore, name: str | None = None) -> list[dict[str, Any]]:
    """The lineage records of ``store`` (of the runs called ``name``, if given), oldest first.

    A record that cannot be read (cut short by a full disk, edited by hand) is skipped with a
    warning naming it.
    """
    found = []
    for path in store.list_runs():
        try:
            rec = json.loads(store.read_run(path))
        except (OSError, ValueError) as e:
            log.warning("runs: skipping unreadable lineage record %s (%s)", path, e)
            continue
        if isinstance(rec, dict) and (name is None or rec.get("run") == name):
            found.append(rec)
    return sorted(found, key=lambda r: str(r.get("finished", "")))


def stage_report(store: ArtifactStore, rec: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """The report of ``stage``'s artifact in run ``rec``, or None (not run, or no longer stored)."""
    entry = rec.get("stages", {}).get(stage)
    if not entry:
        return None
    try:
        return store.open(ArtifactRef.model_validate(entry["ref"])).report
    except (FileNotFoundError, KeyError, ValueError):
        return None


def row(store: ArtifactStore, rec: dict[str, Any]) -> dict[str, Any]:
    """One run as a flat row: name, finished, seconds, the train and evaluate keys, and the
    headline numbers of every stage that has them (``<stage>.<name>``)."""
    out: dict[str, Any] = {
        "run": rec.get("run"),
        "finished": rec.get("finished"),
        "seconds": rec.get("seconds"),
    }
    for stage in ("train", "evaluate"):
        entry = rec.get("stages", {}).get(stage)
        out[f"{stage}_key"] = entry["ref"]["key"][:12] if entry else None
    for name in registry.names():
        stage = registry.get(name)
        if stage.headline is None:
            continue
        report = stage_report(store, rec, name)
        if not report:
            continue
        try:
            numbers = stage.headline(report)
        except (KeyError, TypeError, ValueError):  # a report from before a field existed
            continue
        out.update({f"{name}.{k}": v for k, v in numbers.items()})
    return out


def runs(store: ArtifactStore, name: str | None = None) -> list[dict[str, Any]]:
    """Every run of ``name`` (all runs if None) as a row (see ``row``), oldest first."""
    return [row(store, rec) for rec in records(store, name)]


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The headline columns any row has, in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if "." in k and k not in cols]
    return cols


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> list[str]:
    """A PNG with one panel per headline metric against the run's finish time; returns the
    metrics drawn."""
    from datetime import datetime

    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    cols = metric_columns(rows)
    if not cols:
        raise ValueError("no run has headline metrics to plot (train or evaluate never ran)")
    n = len(cols)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n), squeeze=False, sharex=True)
    for ax, col in zip(axes[:, 0], cols, strict=True):
        points = [
            (datetime.strptime(r["finished"], "%Y-%m-%dT%H:%M:%SZ"), r[col])
            for r in rows
            if isinstance(r.get(col), int | float) and r.get("finished")
        ]
        ax.plot([t for t, _ in points], [v for _, v in points], marker="o", markersize=4)
        ax.set_ylabel(col, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("run finished (UTC)")
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return cols
