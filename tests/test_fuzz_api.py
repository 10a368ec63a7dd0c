"""Schema-driven fuzzing of the HTTP API: hypothesis builds chat bodies from the OpenAI request schema with
random JSON in every field, odd types, deep nesting, huge and odd unicode strings, and broken bytes; each
is sent to the real gateway (native and litellm paths, mock upstream). No answer may be a 5xx, and every
answer must come back within a timeout. Bounded (derandomized, fixed example counts) for CI."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import ADMIN_KEY, Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
  lit:
    tier: cloud
    client: litellm
    litellm: {{model: openai/lit, api_base: "{url}", api_key: test}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [edge-a]
retry: {{attempts: 1}}
breaker: {{enabled: false}}
deadline: 20s
degrade: {{reply: "busy"}}
"""

TIMEOUT = 30.0
MODELS = ["auto", "edge-a", "lit"]
ROLES = ["system", "user", "assistant", "tool", "developer", "function"]
# The OpenAI chat request's fields (and a few litellm call options a body must not be able to set).
FIELDS = ["temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
          "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "tools", "tool_choice",
          "parallel_tool_calls", "response_format", "user", "metadata", "stream_options", "modalities", "audio",
          "reasoning_effort", "prediction", "service_tier", "store", "functions", "function_call",
          "api_base", "base_url", "extra_headers", "mock_response", "timeout", "x_unknown"]

text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "\x00", "\r\n", "\u202e", "\ud7ff", "\U0001f600" * 5, "a" * 300, "auto", "edge-a", "null"])
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)


def nested(depth: int, leaf=1):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


content = (text | json_values | st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "refusal", "input_audio", "bogus"]) | json_values},
    optional={"text": text | json_values, "image_url": json_values, "refusal": text}), max_size=3))
message = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES) | json_values},
    optional={"content": content, "name": text | json_values, "tool_calls": json_values,
              "tool_call_id": text | json_values, "refusal": text | json_values})
messages = st.lists(message, min_size=0, max_size=4) | json_values
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | json_values, "messages": messages},
    optional={"stream": st.booleans() | json_values,
              **{name: json_values for name in FIELDS}})


@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url), tmp_module)
    httpx.post(gateway.base + "/v1/chat/completions", timeout=60,  # litellm's first import is slow
               json={"model": "lit", "messages": [{"role": "user", "content": "warm up"}]})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw):
    with httpx.Client(base_url=gw.base, timeout=TIMEOUT) as c:
        yield c


def _send(client: httpx.Client, content: bytes) -> httpx.Response:
    r = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:500], content[:500])
    if r.status_code >= 400:
        error = r.json()["error"]  # OpenAI's error shape
        assert isinstance(error["message"], str) and error["message"]
    return r


FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=bodies)
def test_random_chat_bodies_never_5xx(client, body):
    _send(client, json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("where", ["unknown", "tools", "content", "metadata", "stop"])
@pytest.mark.parametrize("depth", [1, 100, 253, 254, 255, 300])
def test_deep_nesting_never_5xx(client, model, where, depth):
    """Around orjson's nesting limit (254) and past it, in an unknown field, a tool's parameters, a
    message's content and known fields, on both provider paths."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if where == "unknown":
        body["x_nested"] = nested(depth)
    elif where == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": nested(depth)}}]
    elif where == "content":
        body["messages"][0]["content"] = nested(depth, "x")
    else:
        body[where] = nested(depth)
    _send(client, json.dumps(body).encode())


@settings(FUZZ, max_examples=12)
@given(model=st.sampled_from(MODELS), size=st.sampled_from([10_000, 300_000, 1_500_000]),
       char=st.sampled_from(["a", "\u00e9", "\U0001f600", "@", " ", "\\", "\x00"]),
       stream=st.booleans())
def test_huge_strings_never_5xx(client, model, size, char, stream):
    body = {"model": model, "stream": stream, "user": char * 1000,
            "messages": [{"role": "user", "content": char * (size // len(char.encode()))}]}
    _send(client, json.dumps(body, ensure_ascii=False).encode())


@settings(FUZZ, max_examples=80)
@given(raw=st.binary(max_size=300) | st.sampled_from([
    b"", b"{", b"[]", b"null", b"1e999999", b'{"model": "auto"', b'{"model": "auto", "messages": [}',
    b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "model": 1}',
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}\x00',
    b"\xff\xfe{}", '{"model": "auto", "messages": [{"role": "user", "content": "\u00e9"}]}'.encode("latin-1"),
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": 1' + b"0" * 5000 + b"}",
]))
def test_broken_bytes_never_5xx(client, raw):
    _send(client, raw)


@settings(FUZZ, max_examples=120)
@given(body=bodies, extra=st.fixed_dictionaries({}, optional={"_headers": json_values, "_api_key": json_values}))
def test_admin_explain_never_5xx(client, body, extra):
    r = client.post("/admin/explain", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    content=json.dumps({**body, **extra}, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    assert r.status_code < 500, (r.status_code, r.text[:300], body, extra)


@settings(FUZZ, max_examples=80)
@given(path=st.sampled_from(["/v1/chat/completions", "/v1/models", "/admin/usage", "/admin/status", "/admin/policy",
                             "/admin/explain", "/admin/reload", "/healthz", "/readyz", "/v1/chat/completions/",
                             "/v1/../admin/usage", "/%00", "/v1/chat/completions%0d%0aX:1"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       query=st.dictionaries(st.sampled_from(["days", "x", "model", ""]), text, max_size=3),
       admin=st.booleans())
def test_any_path_method_and_query_never_5xx(client, path, method, query, admin):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if admin else {}
    r = client.request(method, path, params=query, headers=headers)
    assert r.status_code < 500, (method, path, query, r.status_code, r.text[:300])


def test_fuzzing_reached_the_upstream(client, upstream):
    """The fuzzer's valid bodies were answered by the upstream on both paths (the suite is not only 400s)."""
    for model in ("edge-a", "lit"):
        r = _send(client, json.dumps({"model": model, "messages": [{"role": "user", "content": "ok"}],
                                      "temperature": 0.5, "x_unknown": {"a": [1, 2]}}).encode())
        assert r.status_code == 200 and r.headers.get("x-gateway-degraded") is None, r.text
