"""A small OpenAI-compatible server for tests: real HTTP, bearer-token auth, deterministic answers.

It speaks the wire format of ``POST /v1/chat/completions`` and ``GET /v1/models`` well enough
for the ``openai`` client (and so Distilabel's ``OpenAILLM``), and answers from the prompt, so
tests can assert on content:

- a SelfInstruct prompt (``# Task Description`` ... ``# Context``) gets N queries that quote the
  first words of the context;
- an "improve" prompt (``# Reply to rewrite``) gets ``Improved answer: <reply> ...``;
- anything else gets ``Answer: <prompt> ...``.

Markers in the prompt make it misbehave on purpose: ``[[short]]`` gives a too-short reply,
``[[empty]]`` an empty one, ``[[heading]]`` puts a "Here are ...:" line before the queries.

Every request is recorded (path, Authorization header, JSON body) in ``Running.requests``.

``serve(token, echo_key=True)`` answers a wrong key as OpenAI does, quoting it back
("Incorrect API key provided: sk-..."), to test that nothing logs or stores it;
``basic="user:pass"`` also accepts those credentials as HTTP Basic auth, which is what the
client sends for a ``base_url`` of ``http://user:pass@host/v1``.

    with serve(token="sk-test") as server:
        OpenAI(base_url=server.url, api_key="sk-test").chat.completions.create(...)
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

QUERY_TEMPLATES = (
    'Explain in two sentences why "{subject}" matters.',
    'Give a practical, worked example about "{subject}".',
    'Compare "{subject}" with a common alternative and say when each fits.',
)


def _subject(context: str, words: int = 6) -> str:
    # The first words of the seed's first turn, without the "User:" label the stage adds.
    text = re.sub(r"^\s*\w+:\s*", "", context.strip())
    return " ".join(text.split()[:words])


def answer(prompt: str) -> str:
    """The reply to a prompt: deterministic, derived from the prompt."""
    if "[[empty]]" in prompt:
        return ""
    if "[[short]]" in prompt:
        return "Ok."
    if "# Task Description" in prompt and "# Context" in prompt:
        n = int(m.group(1)) if (m := re.search(r"Develop (\d+) user queries", prompt)) else 1
        context = prompt.split("# Context", 1)[1].split("# Output", 1)[0]
        subject = _subject(context)
        lines = [
            QUERY_TEMPLATES[i % len(QUERY_TEMPLATES)].format(subject=subject) for i in range(n)
        ]
        if "[[heading]]" in prompt:
            lines.insert(0, "Here are the queries:")
        return "\n".join(lines)
    if "# Reply to rewrite" in prompt:
        reply = prompt.split("# Reply to rewrite", 1)[1].strip()
        return f"Improved answer: {reply} In short, that is the key point."
    return f"Answer: {' '.join(prompt.split())} Here is a careful explanation with one example."


def make_app(token: str, model: str, echo_key: bool = False, basic: str | None = None) -> FastAPI:
    """The app; ``app.state.requests`` records each request."""
    app = FastAPI()
    app.state.requests = []
    accepted = {f"Bearer {token}"}
    if basic is not None:
        accepted.add("Basic " + base64.b64encode(basic.encode()).decode())

    def unauthorized(request: Request) -> JSONResponse:
        # By default the presented key is never echoed back (clients may log error bodies);
        # echo_key quotes it, as OpenAI's API does.
        presented = (request.headers.get("authorization") or "").split(" ", 1)[-1]
        message = f"Incorrect API key provided: {presented}." if echo_key else "invalid api key"
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        return JSONResponse({"error": error}, status_code=401)

    def record(request: Request, body: Any) -> bool:
        auth = request.headers.get("authorization")
        app.state.requests.append({"path": request.url.path, "authorization": auth, "body": body})
        return auth in accepted

    @app.get("/v1/models")
    async def models(request: Request):
        if not record(request, None):
            return unauthorized(request)
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "tests"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if not record(request, body):
            return unauthorized(request)
        prompt = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        content = answer(prompt)
        n = body.get("n") or 1
        prompt_tokens, completion_tokens = len(prompt.split()), len(content.split())
        return {
            "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:12],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", model),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


@dataclass
class Running:
    url: str  # base_url for an OpenAI client, ending in /v1
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def serve(
    token: str, model: str = "test-teacher", echo_key: bool = False, basic: str | None = None
) -> Iterator[Running]:
    """Runs the server on a free 127.0.0.1 port in a background thread for the block."""
    app = make_app(token, model, echo_key, basic)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="openai-test-server", daemon=True)
    thread.start()
    deadline = time.time() + 15
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the test OpenAI server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Running(url=f"http://127.0.0.1:{port}/v1", requests=app.state.requests)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
