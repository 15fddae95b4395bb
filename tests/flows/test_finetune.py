"""The demo pipeline end to end under Prefect's test harness: outcomes and cache behaviour."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest

from flows.finetune import finetune
from tuneline.artifacts import ArtifactRef, ArtifactStore
from tuneline.config import STAGES, load_config
from tuneline.orchestration import headline_key
from tuneline.pipeline import plan_keys
from tuneline.runner import MissingArtifact

pytestmark = pytest.mark.slow

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, repo_root_module) -> Path:
    d = tmp_path_factory.mktemp("flow")
    shutil.copytree(repo_root_module / "data" / "sample", d / "sample")
    return d


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[2]


def demo_cfg(workdir: Path, repo: Path, *overrides: str):
    """The demo config on a private copy of the sample corpus and a private store."""
    cfg = load_config(repo / "deployments" / "demo.yaml", [f"run.artifact_root={workdir / 'artifacts'}", *overrides])
    for s in cfg.ingest.sources:
        s.path = str(workdir / "sample" / Path(s.path).relative_to("data/sample"))
    return cfg


def outcomes(summary: dict) -> dict[str, bool]:
    return {s: o["reused"] for s, o in summary["stages"].items()}


@pytest.fixture(scope="module")
def first_run(prefect_api, workdir, repo_root_module):
    cfg = demo_cfg(workdir, repo_root_module)
    return cfg, finetune(config=cfg)


def test_demo_runs_every_stage_and_filters_do_their_work(first_run):
    cfg, summary = first_run
    assert list(summary["stages"]) == list(STAGES)
    assert not any(outcomes(summary).values())
    store = ArtifactStore(cfg.run.artifact_root)
    art = {s: store.open(ArtifactRef(**o["ref"])) for s, o in summary["stages"].items()}

    ingest_rej = list(art["ingest"].rejected())
    reasons = {r["reason"] for r in ingest_rej}
    assert {"language", "refusal", "broken_utf8"} <= reasons
    lang = [r for r in ingest_rej if r["reason"] == "language"]
    assert any(r.get("lang") in {"de", "fr", "es"} for r in lang)

    # planted emails exist after ingest and nowhere after pii
    before = [s for r in art["ingest"].records() for s in r.strings() if EMAIL.search(s)]
    assert before, "the sample corpus should plant email addresses"
    after = [s for r in art["pii"].records() for s in r.strings() if EMAIL.search(s)]
    assert after == []
    assert art["pii"].report["entities_removed"].get("EMAIL_ADDRESS", 0) >= len(before)

    dedup_rej = list(art["dedup"].rejected())
    kept_ids = {r.id for r in art["dedup"].records()}
    assert {r["reason"] for r in dedup_rej} >= {"exact_duplicate", "near_duplicate"}
    assert all(r["duplicate_of"] in kept_ids for r in dedup_rej)

    ev = art["evaluate"].report
    assert ev["tuned"]["loss"] < ev["base"]["loss"]

    # training moved its progress artifact in the UI, ending at 100%
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        bars = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["train-progress"])))
    assert bars and bars[0].data == 100.0 and "trained:" in (bars[0].description or "")

    # nothing vanished: every record read is kept or rejected with a reason, stage by stage
    ingest_counts = art["ingest"].manifest["counts"]
    assert ingest_counts["data"] + ingest_counts["rejected"] == art["ingest"].report["records_read"]
    for prev, stage in itertools.pairwise(("ingest", "pii", "dedup")):
        counts = art[stage].manifest["counts"]
        assert counts["data"] + counts["rejected"] == art[prev].manifest["counts"]["data"], stage
    assert art["augment"].manifest["counts"]["data"] >= art["dedup"].manifest["counts"]["data"]


def test_second_run_reuses_every_stage_and_still_shows_reports(first_run):
    from prefect.client.orchestration import get_client

    cfg, _ = first_run
    summary = finetune(config=cfg)
    assert all(outcomes(summary).values())
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(flow_run_filter=None, limit=200)
    reused = {a.key for a in arts if a.key and "reused" in (a.description or "")}
    assert reused == {f"{s}-{kind}" for s in STAGES for kind in ("report", "summary")}
    # The headline table keeps one key for every run of the pipeline: its versions are the
    # run-over-run history the UI's artifact page shows.
    key = headline_key(cfg.run.name, "train")
    history = [a for a in arts if a.key == key]
    assert len(history) >= 2, [a.key for a in arts]
    assert all("train_loss" in str(a.data) for a in history)


def test_changing_dedup_reruns_dedup_and_after_only(first_run, workdir, repo_root_module):
    cfg = demo_cfg(workdir, repo_root_module, "dedup.hashes_per_bucket=4")
    summary = finetune(config=cfg)
    assert outcomes(summary) == {
        "ingest": True, "pii": True, "dedup": False, "augment": False,
        "format": False, "quality": False, "train": False, "evaluate": False, "export": False, "card": False,
    }


def test_editing_an_input_file_invalidates_ingest_and_everything_after(first_run, workdir, repo_root_module):
    cfg = demo_cfg(workdir, repo_root_module)
    before = plan_keys(cfg)
    src = Path(cfg.ingest.sources[0].path)
    original = src.read_bytes()
    try:
        src.write_bytes(original + b'{"instruction": "Name a trail snack.", "output": "Trail mix with nuts and dried fruit."}\n')
        after = plan_keys(cfg)
    finally:
        src.write_bytes(original)
    assert all(before[s].key != after[s].key for s in STAGES)
    assert plan_keys(cfg) == before  # same bytes, same keys


def test_only_a_stage_needs_its_inputs(prefect_api, tmp_path, workdir, repo_root_module):
    cfg = demo_cfg(workdir, repo_root_module, f"run.artifact_root={tmp_path / 'empty'}")
    with pytest.raises(MissingArtifact, match="tuneline run --to ingest"):
        finetune(config=cfg, only="pii")


def test_only_reruns_just_that_stage_when_forced(first_run):
    cfg, _ = first_run
    summary = finetune(config=cfg, only="evaluate", force=["evaluate"])
    assert outcomes(summary) == {
        "ingest": True, "pii": True, "dedup": True, "augment": True,
        "format": True, "quality": True, "train": True, "evaluate": False,
    }


def test_force_recomputes_the_stage_and_those_that_depend_on_it(first_run):
    cfg, _ = first_run
    store = ArtifactStore(cfg.run.artifact_root)
    keys = plan_keys(cfg)
    created = {s: store.open(keys[s]).manifest["created"] for s in STAGES}
    summary = finetune(config=cfg, force=["format"])
    after = ("format", "quality", "train", "evaluate", "export", "card")
    assert outcomes(summary) == {s: s not in after for s in STAGES}
    again = {s: store.open(keys[s]).manifest["created"] for s in STAGES}
    # same keys (same config), rebuilt in place: upstream untouched, format and after new
    assert {s for s in STAGES if again[s] != created[s]} == set(after)
