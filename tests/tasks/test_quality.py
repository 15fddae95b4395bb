"""quality stage: one report of yield, PII, duplicates, languages and lengths; gates that fail
the run naming the gate and the figure."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from tasks import quality
from tests.support.stages import run_plain
from tuneline.artifacts import Artifact, ArtifactStore
from tuneline.config import PipelineConfig
from tuneline.errors import InputError
from tuneline.records import Message, Record, dump_jsonl_gz
from tuneline.splits import SplitRow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

INGEST = {
    "records_read": 100,
    "records_kept": 80,
    "sources": [{"path": "a.jsonl", "format": "alpaca", "read": 100, "kept": 80, "rejected": 20}],
    "languages": {"en": 85, "de": 10, "fr": 5},
    "rejected_by_reason": {"too_short": 12, "language": 5, "refusal": 3},
}
PII = {
    "enabled": True,
    "records_in": 80,
    "records_touched": 7,
    "entities_found": {"EMAIL_ADDRESS": 5, "PERSON": 4},
    "entities_removed": {"EMAIL_ADDRESS": 5, "PERSON": 3},
    "entities_removed_total": 8,
    "residual": {},  # as pii writes it: by type, and the total
    "residual_total": 0,
}
DEDUP = {
    "records_in": 80,
    "records_kept": 70,
    "exact_duplicates": 4,
    "near_duplicates": 6,
    "minhash_clusters": 3,
    "cluster_sizes": {"2": 2, "5": 1},
}


def stored(root: str, stage: str, report: dict[str, Any], records: list[Record] = (), key: str = "0" * 64,
           splits: dict[str, list[SplitRow]] | None = None) -> Artifact:  # fmt: skip
    """An artifact as if ``stage`` had written it: records, split files and its report."""
    store = ArtifactStore(root)
    with store.writer(stage, key, [], {}) as w:
        w.write_all(records)
        for name, rows in (splits or {}).items():
            with open(w.file(f"splits/{name}.jsonl.gz"), "wb") as fh:
                dump_jsonl_gz((r.to_json() for r in rows), fh)
        w.report.update(report)
        ref = w.commit()
    return store.open(ref)


def chat(i: int, split: str) -> tuple[Record, SplitRow]:
    user, reply = f"Question number {i}?", "An answer " + "word " * (i % 7 + 1)
    record = Record(
        id=f"r{i}",
        kind="chat",
        messages=[Message(role="user", content=user), Message(role="assistant", content=reply)],
        meta={"split": split},
    )
    prompt, completion = f"<u>{user}</u><a>", f"{reply}</a>"
    row = SplitRow(
        id=record.id, kind="chat", prompt=prompt, completion=completion, text=prompt + completion,
        n_tokens=10 + i, truncated=False,
    )  # fmt: skip
    return record, row


def inputs(
    root: str, ingest=None, pii=None, dedup=None, n_train: int = 12, n_eval: int = 3
) -> list[Artifact]:
    pairs = [chat(i, "train") for i in range(n_train)] + [
        chat(n_train + i, "eval") for i in range(n_eval)
    ]
    splits = {
        "train": [row for rec, row in pairs if rec.meta["split"] == "train"],
        "eval": [row for rec, row in pairs if rec.meta["split"] == "eval"],
    }
    fmt_report = {"splits": {s: {"records": len(v)} for s, v in splits.items()}}
    return [
        stored(root, "ingest", INGEST if ingest is None else ingest),
        stored(root, "pii", PII if pii is None else pii),
        stored(root, "dedup", DEDUP if dedup is None else dedup),
        stored(root, "format", fmt_report, [rec for rec, _ in pairs], splits=splits),
    ]


def run_quality(root: str, arts: list[Artifact], **gates: Any) -> Artifact:
    cfg = PipelineConfig.model_validate(
        {"run": {"artifact_root": root}, "quality": {"gates": gates}}
    )
    return run_plain(quality, cfg, arts)


def test_report_holds_yield_pii_duplicates_languages_and_histograms(store_root):
    art = run_quality(store_root, inputs(store_root))
    r = art.report
    ing = r["ingest"]
    assert ing["read"] == 100 and ing["kept"] == 80 and ing["kept_fraction"] == 0.8
    assert ing["rejected_by_reason"]["too_short"] == {"records": 12, "fraction": 0.12}
    assert list(ing["rejected_by_reason"]) == ["too_short", "language", "refusal"]  # largest first
    assert r["pii"]["entities_removed"] == {"EMAIL_ADDRESS": 5, "PERSON": 3}
    assert r["pii"]["residual"] == 0
    assert r["languages"]["en"] == {"records": 85, "fraction": 0.85} and set(r["languages"]) == {
        "en",
        "de",
        "fr",
    }
    assert r["dedup"]["cluster_sizes"] == {"2": 2, "5": 1}
    assert r["dedup"]["duplicate_fraction"] == 0.125
    assert r["splits"] == {"train": 12, "eval": 3}
    assert [f["stage"] for f in r["funnel"]] == ["ingest", "pii", "dedup", "format"]
    assert r["funnel"][2] == {"stage": "dedup", "in": 80, "kept": 70, "dropped": 10}
    tokens = r["lengths"]["tokens"]
    assert (
        tokens["train"]["min"] == 10
        and tokens["eval"]["max"] == 24
        and tokens["all"]["count"] == 15
    )
    assert sum(tokens["histogram"]["counts"]) == 15
    assert r["lengths"]["chars"]["all"]["count"] == 15
    for name in ("chars", "tokens"):
        png = art.path / r["lengths"][name]["png"]
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    assert {g: v["status"] for g, v in r["gates"].items()} == dict.fromkeys(
        ("max_residual_pii", "min_kept_fraction", "max_duplicate_fraction", "min_train_records"),
        "pass",
    )
    md = (art.path / "report.md").read_text()
    assert md == quality.summary(r)
    for shown in (
        "too_short",
        "EMAIL_ADDRESS",
        "| de | 10 |",
        "| 5 | 1 |",
        "histograms/tokens.png",
        "█",
    ):
        assert shown in md, shown


def test_summary_of_a_sparse_report_does_not_fail():
    assert quality.summary({}).startswith("## quality")
    assert quality.highlights({}) == ""


def test_fields_upstream_may_not_write_are_read_defensively(store_root):
    """An older pii (no residual fields) and dedup (no cluster sizes): the report says so and
    the residual gate is skipped, not failed."""
    pii = {k: v for k, v in PII.items() if not k.startswith("residual")}
    dedup = {k: v for k, v in DEDUP.items() if k != "cluster_sizes"}
    r = run_quality(store_root, inputs(store_root, pii=pii, dedup=dedup)).report
    assert r["pii"]["residual"] is None
    assert r["gates"]["max_residual_pii"]["status"] == "skipped"
    assert "cluster_sizes" not in r["dedup"] and r["dedup"]["exact_duplicates"] == 4
    assert "not measured" in quality.summary(r)


def test_pii_off_skips_the_residual_gate(store_root):
    r = run_quality(store_root, inputs(store_root, pii={"enabled": False, "records_in": 80})).report
    assert r["gates"]["max_residual_pii"]["status"] == "skipped"
    assert "pii.enabled=false" in r["gates"]["max_residual_pii"]["message"]


def test_residual_as_a_dict_by_type_counts_too(store_root):
    pii = {**PII, "residual": {"EMAIL_ADDRESS": 2, "US_SSN": 1}}
    pii.pop("residual_total")
    with pytest.raises(
        InputError, match=r"max_residual_pii: 3 PII entities remain .*EMAIL_ADDRESS 2, US_SSN 1"
    ):
        run_quality(store_root, inputs(store_root, pii=pii))


# Each gate: the figure that fails it, the message it must give, and a limit that lets it pass.
GATES = {
    "max_residual_pii": (
        {"pii": {"enabled": True, "residual": 2, "residual_by_type": {"EMAIL_ADDRESS": 2}}},
        r"quality gate max_residual_pii: 2 PII entities remain after scrubbing \(> 0\): EMAIL_ADDRESS 2",
        2,
    ),
    "min_kept_fraction": (
        {
            "ingest": {
                **INGEST,
                "records_read": 1000,
                "records_kept": 210,
                "rejected_by_reason": {"language": 278, "too_short": 512},
            }
        },
        r"quality gate min_kept_fraction: ingest kept 21% of 1000 records \(< 25%\); lower "
        r"quality.gates.min_kept_fraction or check the rejected reasons: too_short 512, language 278",
        0.2,
    ),
    "max_duplicate_fraction": (
        {"dedup": {**DEDUP, "exact_duplicates": 30, "near_duplicates": 20}},
        r"quality gate max_duplicate_fraction: dedup dropped 62% of 80 records as duplicates \(> 50%\): "
        r"30 exact, 20 near",
        0.7,
    ),
    "min_train_records": (
        {"n_train": 4},
        r"quality gate min_train_records: format's train split has 4 records \(< 10\)",
        4,
    ),
}


@pytest.mark.parametrize("gate", list(GATES))
def test_each_gate_fails_naming_itself_and_the_figure_and_passes_when_relaxed_or_off(
    gate, store_root, tmp_path
):
    bad, message, relaxed = GATES[gate]
    with pytest.raises(InputError, match=message) as e:
        run_quality(store_root, inputs(store_root, **bad))
    assert str(e.value).count("quality gate") == 1, "only the failed gate is named"
    for i, limit in enumerate((relaxed, None)):
        root = str(tmp_path / f"relaxed{i}")
        r = run_quality(root, inputs(root, **bad), **{gate: limit}).report
        assert r["gates"][gate]["status"] == ("pass" if limit is not None else "off")


def test_several_failed_gates_are_one_message(store_root):
    bad = {**GATES["min_kept_fraction"][0], **GATES["min_train_records"][0]}
    with pytest.raises(InputError) as e:
        run_quality(store_root, inputs(store_root, **bad))
    assert re.findall(r"quality gate (\w+)", str(e.value)) == [
        "min_kept_fraction",
        "min_train_records",
    ]


def test_a_failed_gate_publishes_nothing(store_root):
    with pytest.raises(InputError):
        run_quality(store_root, inputs(store_root, n_train=2))
    store = ArtifactStore(store_root)
    assert store.current("quality", "1" * 64) is None


def test_gates_are_config(store_root):
    cfg = PipelineConfig.model_validate(
        {"quality": {"gates": {"min_kept_fraction": None, "max_residual_pii": 3}}}
    )
    assert cfg.quality.gates.min_kept_fraction is None and cfg.quality.gates.max_residual_pii == 3
    assert PipelineConfig().quality.gates.max_residual_pii == 0


def test_quality_runs_before_train_and_reads_the_data_stages():
    from tuneline import registry

    names = registry.names()
    assert names.index("format") < names.index("quality") < names.index("train")
    assert registry.get("quality").inputs == ("ingest", "pii", "dedup", "format")
    assert registry.get("quality").records is False


def test_the_module_imports_nothing_heavy():
    code = (
        "import sys, tasks.quality; "
        "heavy = [m for m in ('matplotlib', 'torch', 'transformers', 'presidio_analyzer', 'prefect') if m in sys.modules]; "
        "print(heavy)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "matplotlib" not in res.stdout and "prefect" not in res.stdout, res.stdout


def test_cluster_sizes_as_one_size_per_cluster_are_counted():
    measured = quality.dedup_measures({"records_in": 10, "cluster_sizes": [2, 10, 2, 3]})
    assert measured["cluster_sizes"] == {"2": 2, "3": 1, "10": 1}


def test_residual_as_pii_writes_it_now_dict_by_type_and_total():
    measured = quality.pii_measures({**PII, "residual": {"US_SSN": 1}, "residual_total": 1})
    assert measured["residual"] == 1 and measured["residual_by_type"] == {"US_SSN": 1}
    clean = quality.pii_measures({**PII, "residual": {}, "residual_total": 0})
    assert clean["residual"] == 0
