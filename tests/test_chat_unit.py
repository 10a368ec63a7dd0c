"""The chat endpoint in process (no sockets): internal failures still answer in OpenAI's shape."""

from __future__ import annotations

import asyncio

import orjson

from gateway.app import build_app
from gateway.settings import Settings

POLICY = """
models:
  e: {tier: edge, litellm: {model: openai/e, api_base: "http://127.0.0.1:9/v1", api_key: t}}
classifier: {kind: length}
routes:
  - {name: auto, when: {model: auto}, targets: [e]}
"""


def call(app, body: bytes):
    sent = []

    async def run():
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
                 "query_string": b"", "root_path": ""}
        await app(scope, receive, send)

    asyncio.run(run())
    return sent


def test_a_bug_behind_the_endpoint_gives_a_500_in_openai_shape(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    app = build_app(Settings(policy=str(path), log_requests=False, watch_policy=False))

    async def broken(policy, request):
        raise RuntimeError("boom")

    app.state.runtime.router.decide = broken
    sent = call(app, orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "x"}]}))
    assert sent[0]["status"] == 500
    error = orjson.loads(sent[1]["body"])["error"]
    assert error["code"] == "internal_error" and set(error) == {"message", "type", "param", "code"}
    assert "boom" not in error["message"]  # internals are logged, not shown
