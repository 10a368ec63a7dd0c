"""The OpenAI-compatible surface, end to end: real gateway process, mock upstream, official openai SDK."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from conftest import Gateway

POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: test}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - name: fast
    when: {{model: fast}}
    targets: [edge-a]
  - name: auto
    when: {{model: auto}}
    simple: [edge-a, cloud-a]
    complex: [cloud-a, edge-a]
retry: {{attempts: 1}}
"""

LONG = "Prove that the sum of the first n odd numbers is n squared, step by step. " * 10


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url), tmp_module, env={"GATEWAY_MAX_BODY_BYTES": "65536"})
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)


def test_simple_prompt_goes_to_edge_with_decision_headers(gw, mock, client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hi there"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "mock answer to: Hi there"
    assert completion.usage.total_tokens > 0
    h = raw.headers
    assert h["x-gateway-route"] == "auto"
    assert h["x-gateway-tier"] == "edge"
    assert h["x-gateway-model"] == "edge-a"
    assert h["x-gateway-complexity-class"] == "simple"
    assert 0.0 <= float(h["x-gateway-complexity"]) < 0.5
    assert h["x-gateway-attempts"] == "1"
    assert h["x-gateway-policy-version"]
    assert len(h["x-request-id"]) >= 16
    assert "x-gateway-degraded" not in h
    assert [r["model"] for r in mock.requests()] == ["edge-a"]


def test_complex_prompt_goes_to_cloud(gw, mock, client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": LONG}])
    assert raw.headers["x-gateway-tier"] == "cloud"
    assert raw.headers["x-gateway-model"] == "cloud-a"
    assert raw.headers["x-gateway-complexity-class"] == "complex"
    assert [r["model"] for r in mock.requests()] == ["cloud-a"]


def test_alias_pins_its_chain(gw, mock, client):
    raw = client.chat.completions.with_raw_response.create(
        model="cloud-a", messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-gateway-route"] == "model:cloud-a"
    assert raw.headers["x-gateway-model"] == "cloud-a"
    assert "x-gateway-complexity" not in raw.headers


def test_virtual_model_of_a_route(gw, mock, client):
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": LONG}])
    assert raw.headers["x-gateway-route"] == "fast"
    assert raw.headers["x-gateway-model"] == "edge-a"


def test_unknown_fields_pass_through_unchanged(gw, mock, client):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], tools=tools, seed=42,
        response_format={"type": "json_object"}, temperature=0.3, extra_body={"vendor_knob": {"a": [1, 2]}})
    body = mock.requests()[0]["body"]
    assert body["tools"] == tools
    assert body["seed"] == 42
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.3
    assert body["vendor_knob"] == {"a": [1, 2]}
    assert body["model"] == "edge-a"  # the upstream's own model name


def test_stream_with_usage_and_headers_before_first_chunk(gw, mock):
    with httpx.stream("POST", gw.base + "/v1/chat/completions", json={
            "model": "auto", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hello stream"}]}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-model"] == "edge-a"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["usage"]["total_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "mock answer to: Hello stream"


def test_openai_sdk_sync_stream(gw, mock, client):
    stream = client.chat.completions.create(model="auto", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hello stream"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock answer to: Hello stream"
    assert chunks[-1].usage.completion_tokens == 5


def test_openai_sdk_async_both_modes(gw, mock):
    async def run():
        client = openai.AsyncOpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
        plain = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Async"}])
        stream = await client.chat.completions.create(model="auto", stream=True,
                                                      messages=[{"role": "user", "content": "Async"}])
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return plain, "".join(parts)

    plain, streamed = asyncio.run(run())
    assert plain.choices[0].message.content == "mock answer to: Async"
    assert streamed == "mock answer to: Async"


def test_concurrent_requests(gw, mock):
    async def run():
        client = openai.AsyncOpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
        results = await asyncio.gather(*[client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": f"n{i}"}]) for i in range(40)])
        await client.close()
        return results

    results = asyncio.run(run())
    assert sorted(r.choices[0].message.content for r in results) == sorted(f"mock answer to: n{i}" for i in range(40))


def test_models_lists_aliases_and_auto(gw, client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto"
    assert {"edge-a", "cloud-a", "fast"} <= set(ids)


def test_health_and_ready(gw):
    assert httpx.get(gw.base + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gw.base + "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["policy_version"]


# ---- bad input: one test per class, each a 4xx in OpenAI's error shape ---------------------------------

def _assert_error(response: httpx.Response, status: int, param: str | None = "unset") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param != "unset":
        assert error["param"] == param
    return error


def test_malformed_json_is_400(gw):
    r = httpx.post(gw.base + "/v1/chat/completions", content=b'{"model": "auto", "messages": [',
                   headers={"content-type": "application/json"})
    assert _assert_error(r, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("body, param", [
    ({"model": "auto"}, "messages"),
    ({"model": "auto", "messages": []}, "messages"),
    ({"model": "auto", "messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "auto", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "auto", "messages": ["x"]}, "messages[0]"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, "max_tokens"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
    ([1, 2, 3], None),
])
def test_schema_violation_is_400_naming_the_field(gw, body, param):
    r = httpx.post(gw.base + "/v1/chat/completions", json=body)
    _assert_error(r, 400, param)


def test_unknown_model_is_404(gw):
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    error = _assert_error(r, 404, "model")
    assert error["code"] == "model_not_found"
    assert "auto" in error["message"]


def test_body_over_limit_is_413(gw):
    big = "x" * 70_000
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": big}]})
    _assert_error(r, 413)


def test_chunked_body_over_limit_is_413(gw):
    def gen():
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 5000
        yield b'"}]}'
    r = httpx.post(gw.base + "/v1/chat/completions", content=gen(), headers={"content-type": "application/json"})
    _assert_error(r, 413)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(gw, method):
    r = httpx.request(method, gw.base + "/v1/chat/completions")
    _assert_error(r, 405)


def test_unknown_path_is_404(gw):
    _assert_error(httpx.get(gw.base + "/v1/nothing"), 404)


def test_sdk_raises_typed_errors(gw, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=[])


def test_upstream_4xx_is_returned_to_the_client(gw, mock, client):
    mock.script("edge-a", [{"status": 400, "message": "unsupported parameter: foo", "code": "bad_param"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert "unsupported parameter" in str(info.value)
    assert len(mock.requests()) == 1  # a client error is neither retried nor sent elsewhere
