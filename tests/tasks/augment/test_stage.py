"""augment: pass-through, and real Distilabel runs with a local transformers teacher and an
OpenAI-compatible HTTP server (tests/support/openai_server.py)."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tasks import augment
from tasks.augment import AugmentConfig, TeacherConfig
from tests.support.openai_server import QUERY_TEMPLATES, serve
from tests.support.stages import input_artifact, run_plain
from tests.support.teachers import KEY, KEY_ENV
from tests.support.teachers import tiny_teacher as make_tiny_teacher
from tuneline.config import PipelineConfig
from tuneline.errors import MissingSecret, RefusedSecret
from tuneline.records import Message, Record, record_id

# ------------------------------------------------------------------------------ helpers


def chat(user: str, assistant: str, source: str = "test") -> Record:
    return Record(
        id=record_id(source, user),
        kind="chat",
        messages=[Message(role="user", content=user), Message(role="assistant", content=assistant)],
        meta={"source": source},
    )


def alpaca_chats(shared_data: Path, n: int) -> list[Record]:
    rows = json.loads((shared_data / "instruction" / "alpaca_en_demo.json").read_text())[:n]
    return [
        chat((r["instruction"] + "\n\n" + r["input"]).strip(), r["output"], "alpaca_en_demo")
        for r in rows
    ]


def not_seeds() -> list[Record]:
    """Records the teacher must not be shown, but that must pass through."""
    return [
        Record(
            id="text-1",
            kind="text",
            text="A plain document about rivers and lakes.",
            meta={"source": "t"},
        ),
        Record(
            id="chat-open",
            kind="chat",
            meta={"source": "t"},
            messages=[Message(role="user", content="A question nobody answered yet?")],
        ),
    ]


def run_stage(store_root: str, records: list[Record], augment_cfg: AugmentConfig):
    """Writes `records` as a dedup artifact, runs augment.run on it, returns the output."""
    cfg = PipelineConfig(run={"artifact_root": store_root}, augment=augment_cfg)
    return run_plain(augment, cfg, [input_artifact(store_root, "dedup", records)])


def by_source(art) -> tuple[list[Record], list[Record]]:
    recs = list(art.records())
    return [r for r in recs if r.meta.get("source") != "augment"], [
        r for r in recs if r.meta.get("source") == "augment"
    ]


def files_text(path: Path) -> str:
    """Every file under `path`, gzip shards decompressed: what a leak check must search."""
    parts = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.name.endswith(".gz"):
            data = gzip.decompress(data)
        parts.append(data.decode("utf-8", errors="replace"))
    return "\n".join(parts)


def assert_counts_add_up(art, seeds: list[Record]) -> None:
    """Each candidate is a new record or a rejection; every seed had at least one attempt."""
    report = art.report
    _, new = by_source(art)
    rejected = list(art.rejected())
    assert report["generated"] == len(new)
    assert report["candidates"] == len(new) + len(rejected)
    assert sum(report["invalid_by_problem"].values()) == len(rejected)
    assert all(r["reason"] == "teacher_output_invalid" and r["problem"] for r in rejected)
    attempted = {r.meta["seed_id"] for r in new} | {r["record"]["seed_id"] for r in rejected}
    assert attempted == {s.id for s in seeds}


# ---------------------------------------------------------------------------- pass-through


def test_no_teacher_passes_every_record_through(store_root, shared_data):
    records = alpaca_chats(shared_data, 5) + not_seeds()
    art = run_stage(store_root, records, AugmentConfig())
    assert [r.model_dump() for r in art.records()] == [r.model_dump() for r in records]
    assert list(art.rejected()) == []
    assert art.report["teacher"] is None and art.report["generated"] == 0
    assert "no teacher configured" in art.report["note"]


# ---------------------------------------------------------------- transformers teacher


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> str:
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.mark.parametrize("mode", ["generate", "improve"])
def test_transformers_teacher_runs_every_seed_and_accounts_for_each_candidate(
    store_root, shared_data, tiny_teacher, mode
):
    seeds = alpaca_chats(shared_data, 3)
    records = seeds + not_seeds()
    teacher = TeacherConfig(kind="transformers", model=tiny_teacher, max_new_tokens=24)
    cfg = AugmentConfig(teacher=teacher, mode=mode, num_seeds=3, batch_size=3, min_chars=5)
    art = run_stage(store_root, records, cfg)

    originals, new = by_source(art)
    assert [r.model_dump() for r in originals] == [r.model_dump() for r in records]
    report = art.report
    assert report["teacher"] == {"model": tiny_teacher, "kind": "transformers", "base_url": None}
    assert report["seeds"] == 3 and sorted(report["seed_ids"]) == sorted(s.id for s in seeds)
    # Random weights write gibberish: what matters is that each attempt is accounted for,
    # and that the teacher did answer every prompt (a failed call would be "no_output").
    assert_counts_add_up(art, seeds)
    assert report["candidates"] >= 3 and "no_output" not in report["invalid_by_problem"]
    for r in new:
        assert r.kind == "chat" and [m.role for m in r.messages] == ["user", "assistant"]
        assert r.meta["teacher"] == tiny_teacher and r.meta["mode"] == mode
        assert len(r.messages[-1].content.strip()) >= 5


# ---------------------------------------------------------------------- openai teacher


@pytest.fixture(scope="module")
def server():
    with serve(token=KEY) as running:
        yield running


def openai_teacher(server, **kw) -> TeacherConfig:
    return TeacherConfig(
        kind="openai", model="test-teacher", base_url=server.url, api_key_env=KEY_ENV, **kw
    )


def test_openai_teacher_generates_pairs_and_never_stores_the_key(
    store_root, shared_data, server, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, KEY)
    good = alpaca_chats(shared_data, 2)
    short = chat(
        "[[short]] Tell me about volcanoes and how they form.", "Volcanoes form where magma rises."
    )
    heading = chat(
        "[[heading]] Describe how bees make honey.", "Bees collect nectar and reduce it."
    )
    seeds = good + [short, heading]
    records = seeds + not_seeds()
    server.requests.clear()
    art = run_stage(
        store_root,
        records,
        AugmentConfig(teacher=openai_teacher(server), num_seeds=10, batch_size=2),
    )

    originals, new = by_source(art)
    assert [r.model_dump() for r in originals] == [r.model_dump() for r in records]
    assert_counts_add_up(art, seeds)
    # Two queries per good seed (instructions_per_seed=2), each answered by the server.
    for seed in good + [heading]:
        subject = " ".join(seed.messages[0].content.split()[:6])
        pairs = [
            (r.messages[0].content, r.messages[1].content)
            for r in new
            if r.meta["seed_id"] == seed.id
        ]
        assert sorted(q for q, _ in pairs) == sorted(
            t.format(subject=subject) for t in QUERY_TEMPLATES[:2]
        )
        for q, a in pairs:
            assert a.startswith("Answer: " + q)
    assert len(new) == 6
    assert all(
        r.meta
        == {
            "source": "augment",
            "teacher": "test-teacher",
            "seed_id": r.meta["seed_id"],
            "mode": "generate",
        }
        for r in new
    )

    rejected = [(r["record"]["seed_id"], r["problem"], r["step"]) for r in art.rejected()]
    assert sorted(rejected) == sorted(
        [(short.id, "too_short", "self_instruct"), (heading.id, "heading", "self_instruct")]
    )
    assert art.report["invalid_by_problem"] == {"heading": 1, "too_short": 1}
    assert art.report["teacher"] == {
        "model": "test-teacher",
        "kind": "openai",
        "base_url": server.url,
    }
    assert "Answer: " in augment.STAGE.summary(art.report)

    # 4 SelfInstruct calls + 6 answers, all with the key as a bearer token.
    chats = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert len(chats) == 10
    assert {r["authorization"] for r in chats} == {f"Bearer {KEY}"}
    assert KEY not in files_text(art.path)
    assert (
        KEY_ENV in (art.path / "manifest.json").read_text()
    )  # the name is config; the value is not


def test_openai_teacher_improves_replies(store_root, shared_data, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    seeds = alpaca_chats(shared_data, 2)
    empty = chat("Summarise the plot of a short story.", "[[empty]] It is about a fox.")
    records = seeds + [empty] + not_seeds()
    art = run_stage(
        store_root,
        records,
        AugmentConfig(teacher=openai_teacher(server), mode="improve", num_seeds=10, batch_size=2),
    )

    _, new = by_source(art)
    assert_counts_add_up(art, seeds + [empty])
    assert sorted(r.meta["improves"] for r in new) == sorted(s.id for s in seeds)
    for r in new:
        seed = next(s for s in seeds if s.id == r.meta["improves"])
        assert r.messages[:-1] == seed.messages[:-1]
        assert r.messages[-1].content.startswith(
            "Improved answer: " + seed.messages[-1].content.strip()[:40]
        )
    assert [(r["record"]["seed_id"], r["problem"]) for r in art.rejected()] == [(empty.id, "empty")]


def test_teacher_runs_off_the_main_thread_and_leaves_its_signal_handlers(
    store_root, shared_data, server, monkeypatch
):
    """Prefect may run a stage on a worker thread, where Distilabel's SIGINT handler cannot be
    installed; the process keeps its own handlers either way."""
    monkeypatch.setenv(KEY_ENV, KEY)
    sigint = signal.getsignal(signal.SIGINT)
    done: dict = {}

    def work() -> None:
        try:
            cfg = AugmentConfig(teacher=openai_teacher(server), mode="improve", batch_size=2)
            done["art"] = run_stage(store_root, alpaca_chats(shared_data, 2), cfg)
        except BaseException as e:  # re-raised on the test's thread below
            done["error"] = e

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the teacher run hung on a worker thread"
    if "error" in done:
        raise done["error"]
    assert done["art"].report["generated"] == 2
    assert signal.getsignal(signal.SIGINT) is sigint


def test_missing_key_env_var_is_a_clear_error(store_root, shared_data, server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(MissingSecret, match=f"environment variable '{KEY_ENV}'.*not set"):
        run_stage(
            store_root, alpaca_chats(shared_data, 2), AugmentConfig(teacher=openai_teacher(server))
        )
    assert not any(Path(store_root, "augment").glob("1*"))  # nothing published


def test_rejected_key_fails_the_stage_instead_of_caching_an_empty_result(
    store_root, shared_data, server, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(RefusedSecret, match=f"refused the API key .* '{KEY_ENV}' .augment.teacher.api_key_env"):
        run_stage(
            store_root,
            alpaca_chats(shared_data, 2),
            AugmentConfig(teacher=openai_teacher(server), batch_size=2),
        )
    assert not Path(store_root, "augment", "1" * 64).exists()


def test_local_teacher_survives_a_parent_that_already_ran_parallel_torch(repo_root):
    """Regression: in one process train runs before augment; forked Distilabel workers then
    hung in their first torch op (an inherited OpenMP pool). Run in a child with a deadline so
    a regression fails instead of hanging the suite."""
    code = (
        "import sys, torch, pytest\n"
        "torch.set_num_threads(2)\n"
        "a = torch.randn(512, 512)\n"
        "for _ in range(20): a @ a\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/tasks/augment/test_stage.py',"
        " '-k', 'transformers_teacher and generate']))\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=repo_root, timeout=240, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the teacher's workers hung after parallel torch work in the parent")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
