"""Secrets stay out of everything a run writes and logs (issue 16: a ``base_url`` with
``user:pass@`` was stored verbatim in evaluate's manifest.json, runs/*.json and the Prefect
database; a teacher that quotes a refused key back, as OpenAI's API does, put the key on the
console through Distilabel's log, and that 401 was retried as if it were transient).

The teacher is the local OpenAI-compatible server (tests/support/openai_server.py), with
``echo_key`` for a server that quotes the key and ``basic`` for one that takes the URL's
credentials. Every file under the artifact root is searched, gzip shards decompressed, and so
are the console (a real ``tuneline run``), the captured logs and the Prefect test database."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.evaluate.judge import JudgeConfig, judge
from tests.support.openai_server import serve
from tests.support.teachers import KEY_ENV
from tuneline import redaction, registry
from tuneline.artifacts import ArtifactRef, ArtifactStore
from tuneline.config import load_config
from tuneline.errors import RefusedSecret, TransientError, is_transient, mentions_auth_failure
from tuneline.pipeline import plan_keys
from tuneline.records import Message, Record
from tuneline.stage import key_config

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "sk-reliability-3f9a61c2e4b7-never-written"  # the value of KEY_ENV
RIGHT_KEY = "sk-the-servers-own-key-5d2c"
USER, PASSWORD = "teacher-user", "pw-url-8c1d5e2f9a-never-written"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PAIRS = [
    {"prompt": f"Question {i}?", "reference": "r", "tuned": "a", "base": "b"} for i in range(4)
]


def chat(i: int) -> Record:
    return Record(
        id=f"chat-{i}",
        kind="chat",
        messages=[
            Message(role="user", content=f"How does a river number {i} carve its valley?"),
            Message(role="assistant", content=f"River {i} erodes its bed over thousands of years."),
        ],
        meta={"source": "test"},
    )


def teacher(url: str) -> dict:
    return {"kind": "openai", "model": "test-teacher", "base_url": url, "api_key_env": KEY_ENV}


def prepare(tmp_path: Path, teacher_section: dict):
    """A config file whose augment asks ``teacher_section``, with ingest, pii and dedup already
    stored under their keys, so `--only augment` runs the teacher and nothing else."""
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"text": "a source the stored stages stand for"}) + "\n")
    data = {
        "run": {
            "artifact_root": str(tmp_path / "artifacts"),
            "retries": 2,
            "retry_delay_seconds": 0,
        },
        "ingest": {"sources": [{"path": str(src)}]},
        "augment": {"mode": "improve", "num_seeds": 3, "batch_size": 1, "teacher": teacher_section},
    }
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    store, keys = ArtifactStore(cfg.run.artifact_root), plan_keys(cfg)
    for name in ("ingest", "pii", "dedup"):
        with store.writer(
            name, keys[name].key, [], key_config(registry.get(name).slice(cfg))
        ) as out:
            out.write_all([chat(i) for i in range(3)])
            out.commit()
    return cfg, path


def written(root: Path) -> str:
    """Every file under ``root``, gzip shards decompressed."""
    parts = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes()
        parts.append(
            (gzip.decompress(data) if f.name.endswith(".gz") else data).decode("utf-8", "replace")
        )
    return "\n".join(parts)


def assert_no_secret(text: str, where: str) -> None:
    for secret in (SECRET_KEY, PASSWORD, BASIC):
        assert secret not in text, f"{secret[:12]}... is in {where}"


# ------------------------------------------------------------------- a key quoted back


def test_a_refused_key_is_asked_once_and_its_echo_reaches_no_console_and_no_file(tmp_path):
    """A real `tuneline run`: the server quotes the refused key in its 401, as OpenAI does."""
    with serve(token=RIGHT_KEY, echo_key=True) as server:
        cfg, path = prepare(tmp_path, teacher(server.url))
        res = subprocess.run(
            [sys.executable, "-m", "tuneline.cli", "run", str(path), "--only", "augment"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, KEY_ENV: SECRET_KEY, "TUNELINE_PROGRESS": "0", "COLUMNS": "300"},
        )  # fmt: skip
        asked = list(server.requests)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert asked and asked[0]["authorization"] == f"Bearer {SECRET_KEY}"  # so the 401 quoted it
    assert len(asked) == 1, f"the refused key was sent {len(asked)} times: retried as if transient"
    assert "augment.teacher.api_key_env" in out and KEY_ENV in out and "HTTP 401" in out, out
    assert "Traceback" not in out, out
    assert_no_secret(out, "the console")
    assert_no_secret(written(Path(cfg.run.artifact_root)), "the artifact root")


def test_the_judge_asks_once_with_a_refused_key_and_logs_no_echo(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    with serve(token=RIGHT_KEY, echo_key=True) as server:
        settings = JudgeConfig(teacher=teacher(server.url))
        with caplog.at_level(logging.DEBUG), pytest.raises(RefusedSecret) as e:
            judge(settings, PAIRS)
        asked = list(server.requests)
    assert len(asked) == 1, f"asked {len(asked)} times with a key the server refused"
    message = str(e.value)
    assert "evaluate.judge.teacher.api_key_env" in message and KEY_ENV in message
    assert not is_transient(e.value)
    assert_no_secret(message + caplog.text, "the error or the logs")


def test_401_and_403_are_never_transient():
    class AuthenticationError(Exception):  # as the openai client names its 401
        status_code = 401

    class Forbidden(Exception):
        pass

    assert not is_transient(AuthenticationError()) and not is_transient(Forbidden())
    wrapped = TransientError("no reply at all")
    wrapped.__cause__ = AuthenticationError()
    assert not is_transient(wrapped), "a TransientError raised from a 401 is still a 401"
    assert is_transient(TransientError("no reply at all"))
    for text in ("Error code: 401 - {'error': ...}", "HTTP 403 Forbidden", "status_code=401"):
        assert mentions_auth_failure(text), text
    for text in ("Error code: 500", "took 401 ms", "row 403 rejected"):
        assert not mentions_auth_failure(text), text


# ----------------------------------------------------------------- credentials in a URL


def test_credentials_in_a_base_url_are_stored_nowhere(
    prefect_api, tmp_path, monkeypatch, caplog, capfd
):
    """The flow under Prefect's test harness, so its database is searched too."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    from flows.finetune import finetune
    from tuneline.orchestration import drain_queues

    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    with serve(token=SECRET_KEY, basic=f"{USER}:{PASSWORD}") as server:
        url = server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        cfg, _ = prepare(tmp_path, teacher(url))
        with caplog.at_level(logging.DEBUG):
            summary = finetune(config=cfg, only="augment")
        asked = list(server.requests)
    drain_queues()
    assert {r["authorization"] for r in asked} == {
        f"Basic {BASIC}"
    }  # the URL's credentials were used
    outcome = summary["stages"]["augment"]
    assert not outcome["reused"]
    art = ArtifactStore(cfg.run.artifact_root).open(ArtifactRef(**outcome["ref"]))
    assert art.report["generated"] >= 1
    redacted = url.replace(f"{USER}:{PASSWORD}", "***")
    assert art.manifest["config"]["augment"]["teacher"]["base_url"] == redacted
    (run_record,) = (Path(cfg.run.artifact_root) / "runs").glob("*.json")
    assert (
        json.loads(run_record.read_text())["config"]["augment"]["teacher"]["base_url"] == redacted
    )
    assert_no_secret(written(Path(cfg.run.artifact_root)), "the artifact root")

    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the db and its WAL
    assert redacted.encode() in stored, "the flow run's parameters should be in the database"
    assert_no_secret(stored.decode("utf-8", "replace"), "the Prefect database")
    console = capfd.readouterr()
    assert_no_secret(caplog.text + console.out + console.err, "the logs")


def test_a_library_that_logs_a_key_or_a_url_password_logs_stars(monkeypatch, caplog):
    """Any logger, any handler: the record is redacted as it is made."""
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    cfg = load_config(
        None, [f"augment.teacher={json.dumps(teacher(f'http://{USER}:{PASSWORD}@h/v1'))}"]
    )
    redaction.protect(cfg)
    log = logging.getLogger("some.library.deep.below")
    with caplog.at_level(logging.INFO):
        log.warning(
            "Incorrect API key provided: %s (POST %s)", SECRET_KEY, f"http://{USER}:{PASSWORD}@h/v1"
        )
        try:
            raise ValueError(f"401 for {SECRET_KEY} with Basic {BASIC}")
        except ValueError:
            log.exception("the call failed")
    assert "Incorrect API key provided: *** (POST http://***@h/v1)" in caplog.text
    assert "401 for *** with Basic ***" in caplog.text
    assert_no_secret(caplog.text, "the logs")
