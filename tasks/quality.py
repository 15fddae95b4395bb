"""quality: one data-quality report per run, and the gates that stop a run before training.

Reads the reports of ingest, pii and dedup and the records and split rows of format, and
reports, in one place: the yield of each ingest filter (``rejected_by_reason`` against records
read), the records each data stage kept (a funnel), PII entities removed by type and what a
residual check still found, dedup's duplicates (cluster sizes where dedup reports them), the
language mix ingest saw, and histograms of characters per record and tokens per split row
(``histograms/*.png``, with the bin counts in the report so the Prefect UI's markdown shows
them as bars). ``report.md`` holds the same markdown as ``summary``.

Gates (``quality.gates``; ``null`` turns one off) are checked after the report is built: a
failed gate raises ``InputError`` naming the gate and the figure, so the run stops here, before
train, with one message and no retry. Nothing is published for a failed run (a later run with
the same config would otherwise reuse it and pass); the report goes to the run log instead.

Reports are read defensively: a field an older (or newer) upstream stage does not write is
shown as not measured, and a gate that needs it is skipped with a note, never failed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from pydantic import Field

from tuneline import progress
from tuneline.artifacts import Artifact, ArtifactWriter
from tuneline.errors import InputError
from tuneline.sections import Section
from tuneline.splits import SPLITS, read_split
from tuneline.stage import Stage

# ------------------------------------------------------------------------------- config


class QualityGates(Section):
    """Thresholds that fail the run; ``null`` turns a gate off."""

    max_residual_pii: int | None = Field(
        default=0,
        ge=0,
        description="Most PII entities pii's residual check may still find after scrubbing "
        "(structured PII left behind is a leak: 0).",
    )
    # Measured by running ingest and dedup with their defaults on ../shared/data: ingest kept Alpaca demo 98%, DPO demo 96%, ShareGPT identity 100%, the sample
    # corpus 86%, the Common Crawl sample 32% (390 of 697 not English). 0.25 passes an
    # English-only crawl of a multilingual dump and still stops a wrong format or language.
    min_kept_fraction: float | None = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Least share of the records read that ingest's filters may keep; below it a "
        "filter, a source's format or ingest.languages is probably wrong.",
    )
    # Same measurement: duplicates were 1.4% (Alpaca demo), 1.7% (DPO demo), 4.9% (Common
    # Crawl), 7% (sample corpus) and 82% for the templated ShareGPT identity chats, which
    # should stop a run: most of that source is one chat repeated.
    max_duplicate_fraction: float | None = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Most share of dedup's input that may be exact or near duplicates.",
    )
    min_train_records: int | None = Field(
        default=10, ge=0, description="Least rows in format's train split."
    )


class QualityConfig(Section):
    gates: QualityGates = Field(
        default_factory=QualityGates, description="Gates that fail the run."
    )
    bins: int = Field(default=20, ge=2, le=200, description="Bins of the length histograms.")


# ------------------------------------------------------------------------------ measures


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _counts(x: Any) -> dict[str, int]:
    """A ``{name: count}`` dict from a report field, or ``{}`` when it is anything else."""
    if not isinstance(x, dict):
        return {}
    return {str(k): int(v) for k, v in x.items() if _num(v) is not None}


def ingest_yield(report: dict[str, Any]) -> dict[str, Any]:
    """Records read and kept, and what each filter rejected (count and share of read)."""
    read, kept = _num(report.get("records_read")), _num(report.get("records_kept"))
    reasons = _counts(report.get("rejected_by_reason"))
    out: dict[str, Any] = {"read": int(read) if read is not None else None}
    out["kept"] = int(kept) if kept is not None else None
    out["kept_fraction"] = round(kept / read, 4) if read and kept is not None else None
    out["rejected_by_reason"] = {
        r: {"records": n, "fraction": round(n / read, 4) if read else None}
        for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))
    }
    sources = report.get("sources")
    if isinstance(sources, list):
        out["sources"] = [
            {k: s.get(k) for k in ("path", "format", "read", "kept", "rejected")}
            for s in sources
            if isinstance(s, dict)
        ]
    return out


def pii_measures(report: dict[str, Any]) -> dict[str, Any]:
    """Entities found and removed by type, and the residual count (None: not measured)."""
    out: dict[str, Any] = {"enabled": report.get("enabled", bool(report))}
    out["entities_removed"] = _counts(report.get("entities_removed"))
    out["entities_removed_total"] = sum(out["entities_removed"].values())
    found = _counts(report.get("entities_found"))
    if found:
        out["entities_found"] = found
    if _num(report.get("records_touched")) is not None:
        out["records_touched"] = int(report["records_touched"])
    # The residual check (pii re-analysing its own output) may report a total, a dict by type,
    # or both; older pii artifacts report neither.
    raw = report.get("residual")
    by_type = _counts(report.get("residual_by_type")) or _counts(raw)
    total = _num(raw) if not isinstance(raw, dict) else None
    if total is None:
        total = _num(report.get("residual_total"))
    if total is None and (by_type or "residual_by_type" in report or isinstance(raw, dict)):
        total = sum(by_type.values())
    out["residual"] = int(total) if total is not None else None
    out["residual_by_type"] = by_type
    return out


def dedup_measures(report: dict[str, Any]) -> dict[str, Any]:
    """Duplicates dropped, their share of dedup's input, and cluster sizes when reported."""
    n_in = _num(report.get("records_in"))
    exact = int(_num(report.get("exact_duplicates")) or 0)
    near = int(_num(report.get("near_duplicates")) or 0)
    out: dict[str, Any] = {
        "records_in": int(n_in) if n_in is not None else None,
        "records_kept": report.get("records_kept"),
        "exact_duplicates": exact,
        "near_duplicates": near,
        "duplicate_fraction": round((exact + near) / n_in, 4) if n_in else None,
    }
    if _num(report.get("minhash_clusters")) is not None:
        out["minhash_clusters"] = int(report["minhash_clusters"])
    sizes = report.get("cluster_sizes")
    if isinstance(sizes, list):  # one size per cluster
        sizes = Counter(int(s) for s in sizes if _num(s) is not None)
    sizes = _counts(sizes)
    if sizes:  # {cluster size: clusters of that size}, smallest first
        out["cluster_sizes"] = dict(
            sorted(
                sizes.items(),
                key=lambda x: (not x[0].isdigit(), int(x[0]) if x[0].isdigit() else 0, x[0]),
            )
        )
    return out


def languages(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Ingest's language mix: records per language and their share."""
    langs = _counts(report.get("languages"))
    total = sum(langs.values())
    return {
        k: {"records": n, "fraction": round(n / total, 4)}
        for k, n in sorted(langs.items(), key=lambda x: (-x[1], x[0]))
    }


def length_stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    v = sorted(values)

    def pct(p: float) -> int:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

    return {
        "count": len(v),
        "min": v[0],
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": v[-1],
        "mean": round(sum(v) / len(v), 1),
    }


def histogram(values: list[int], bins: int) -> dict[str, list]:
    """At most ``bins`` equal integer-width bins from min to max: ``{"edges", "counts"}``, bin
    ``i`` holding ``edges[i] <= x < edges[i + 1]``."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    n = math.ceil((hi - lo + 1) / width)
    counts = [0] * n
    for x in values:
        counts[(x - lo) // width] += 1
    return {"edges": [lo + i * width for i in range(n + 1)], "counts": counts}


def plot(series: dict[str, list[int]], edges: list[float], xlabel: str, title: str, path) -> None:
    """A histogram PNG of one or more series over the same bin edges (matplotlib Agg, no pyplot
    state, so it is safe in a worker thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, values in series.items():
        if values:
            ax.hist(values, bins=edges, alpha=0.6, label=f"{name} ({len(values)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("records")
    ax.set_title(title)
    if any(series.values()):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def lengths(fmt: Artifact, bins: int, out: ArtifactWriter) -> dict[str, Any]:
    """Characters per record (format's records, by split) and tokens per split row; writes
    ``histograms/chars.png`` and ``histograms/tokens.png``."""
    chars: dict[str, list[int]] = {s: [] for s in SPLITS}
    for record in progress.track(fmt.records(), "quality: reading format's records"):
        split = record.meta.get("split")
        chars.setdefault(split if split in SPLITS else "unsplit", []).append(
            len(record.joined_text())
        )
    tokens: dict[str, list[int]] = {s: [r.n_tokens for r in read_split(fmt, s)] for s in SPLITS}
    result: dict[str, Any] = {}
    for name, series, xlabel, title in (
        ("chars", chars, "characters per record", "Characters per record"),
        ("tokens", tokens, "tokens per example (chat template included)", "Tokens per example"),
    ):
        series = {k: v for k, v in series.items() if v or k in SPLITS}
        every = [x for v in series.values() for x in v]
        hist = histogram(every, bins)
        png = f"histograms/{name}.png"
        plot(
            series,
            hist["edges"] or [0, 1],
            xlabel,
            f"{title} (format {fmt.ref.short})",
            out.file(png),
        )
        result[name] = {
            "all": length_stats(every),
            **{k: length_stats(v) for k, v in series.items()},
            "histogram": hist,
            "png": png,
        }
    return result


# ---------------------------------------------------------------------------------- gates


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def check_gates(report: dict[str, Any], gates: QualityGates) -> dict[str, dict[str, Any]]:
    """Each gate's outcome: ``{"status": "pass"|"fail"|"off"|"skipped", "limit", "value",
    "message"}``; a failed gate's message names the gate and the figure."""
    results: dict[str, dict[str, Any]] = {}

    def put(gate: str, status: str, value: Any = None, message: str = "") -> None:
        results[gate] = {
            "status": status,
            "limit": getattr(gates, gate),
            "value": value,
            "message": message,
        }

    # max_residual_pii
    pii = report["pii"]
    limit = gates.max_residual_pii
    if limit is None:
        put("max_residual_pii", "off")
    elif not pii["enabled"]:
        put("max_residual_pii", "skipped", message="pii scrubbing is off (pii.enabled=false)")
    elif pii["residual"] is None:
        put("max_residual_pii", "skipped", message="the pii report has no residual count")
    elif pii["residual"] > limit:
        types = ", ".join(
            f"{k} {v}" for k, v in sorted(pii["residual_by_type"].items(), key=lambda x: -x[1])
        )
        put(
            "max_residual_pii", "fail", pii["residual"],
            f"quality gate max_residual_pii: {pii['residual']} PII entities remain after scrubbing "
            f"(> {limit})" + (f": {types}" if types else "")
            + "; add their entity types to pii.entities or lower pii.score_threshold, "
            "or raise quality.gates.max_residual_pii",
        )  # fmt: skip
    else:
        put("max_residual_pii", "pass", pii["residual"])

    # min_kept_fraction
    ing = report["ingest"]
    limit = gates.min_kept_fraction
    if limit is None:
        put("min_kept_fraction", "off")
    elif ing["kept_fraction"] is None:
        put("min_kept_fraction", "skipped", message="the ingest report has no records read/kept")
    elif ing["kept_fraction"] < limit:
        reasons = (
            ", ".join(f"{r} {v['records']}" for r, v in ing["rejected_by_reason"].items())
            or "none recorded"
        )
        put(
            "min_kept_fraction", "fail", ing["kept_fraction"],
            f"quality gate min_kept_fraction: ingest kept {_pct(ing['kept_fraction'])} of {ing['read']} "
            f"records (< {_pct(limit)}); lower quality.gates.min_kept_fraction or check the rejected "
            f"reasons: {reasons}",
        )  # fmt: skip
    else:
        put("min_kept_fraction", "pass", ing["kept_fraction"])

    # max_duplicate_fraction
    dd = report["dedup"]
    limit = gates.max_duplicate_fraction
    if limit is None:
        put("max_duplicate_fraction", "off")
    elif dd["duplicate_fraction"] is None:
        put("max_duplicate_fraction", "skipped", message="the dedup report has no records_in")
    elif dd["duplicate_fraction"] > limit:
        put(
            "max_duplicate_fraction", "fail", dd["duplicate_fraction"],
            f"quality gate max_duplicate_fraction: dedup dropped {_pct(dd['duplicate_fraction'])} of "
            f"{dd['records_in']} records as duplicates (> {_pct(limit)}): {dd['exact_duplicates']} exact, "
            f"{dd['near_duplicates']} near; raise quality.gates.max_duplicate_fraction or check the "
            "sources for repeated data",
        )  # fmt: skip
    else:
        put("max_duplicate_fraction", "pass", dd["duplicate_fraction"])

    # min_train_records
    n_train = report["splits"].get("train")
    limit = gates.min_train_records
    if limit is None:
        put("min_train_records", "off")
    elif n_train < limit:
        put(
            "min_train_records", "fail", n_train,
            f"quality gate min_train_records: format's train split has {n_train} records (< {limit}); "
            "add data, relax the filters, lower format.eval_fraction or quality.gates.min_train_records",
        )  # fmt: skip
    else:
        put("min_train_records", "pass", n_train)
    return results


# ---------------------------------------------------------------------------------- report


def _bars(hist: dict[str, list], width: int = 30) -> list[str]:
    """A histogram as markdown table rows of text bars (the Prefect UI shows no local PNGs)."""
    counts, edges = hist.get("counts") or [], hist.get("edges") or []
    top = max(counts, default=0)
    rows = []
    for i, n in enumerate(counts):
        lo, hi = edges[i], edges[i + 1] - 1
        bar = "█" * (round(width * n / top) if top else 0)
        rows.append(f"| {lo}–{hi} | {n} | {bar} |" if hi > lo else f"| {lo} | {n} | {bar} |")
    return rows


def _frac(x: Any) -> str:
    return _pct(x) if isinstance(x, int | float) else "–"


def summary(r: dict[str, Any]) -> str:
    """Yield per filter, PII, duplicates, languages, lengths and the gates."""
    lines = ["## quality", ""]
    gates = r.get("gates", {})
    if gates:
        lines += ["| gate | limit | value | status |", "|---|---:|---:|---|"]
        for g, v in gates.items():
            value = v.get("value")
            shown = _frac(value) if isinstance(value, float) else ("–" if value is None else value)
            limit = v.get("limit")
            limit_s = (
                "off" if limit is None else (_frac(limit) if isinstance(limit, float) else limit)
            )
            note = f" ({v['message']})" if v.get("status") == "skipped" and v.get("message") else ""
            lines.append(f"| {g} | {limit_s} | {shown} | **{v.get('status')}**{note} |")
        lines.append("")

    fun = r.get("funnel") or []
    if fun:
        lines += [
            "### Records through the data stages",
            "",
            "| stage | in | kept | dropped |",
            "|---|---:|---:|---:|",
        ]
        for f in fun:
            lines.append(
                f"| {f['stage']} | {f.get('in', '–')} | {f.get('kept', '–')} | {f.get('dropped', '–')} |"
            )
        lines.append("")

    ing = r.get("ingest", {})
    if ing:
        lines += [
            "### Yield per filter (ingest)",
            "",
            f"Read **{ing.get('read')}** records, kept **{ing.get('kept')}** ({_frac(ing.get('kept_fraction'))}).",
            "",
        ]
        if ing.get("rejected_by_reason"):
            lines += ["| rejected because | records | share of read |", "|---|---:|---:|"]
            for reason, v in ing["rejected_by_reason"].items():
                lines.append(f"| {reason} | {v['records']} | {_frac(v['fraction'])} |")
            lines.append("")

    langs = r.get("languages") or {}
    if langs:
        lines += [
            "### Language mix (ingest, before the language filter)",
            "",
            "| language | records | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| {k} | {v['records']} | {_frac(v['fraction'])} |" for k, v in langs.items()]
        lines.append("")

    pii = r.get("pii", {})
    if pii:
        lines += ["### PII", ""]
        if not pii.get("enabled", True):
            lines += ["PII scrubbing is **off** (`pii.enabled=false`).", ""]
        else:
            residual = pii.get("residual")
            lines += [
                f"Removed **{pii.get('entities_removed_total', 0)}** entities"
                + (f" from {pii['records_touched']} records" if "records_touched" in pii else "")
                + "; residual after scrubbing: "
                + ("not measured" if residual is None else f"**{residual}**")
                + ".",
                "",
            ]
            types = sorted(
                set(pii.get("entities_removed", {})) | set(pii.get("residual_by_type", {}))
            )
            if types:
                lines += ["| entity | removed | residual |", "|---|---:|---:|"]
                for t in types:
                    res = pii.get("residual_by_type", {}).get(t, 0 if residual is not None else "–")
                    lines.append(f"| {t} | {pii.get('entities_removed', {}).get(t, 0)} | {res} |")
                lines.append("")

    dd = r.get("dedup", {})
    if dd:
        lines += [
            "### Duplicates (dedup)",
            "",
            f"Of **{dd.get('records_in')}** records, dropped **{dd.get('exact_duplicates')}** exact and "
            f"**{dd.get('near_duplicates')}** near duplicates ({_frac(dd.get('duplicate_fraction'))})"
            + (f" in {dd['minhash_clusters']} MinHash clusters" if "minhash_clusters" in dd else "")
            + ".",
            "",
        ]
        if dd.get("cluster_sizes"):
            lines += ["| cluster size | clusters |", "|---:|---:|"]
            lines += [f"| {k} | {v} |" for k, v in dd["cluster_sizes"].items()]
            lines.append("")

    for name, title in (("chars", "Characters per record"), ("tokens", "Tokens per example")):
        ln = (r.get("lengths") or {}).get(name)
        if not ln:
            continue
        lines += [
            f"### {title}",
            "",
            "| | records | min | p50 | p95 | max | mean |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for k, st in ln.items():
            if isinstance(st, dict) and "count" in st:
                if st["count"]:
                    lines.append(
                        f"| {k} | {st['count']} | {st['min']} | {st['p50']} | {st['p95']} | {st['max']} | {st['mean']} |"
                    )
                else:
                    lines.append(f"| {k} | 0 | – | – | – | – | – |")
        lines += ["", f"![{title}]({ln.get('png', '')})", ""]
        if ln.get("histogram", {}).get("counts"):
            lines += ["| range | records | |", "|---|---:|---|", *_bars(ln["histogram"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def highlights(r: dict[str, Any]) -> str:
    gates = r.get("gates") or {}
    passed = sum(g.get("status") == "pass" for g in gates.values())
    bits = []
    kf = (r.get("ingest") or {}).get("kept_fraction")
    if kf is not None:
        bits.append(f"ingest kept {_pct(kf)}")
    residual = (r.get("pii") or {}).get("residual")
    if residual is not None:
        bits.append(f"residual PII {residual}")
    if gates:
        bits.append(f"{passed}/{len(gates)} gates passed")
    return ", ".join(bits)


# ------------------------------------------------------------------------------------- run


def funnel(reports: dict[str, dict[str, Any]], format_records: int) -> list[dict[str, Any]]:
    """Records in and kept per data stage (augment may add records between dedup and format)."""
    rows = []
    for stage, n_in_key, kept_key in (
        ("ingest", "records_read", "records_kept"),
        ("pii", "records_in", "records_kept"),
        ("dedup", "records_in", "records_kept"),
        ("format", None, "records_out"),
    ):
        rep = reports[stage]
        kept = _num(rep.get(kept_key, rep.get("records_out")))
        if stage == "format":
            kept = float(format_records)
        n_in = _num(rep.get(n_in_key)) if n_in_key else None
        if n_in is None and kept is not None and _num(rep.get("records_rejected")) is not None:
            n_in = kept + rep["records_rejected"]
        row: dict[str, Any] = {"stage": stage}
        if n_in is not None:
            row["in"] = int(n_in)
        if kept is not None:
            row["kept"] = int(kept)
        if n_in is not None and kept is not None:
            row["dropped"] = int(n_in - kept)
        rows.append(row)
    return rows


def run(inputs: list[Artifact], cfg, out: ArtifactWriter) -> None:
    """Builds the quality report from the data stages' artifacts and checks the gates.

    Args:
        inputs: ``[ingest, pii, dedup, format]`` artifacts (their reports; format's records
            and split rows).
        cfg: the ``quality`` section.
        out: receives ``report.md``, ``histograms/*.png``, ``histograms.json`` and the report.

    Raises:
        InputError: a gate failed (the message names each failed gate and its figure).
    """
    qcfg = cfg.quality
    ingest, pii, dedup, fmt = inputs
    reports = {
        "ingest": ingest.report,
        "pii": pii.report,
        "dedup": dedup.report,
        "format": fmt.report,
    }
    lens = lengths(fmt, qcfg.bins, out)
    splits = {s: lens["tokens"][s]["count"] for s in SPLITS}
    report: dict[str, Any] = {
        "funnel": funnel(reports, sum(splits.values())),
        "ingest": ingest_yield(reports["ingest"]),
        "languages": languages(reports["ingest"]),
        "pii": pii_measures(reports["pii"]),
        "dedup": dedup_measures(reports["dedup"]),
        "splits": splits,
        "lengths": lens,
    }
    report["gates"] = check_gates(report, qcfg.gates)
    failed = [g["message"] for g in report["gates"].values() if g["status"] == "fail"]
    md = summary(report)
    if failed:
        # Nothing is published (the next run must check again), so the log keeps the report.
        progress.logger().warning("quality report of the failed run:\n%s", md)
        raise InputError("\n".join(failed))
    out.file("histograms.json").write_text(
        json.dumps({k: v["histogram"] for k, v in lens.items()}, indent=2)
    )
    out.file("report.md").write_text(md)
    out.report.update(report)


STAGE = Stage(
    name="quality",
    version=1,
    config=QualityConfig,
    run=run,
    summary=summary,
    inputs=("ingest", "pii", "dedup", "format"),
    records=False,
    highlights=highlights,
    description="Data-quality report and gates.",
)
