"""The OpenAI-compatible surface, end to end: real gateway process, mock upstream, official openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings

from conftest import ADMIN_KEY, Gateway
from test_validate import chat_body

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


# ---- no client input is a 5xx (issue: non-string role, over-deep JSON) ----------------------------------

def _nested(depth: int, leaf=0):
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("message, param", [
    ({"role": [], "content": "x"}, "messages[0].role"),
    ({"role": {"a": 1}, "content": "x"}, "messages[0].role"),
    ({"role": 5, "content": "x"}, "messages[0].role"),
    ({"role": "user", "content": [{"type": "text", "text": ["x"]}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"type": ["text"]}]}, "messages[0].content[0]"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": 7}]}, "messages[0].content[0].image_url"),
    ({"role": "user", "content": "x", "name": []}, "messages[0].name"),
    ({"role": "assistant", "content": None, "tool_calls": {"id": 1}}, "messages[0].tool_calls"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                            "function": {"name": "f", "arguments": {}}}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"role": "tool", "content": "x", "tool_call_id": 3}, "messages[0].tool_call_id"),
])
def test_wrong_message_types_are_400(gw, message, param):
    r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": [message]})
    _assert_error(r, 400, param)


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters"),
    ({"tools": ["f"]}, "tools[0]"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"n": 1.5}, "n"),
    ({"seed": "1"}, "seed"),
    ({"top_p": True}, "top_p"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"user": ["u"]}, "user"),
    ({"logit_bias": {"50256": "ban"}}, "logit_bias"),
    ({"response_format": {"type": 1}}, "response_format.type"),
])
def test_wrong_parameter_types_are_400(gw, extra, param):
    r = httpx.post(gw.base + "/v1/chat/completions",
                   json={"model": "auto", "messages": [{"role": "user", "content": "x"}], **extra})
    _assert_error(r, 400, param)


@pytest.mark.parametrize("where", ["unknown_field", "tool_parameters"])
@pytest.mark.parametrize("depth", [70, 300, 900])
def test_over_deep_json_is_400_not_500(gw, mock, where, depth):
    body = {"model": "auto", "messages": [{"role": "user", "content": "deep"}]}
    if where == "unknown_field":
        body["vendor_knob"] = _nested(depth)
    else:
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"x": _nested(depth)}}}]
    raw = json.dumps(body)
    r = httpx.post(gw.base + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert _assert_error(r, 400)["code"] == "invalid_json"
    assert "deeper than" in r.json()["error"]["message"]
    assert mock.requests() == []


def test_deep_but_reasonable_tool_schema_passes_through(gw, mock):
    parameters = {"type": "object", "properties": {"x": _nested(40, {"type": "string"})}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
    r = httpx.post(gw.base + "/v1/chat/completions",
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": tools})
    assert r.status_code == 200, r.text
    assert mock.requests()[0]["body"]["tools"] == tools


# ---- x-gateway-policy-version on every response ------------------------------------------------------

def test_policy_version_header_on_every_response(gw):
    version = httpx.get(gw.base + "/readyz").json()["policy_version"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    responses = {
        "models": httpx.get(gw.base + "/v1/models"),
        "healthz": httpx.get(gw.base + "/healthz"),
        "readyz": httpx.get(gw.base + "/readyz"),
        "metrics": httpx.get(gw.base + "/metrics"),
        "admin policy": httpx.get(gw.base + "/admin/policy", headers=admin),
        "admin unauthorised": httpx.get(gw.base + "/admin/policy"),
        "admin status": httpx.get(gw.base + "/admin/status", headers=admin),
        "dashboard": httpx.get(gw.base + "/dashboard"),
        "404": httpx.get(gw.base + "/v1/nothing"),
        "405 starlette": httpx.delete(gw.base + "/v1/models"),
        "405 chat": httpx.get(gw.base + "/v1/chat/completions"),
        "400 chat": httpx.post(gw.base + "/v1/chat/completions", content=b"{"),
        "413 chat": httpx.post(gw.base + "/v1/chat/completions", content=b"x" * 70_000),
    }
    missing = {name: r.status_code for name, r in responses.items()
               if r.headers.get("x-gateway-policy-version") != version}
    assert not missing, missing


# ---- HTTP/1.0 clients and trailing slashes --------------------------------------------------------------

def _raw_http(port: int, request: bytes) -> tuple[str, dict, bytes]:
    """One request on a raw socket; reads until the server closes (HTTP/1.0) and splits the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _http10_post(port: int, path: str, body: dict, host: str = "127.0.0.1") -> tuple[str, dict, bytes]:
    payload = json.dumps(body).encode()
    return _raw_http(port, f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)


@pytest.mark.parametrize("body, status", [
    ({"model": "auto", "messages": [{"role": "user", "content": "old client"}]}, 200),
    ({"model": "auto", "messages": []}, 400),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404),
])
def test_http10_json_answers_have_content_length_not_chunked(gw, mock, body, status):
    line, headers, raw = _http10_post(gw.port, "/v1/chat/completions", body)
    assert line.split()[1] == str(status), (line, raw[:300])
    assert "transfer-encoding" not in headers, headers
    assert int(headers["content-length"]) == len(raw)
    parsed = json.loads(raw)
    assert ("choices" in parsed) if status == 200 else ("error" in parsed)


def test_http10_stream_is_sent_whole_with_content_length(gw, mock):
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "old stream"}]}
    line, headers, raw = _http10_post(gw.port, "/v1/chat/completions", body)
    assert line.split()[1] == "200"
    assert "transfer-encoding" not in headers, headers
    assert int(headers["content-length"]) == len(raw)
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "mock answer to: old stream"


def test_http10_get_models(gw):
    line, headers, raw = _raw_http(gw.port, b"GET /v1/models HTTP/1.0\r\nHost: x\r\n\r\n")
    assert line.split()[1] == "200" and "transfer-encoding" not in headers
    assert json.loads(raw)["object"] == "list"


def test_trailing_slash_is_served_and_never_redirected(gw, mock):
    line, headers, raw = _http10_post(gw.port, "/v1/chat/completions/", {
        "model": "auto", "messages": [{"role": "user", "content": "slash"}]}, host="evil.example")
    assert line.split()[1] == "200", (line, headers)
    assert "location" not in headers
    assert json.loads(raw)["choices"][0]["message"]["content"] == "mock answer to: slash"
    r = httpx.get(gw.base + "/v1/models/", headers={"host": "evil.example"}, follow_redirects=False)
    assert "location" not in r.headers
    _assert_error(r, 404)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=chat_body)
def test_fuzzed_bodies_never_get_a_5xx(gw, body):
    r = httpx.post(gw.base + "/v1/chat/completions", content=json.dumps(body), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
