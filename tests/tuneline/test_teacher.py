"""tuneline.teacher: the API key (where it comes from, where it never goes), public URLs, and
``complete`` without a Distilabel pipeline against the test HTTP server and a tiny local model."""

from __future__ import annotations

import logging

import pytest

from tests.support.openai_server import serve
from tests.support.teachers import KEY, KEY_ENV
from tests.support.teachers import tiny_teacher as make_tiny_teacher
from tuneline import teacher
from tuneline.errors import MissingSecret, RefusedSecret
from tuneline.teacher import TeacherClient, TeacherConfig


@pytest.fixture(scope="module")
def server():
    with serve(token=KEY) as running:
        yield running


def openai_teacher(url: str = "http://127.0.0.1:1/v1") -> TeacherConfig:
    return TeacherConfig(kind="openai", model="test-teacher", base_url=url, api_key_env=KEY_ENV)


def test_public_url_redacts_credentials():
    assert (
        teacher.public_url("https://user:pw@api.example.com:8443/v1")
        == "https://***@api.example.com:8443/v1"
    )
    assert teacher.public_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_api_key_comes_from_named_env_var_or_secret_block(monkeypatch):
    t = openai_teacher()
    monkeypatch.setenv(KEY_ENV, KEY)
    assert teacher.resolve_api_key(t) == KEY
    assert (
        teacher.resolve_api_key(t.model_copy(update={"api_key_env": None})) is None
    )  # server without auth

    from prefect.blocks.system import Secret

    class Block:
        def get(self):
            return "sk-from-block"

    monkeypatch.setattr(
        Secret, "load", classmethod(lambda cls, name: Block() if name == "teacher-key" else None)
    )
    assert (
        teacher.resolve_api_key(t.model_copy(update={"api_key_secret": "teacher-key"}))
        == "sk-from-block"
    )


def test_client_keeps_the_key_out_of_what_it_shows(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    t = openai_teacher("https://user:pw@api.example.com/v1")
    client = TeacherClient.connect(t)
    assert client.api_key == KEY
    assert KEY not in repr(client) and KEY not in str(client.info())
    assert client.info() == {
        "model": "test-teacher",
        "kind": "openai",
        "base_url": "https://***@api.example.com/v1",
    }
    assert client.redact(f"401: bad key {KEY}") == "401: bad key ***"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(MissingSecret, match=KEY_ENV):
        TeacherClient.connect(t)


def test_complete_asks_the_endpoint_without_a_pipeline(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.requests.clear()
    client = TeacherClient.connect(openai_teacher(server.url))
    replies = client.complete(["Why is the sky blue?", "Name a river."], system="Be brief.")
    assert replies == [
        "Answer: Why is the sky blue? Here is a careful explanation with one example.",
        "Answer: Name a river. Here is a careful explanation with one example.",
    ]
    bodies = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert [m["role"] for m in bodies[0]["messages"]] == ["system", "user"]
    assert client.complete([]) == []


def test_a_refused_key_fails_at_once_and_is_never_logged(server, caplog):
    wrong = "sk-wrong-3c9d1e-never-log-me"
    client = TeacherClient(openai_teacher(server.url), api_key=wrong, where="augment.teacher")
    server.requests.clear()
    with caplog.at_level(logging.WARNING, logger="tuneline"), pytest.raises(RefusedSecret) as e:
        client.complete(["one", "two"])
    assert "augment.teacher.api_key_env" in str(e.value) and KEY_ENV in str(e.value)
    assert 1 <= len(server.requests) <= 2  # the batch of two, not asked again one by one
    assert wrong not in caplog.text + str(e.value)


def test_complete_with_a_local_transformers_teacher(tmp_path):
    t = TeacherConfig(kind="transformers", model=make_tiny_teacher(tmp_path), max_new_tokens=8)
    client = TeacherClient.connect(t)
    assert client.api_key is None
    replies = client.complete(["How do tides work?", "Describe a river delta."])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
