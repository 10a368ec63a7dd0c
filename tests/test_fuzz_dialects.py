"""Schema-driven fuzzing of the other client dialects: Anthropic Messages (`/v1/messages`, `count_tokens`),
OpenAI Responses (`/v1/responses`) and `/v1/embeddings`. Hypothesis builds bodies from each request schema
with random JSON in every field; each is sent to the real gateway on every provider path (native
OpenAI-compatible, litellm, Anthropic pass-through; mock upstream). No answer may be a 5xx or hang; an
error is in the client's API format with a message; a 200 is a well-formed answer or event stream of the
dialect. Then broken bytes, deep nesting and huge strings on each endpoint, and the official SDKs on
odd-but-valid inputs. Bounded (derandomized, fixed example counts) for CI."""

from __future__ import annotations

import copy
import itertools
import json

import anthropic
import httpx
import openai
import pytest
from conftest import Gateway
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
  claude:
    tier: cloud
    client: anthropic
    litellm: {{model: anthropic/claude-up, api_base: "{base}", api_key: sk-ant-test}}
  emb:
    tier: edge
    kind: embedding
    litellm: {{model: openai/emb, api_base: "{url}", api_key: test}}
classifier: {{kind: length}}
routes:
  - name: auto
    when: {{model: auto}}
    targets: [edge-a]
retry: {{attempts: 1}}
breaker: {{enabled: false}}
deadline: 20s
responses: {{store: true, ttl: 10m}}
"""

TIMEOUT = 30.0
MODELS = ["auto", "edge-a", "lit", "claude"]

text = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "\x00", "\r\n", "\u202e", "\U0001f600" * 5, "a" * 300, "auto", "null", "event: x\n\ndata: y"])
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(text, inner, max_size=3), max_leaves=8)


MISSING = object()


def rarely(strategy, times: int = 3):
    """An optional field present in about one body in `times` + 1."""
    return st.one_of(*[st.just(MISSING)] * times, strategy)


def obj(required: dict, optional: dict | None = None) -> st.SearchStrategy:
    """An object with its required fields and each optional one present now and then."""
    fields = {**{k: st.just(v) if not isinstance(v, st.SearchStrategy) else v for k, v in required.items()},
              **{k: rarely(v) for k, v in (optional or {}).items()}}
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})


def _paths(value, path=()):
    """Every member of every container of a body, as key paths."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield path + (key,)
        yield from _paths(child, path + (key,))


@st.composite
def mutated(draw, valid: st.SearchStrategy, values: st.SearchStrategy | None = None):
    """A body of the right shape with 0 to 3 of its members (anywhere in the tree) replaced by random JSON,
    a wrong type, or removed."""
    body = copy.deepcopy(draw(valid))  # shared values of the strategies must stay as they are
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(body))
        if not paths:
            break
        *parent_path, key = draw(st.sampled_from(paths))
        parent = body
        for k in parent_path:
            parent = parent[k]
        action = draw(st.sampled_from(["json", "json", "type", "drop"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[key]
        elif action == "type":
            parent[key] = draw(st.sampled_from(["bogus", None, 0, -1, True, [], {}, "", 2 ** 64, 1.5]))
        else:
            parent[key] = draw(json_values if values is None else values)
    return body


# ---- Anthropic Messages -------------------------------------------------------------------------------

_image_source = st.sampled_from([
    {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    {"type": "url", "url": "https://x.test/a.png"}, {"type": "base64", "media_type": "image/png", "data": ""}])
_doc_source = st.sampled_from([{"type": "text", "media_type": "text/plain", "data": "a document"},
                               {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                               {"type": "url", "url": "https://x.test/a.pdf"}])
_cache = {"cache_control": st.just({"type": "ephemeral"})}
_text_block = obj({"type": "text", "text": text}, _cache)
_image_block = obj({"type": "image", "source": _image_source}, _cache)
_plain_blocks = st.lists(_text_block | _image_block, max_size=2)
_tool_use = obj({"type": "tool_use", "id": st.sampled_from(["toolu_1", "toolu_2"]),
                 "name": st.sampled_from(["f", "get_weather"]), "input": st.dictionaries(text, scalars, max_size=2)})
_tool_result = obj({"type": "tool_result", "tool_use_id": st.sampled_from(["toolu_1", "toolu_9"])},
                   {"content": text | _plain_blocks, "is_error": st.booleans(), **_cache})
_thinking_block = obj({"type": "thinking", "thinking": text, "signature": st.sampled_from(["EqQBCgIYAhIM==", ""])})
_redacted = obj({"type": "redacted_thinking", "data": st.sampled_from(["EmwKAhgB==", ""])})
_document = obj({"type": "document", "source": _doc_source}, {"title": text, "citations": st.just({"enabled": True})})
_bogus_block = obj({"type": st.sampled_from(["bogus", "server_tool_use", "TEXT", "web_search_tool_result"])},
                   {"text": text, "id": text})
anthropic_user_blocks = st.one_of(_text_block, _image_block, _tool_result, _document, _thinking_block, _redacted,
                                  _bogus_block)
anthropic_assistant_blocks = st.one_of(_text_block, _tool_use, _thinking_block, _redacted, _bogus_block)
anthropic_message = (obj({"role": "user", "content": text | st.lists(anthropic_user_blocks, max_size=4)})
                     | obj({"role": "assistant", "content": text | st.lists(anthropic_assistant_blocks, max_size=3)}))
anthropic_tool = obj({"name": st.sampled_from(["f", "get_weather"]),
                      "input_schema": st.just({"type": "object", "properties": {"a": {"type": "string"}}})},
                     {"type": st.sampled_from(["custom", "web_search_20250305"]), "description": text, **_cache})
anthropic_tool_choice = obj({"type": st.sampled_from(["auto", "any", "tool", "none"])},
                            {"name": st.sampled_from(["f", "g"]), "disable_parallel_tool_use": st.booleans()})
anthropic_bodies = mutated(obj(
    {"model": st.sampled_from(MODELS), "max_tokens": st.integers(1, 4096),
     "messages": st.lists(anthropic_message, min_size=1, max_size=4)},
    {"stream": st.booleans(), "system": text | _plain_blocks, "tools": st.lists(anthropic_tool, max_size=2),
     "tool_choice": anthropic_tool_choice, "stop_sequences": st.lists(text, max_size=3),
     "temperature": st.floats(0, 1), "top_p": st.floats(0, 1), "top_k": st.integers(1, 500),
     "metadata": obj({}, {"user_id": text}),
     "thinking": st.sampled_from([{"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}]),
     "service_tier": st.sampled_from(["auto", "standard_only"]), "x_unknown": json_values}))


# ---- OpenAI Responses ---------------------------------------------------------------------------------

_part = st.one_of(
    obj({"type": "input_text", "text": text}), obj({"type": "output_text", "text": text}, {"annotations": st.just([])}),
    obj({"type": "input_image", "image_url": st.sampled_from(["https://x.test/a.png", "data:image/png;base64,iVBO"])},
        {"detail": st.sampled_from(["low", "high", "auto"])}),
    obj({"type": "refusal", "refusal": text}), obj({"type": "input_file", "file_id": text}),
    obj({"type": st.just("bogus")}, {"text": text}))
responses_item = st.one_of(
    obj({"role": st.sampled_from(["user", "assistant", "system", "developer"]),
         "content": text | st.lists(_part, max_size=3)}, {"type": st.just("message"), "id": text}),
    obj({"type": "function_call", "call_id": st.sampled_from(["call_1", "call_2"]), "name": st.sampled_from(["f"]),
         "arguments": st.sampled_from(["{}", '{"a": 1}', "not json", ""])}, {"id": text}),
    obj({"type": "function_call_output", "call_id": st.sampled_from(["call_1", "call_9"]),
         "output": text | st.lists(_part, max_size=2)}),
    obj({"type": "reasoning", "summary": st.just([])}, {"encrypted_content": text}),
    obj({"type": st.sampled_from(["item_reference", "input_text", "web_search_call", "bogus"])}, {"id": text}))
responses_tool = obj({"type": "function", "name": st.sampled_from(["f", "g"])},
                     {"description": text, "strict": st.booleans(),
                      "parameters": st.just({"type": "object", "properties": {}})})
responses_tool_choice = st.sampled_from(["auto", "none", "required"]) | obj({"type": "function", "name": "f"})
_format = st.sampled_from([{"type": "text"}, {"type": "json_object"},
                           {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}])
responses_bodies = mutated(obj(
    {"model": st.sampled_from(MODELS), "input": text | st.lists(responses_item, min_size=1, max_size=4)},
    {"instructions": text, "tools": st.lists(responses_tool, max_size=2), "tool_choice": responses_tool_choice,
     "text": obj({"format": _format}), "previous_response_id": st.sampled_from(["resp_nope", ""]),
     "store": st.booleans(), "stream": st.booleans(), "max_output_tokens": st.integers(1, 4096),
     "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "parallel_tool_calls": st.booleans(),
     "user": text, "metadata": st.dictionaries(text, text, max_size=2),
     "reasoning": st.just({"effort": "low"}), "truncation": st.sampled_from(["auto", "disabled"]),
     "include": st.just(["reasoning.encrypted_content"]), "x_unknown": json_values}))

embedding_bodies = mutated(obj(
    {"model": st.sampled_from(["auto", "emb", "edge-a", "nope"]),
     "input": text | st.lists(text, min_size=1, max_size=3) | st.lists(st.integers(0, 10), min_size=1, max_size=3)
     | st.lists(st.lists(st.integers(0, 10), min_size=1, max_size=3), min_size=1, max_size=2)},
    {"encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers(1, 10), "user": text}))


# ---- the gateway and the checks -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url, base=upstream.base), tmp_module)
    httpx.post(gateway.base + "/v1/chat/completions", timeout=60,  # litellm's first import is slow
               json={"model": "lit", "messages": [{"role": "user", "content": "warm up"}]})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gw, upstream):
    upstream.reset()
    with httpx.Client(base_url=gw.base, timeout=TIMEOUT) as c:
        yield c


def sse_events(data: str) -> list[tuple[str | None, dict]]:
    """(event name, data JSON) of each event of an SSE body; every data line must be JSON."""
    events = []
    for block_ in data.replace("\r\n", "\n").split("\n\n"):
        if not block_.strip():
            continue
        name, payload = None, []
        for line in block_.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                payload.append(line[5:].strip())
        assert payload, block_
        events.append((name, json.loads("\n".join(payload))))
    return events


def check_anthropic_error(r: httpx.Response) -> None:
    body = r.json()
    assert body["type"] == "error", body
    assert isinstance(body["error"]["type"], str) and body["error"]["type"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def check_openai_error(r: httpx.Response) -> None:
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"], error


def check_anthropic_message(message: dict) -> None:
    assert message["type"] == "message" and message["role"] == "assistant", message
    assert isinstance(message["id"], str) and isinstance(message["content"], list), message
    assert isinstance(message["model"], str), message
    for b in message["content"]:
        assert isinstance(b, dict) and isinstance(b.get("type"), str), message
        if b["type"] == "tool_use":
            assert isinstance(b["id"], str) and isinstance(b["name"], str) and isinstance(b["input"], dict), b
        if b["type"] == "text":
            assert isinstance(b["text"], str), b
    assert "stop_reason" in message
    usage = message["usage"]
    assert isinstance(usage["input_tokens"], int) and isinstance(usage["output_tokens"], int), message


def check_anthropic_stream(data: str) -> None:
    events = sse_events(data)
    if [name for name, _ in events] == ["error"]:  # failed before it opened: Anthropic's error event alone
        assert events[0][1]["error"]["message"], data
        return
    assert events and events[0][0] == "message_start", data[:500]
    check_anthropic_message({**events[0][1]["message"], "usage": events[0][1]["message"].get(
        "usage", {"input_tokens": 0, "output_tokens": 0})})
    assert events[-1][0] in ("message_stop", "error"), data[-500:]
    if events[-1][0] == "error":
        assert events[-1][1]["error"]["message"], data[-500:]
    for name, payload in events:
        assert payload.get("type") == name, (name, payload)
        if name == "content_block_start" and payload["content_block"]["type"] == "tool_use":
            block_ = payload["content_block"]
            assert isinstance(block_["id"], str) and isinstance(block_["name"], str), payload


def check_response(response: dict, statuses=("completed", "incomplete")) -> None:
    assert response["object"] == "response" and isinstance(response["id"], str), response
    assert response["status"] in statuses, response
    assert isinstance(response["output"], list), response
    assert isinstance(response["model"], str), response
    for item in response["output"]:
        assert isinstance(item, dict) and item.get("type") in ("message", "function_call"), response
        if item["type"] == "function_call":
            assert all(isinstance(item[k], str) for k in ("call_id", "name", "arguments")), item


def check_responses_stream(data: str) -> None:
    events = sse_events(data)
    assert events and events[0][0] == "response.created", data[:500]
    last = events[-1][0]
    assert last in ("response.completed", "response.incomplete", "response.failed"), data[-500:]
    check_response(events[-1][1]["response"], ("completed", "incomplete", "failed"))
    for i, (name, payload) in enumerate(events):
        assert payload.get("type") == name and payload.get("sequence_number") == i, (name, payload)


def post(client: httpx.Client, path: str, content: bytes, upstream_fault: bool = False) -> httpx.Response:
    """Sends a body and checks the answer; `upstream_fault`: the upstream misbehaves, a 502/503 is right."""
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500 or (upstream_fault and r.status_code in (502, 503)), \
        (path, r.status_code, r.text[:500], content[:500])
    kind = r.headers.get("content-type", "")
    if r.status_code >= 400:
        (check_anthropic_error if path.startswith("/v1/messages") else check_openai_error)(r)
    elif path == "/v1/messages":
        if kind.startswith("text/event-stream"):
            check_anthropic_stream(r.text)
        else:
            check_anthropic_message(r.json())
    elif path == "/v1/responses":
        if kind.startswith("text/event-stream"):
            check_responses_stream(r.text)
        else:
            check_response(r.json())
    elif path == "/v1/messages/count_tokens":
        assert isinstance(r.json()["input_tokens"], int)
    elif path == "/v1/embeddings":
        assert isinstance(r.json()["data"], list)
    return r


def encode(body) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")


FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
ENDPOINTS = ["/v1/messages", "/v1/messages/count_tokens", "/v1/responses", "/v1/embeddings"]


@FUZZ
@given(body=anthropic_bodies)
def test_random_messages_bodies(client, body):
    post(client, "/v1/messages", encode(body))


@FUZZ
@given(body=responses_bodies)
def test_random_responses_bodies(client, body):
    post(client, "/v1/responses", encode(body))


@settings(FUZZ, max_examples=150)
@given(body=anthropic_bodies)
def test_random_count_tokens_bodies(client, body):
    post(client, "/v1/messages/count_tokens", encode(body))


@settings(FUZZ, max_examples=150)
@given(body=embedding_bodies)
def test_random_embeddings_bodies(client, body):
    post(client, "/v1/embeddings", encode(body))


_nonce = itertools.count()


def _valid(path: str, model: str) -> dict:
    """A valid body, each one different: the response cache must not answer in the upstream's place."""
    say = f"hi {next(_nonce)}"
    if path.startswith("/v1/messages"):
        return {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": say}]}
    if path == "/v1/responses":
        return {"model": model, "input": say}
    return {"model": "emb", "input": say}


@settings(FUZZ, max_examples=150)
@given(path=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=200) | st.sampled_from([
    b"", b"{", b"[]", b"null", b"1e999999", b'{"model": "auto"', b'{"model": "auto", "messages": [}',
    b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "auto", "input": "\\udfff"}', b'{"model": "auto", "input": "hi"}\x00', b"\xff\xfe{}",
    b'{"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "model": 1}',
    b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "model": "claude"}',
    '{"model": "auto", "input": "\u00e9"}'.encode("latin-1"), b'{"model": "emb", "input": ["a", "b"' + b"]" * 2,
    b'{"model": "auto", "max_tokens": 1' + b"0" * 5000 + b', "messages": [{"role": "user", "content": "hi"}]}',
]))
def test_broken_bytes(client, path, raw):
    post(client, path, raw)


def nested(depth: int, leaf=1):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("where", ["unknown", "deep_field"])
@pytest.mark.parametrize("depth", [60, 64, 65, 254, 255, 300])
def test_deep_nesting(client, path, where, depth):
    """Around the gateway's depth limit (64), orjson's (254) and past both, in an unknown field and in a field
    that is forwarded (a tool's schema, a metadata object, the embedding input)."""
    model = "claude" if depth % 2 else "edge-a"
    body = _valid(path, model)
    if where == "unknown":
        body["x_nested"] = nested(depth)
    elif path.startswith("/v1/messages"):
        body["tools"] = [{"name": "f", "input_schema": nested(depth)}]
    elif path == "/v1/responses":
        body["tools"] = [{"type": "function", "name": "f", "parameters": nested(depth)}]
    else:
        body["input"] = nested(depth, "x")
    post(client, path, json.dumps(body).encode())


@settings(FUZZ, max_examples=16)
@given(path=st.sampled_from(ENDPOINTS), model=st.sampled_from(MODELS),
       size=st.sampled_from([300_000, 1_500_000, 5_000_000]), char=st.sampled_from(["a", "\U0001f600", "\\", "\x00"]),
       stream=st.booleans())
def test_huge_strings(client, path, model, size, char, stream):
    body = _valid(path, model)
    big = char * (size // len(char.encode()))
    if path.startswith("/v1/messages"):
        body["messages"][0]["content"] = big
        body["stream"] = stream
    elif path == "/v1/responses":
        body["input"], body["stream"] = big, stream
    else:
        body["input"] = [big]
    post(client, path, json.dumps(body, ensure_ascii=False).encode())


def test_fuzzing_reached_the_upstream(client):
    """Valid bodies are answered 200 on every path and endpoint (the fuzzing is not only 400s)."""
    for path in ENDPOINTS:
        for model in MODELS:
            for stream in (False, True):
                body = _valid(path, model)
                if path in ("/v1/messages", "/v1/responses"):
                    body["stream"] = stream
                r = post(client, path, json.dumps(body).encode())
                assert r.status_code == 200 and r.headers.get("x-gateway-degraded") is None, (path, model, r.text)


# ---- the official SDKs on odd-but-valid inputs ---------------------------------------------------------

def _thinking(text_: str = "hmm") -> dict:
    return {"type": "thinking", "thinking": text_, "signature": "EqQBCgIYAhIM=="}


ODD_MESSAGES = {
    "empty content list": [{"role": "user", "content": []}],
    "only a thinking block": [{"role": "user", "content": [_thinking()]}],
    "assistant only thinking": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [_thinking()]},
                                {"role": "user", "content": "and?"}],
    "tool_result without tool_use": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]}],
    "tool_result with image": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                         "data": "iVBORw0KGgo="}}]}]}],
    "unicode": [{"role": "user", "content": "\u202e\U0001f600 \u0000 \ufeff 日本語 \u00e9\u0301"}],
    "empty text": [{"role": "user", "content": [{"type": "text", "text": ""}]}],
    "redacted thinking then text": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "EmwKAhgB"}, {"type": "text", "text": "ok"}]},
        {"role": "user", "content": "go on"}],
    "assistant last (prefill)": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}],
}


@pytest.mark.parametrize("model", ["edge-a", "lit", "claude"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(ODD_MESSAGES))
def test_anthropic_sdk_odd_inputs(gw, model, stream, case):
    sdk = anthropic.Anthropic(base_url=gw.base, api_key="unused", max_retries=0, timeout=TIMEOUT)
    kwargs = dict(model=model, max_tokens=64, messages=ODD_MESSAGES[case], system="be brief")
    try:
        if stream:
            with sdk.messages.stream(**kwargs) as events:
                for _ in events:
                    pass
                message = events.get_final_message()
        else:
            message = sdk.messages.create(**kwargs)
    except anthropic.APIStatusError as exc:
        assert 400 <= exc.status_code < 500, (exc.status_code, exc.message)
        assert isinstance(exc.body, dict) and exc.body.get("type") == "error", exc.body
        return
    assert message.type == "message" and message.role == "assistant"


ODD_INPUTS = {
    "empty input list": [],
    "empty string": "",
    "only a function_call_output": [{"type": "function_call_output", "call_id": "call_x", "output": "42"}],
    "call and output": [{"role": "user", "content": "add"},
                        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{}"},
                        {"type": "function_call_output", "call_id": "call_1", "output": "3"}],
    "empty content parts": [{"role": "user", "content": []}],
    "unicode": [{"role": "user", "content": [{"type": "input_text", "text": "\u202e\U0001f600 \u0000 日本語"}]}],
    "only reasoning": [{"type": "reasoning", "id": "rs_1", "summary": []}],
    "image only": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x.test/a.png",
                                                 "detail": "auto"}]}],
}


@pytest.mark.parametrize("model", ["auto", "lit", "claude"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(ODD_INPUTS))
def test_openai_sdk_responses_odd_inputs(gw, model, stream, case):
    sdk = openai.OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    kwargs = dict(model=model, input=ODD_INPUTS[case], instructions="be brief", store=False)
    try:
        if stream:
            with sdk.responses.stream(**kwargs) as events:
                for _ in events:
                    pass
                response = events.get_final_response()
        else:
            response = sdk.responses.create(**kwargs)
    except openai.APIStatusError as exc:
        assert 400 <= exc.status_code < 500, (exc.status_code, exc.message)
        assert isinstance(exc.body, dict) and exc.body.get("message"), exc.body
        return
    assert response.object == "response" and response.status in ("completed", "incomplete")


# ---- regressions found by the fuzzing -------------------------------------------------------------------

@pytest.mark.parametrize("model", ["claude", "lit", "edge-a"])
@pytest.mark.parametrize("patch, param", [
    ({"text": {"format": {"type": "json_schema", "name": "out", "schema": 5}}}, "text.format.schema"),
    ({"text": {"format": {"type": "json_schema", "name": [1], "schema": {}}}}, "text.format.name"),
    ({"text": {"format": {"type": "json_schema", "name": "out", "strict": "yes"}}}, "text.format.strict"),
    ({"text": {"format": {"type": "xml"}}}, "text.format"),
    ({"text": "json"}, "text"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "x"}]}, "tools[0].parameters"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"temperature": 7}, "temperature"),
])
def test_responses_fields_litellm_would_fail_on_are_a_400(client, model, patch, param):
    """A Responses body went to chat without the chat checks: a JSON schema that is not an object, or a
    non-string schema name, reached litellm's Anthropic translation, which failed (a 503, "upstream
    unreachable"); a string temperature went upstream as it was."""
    r = post(client, "/v1/responses", json.dumps({"model": model, "input": "hi", **patch}).encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def _chunk(delta, finish=None, **extra) -> str:
    return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "edge-a", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}], **extra}) + "\n\n"


ODD_STREAMS = {
    "a tool call that is a string": _chunk({"tool_calls": ["x"]}),
    "a function that is a string": _chunk({"tool_calls": [{"index": 0, "id": "a", "function": "f"}]}),
    "arguments that are an object": _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {
        "name": "f", "arguments": {"a": 1}}}]}),
    "an index that is a list": _chunk({"tool_calls": [{"index": [0], "id": "a", "function": {"name": "f"}}]}),
    "an id and name that are numbers": _chunk({"tool_calls": [{"index": 0, "id": 5, "function": {"name": 7}}]}),
    "a model that is a number": "data: " + json.dumps({"id": 5, "model": 7, "choices": [
        {"index": 0, "delta": {"content": "x"}}]}) + "\n\n",
    "a delta that is a list": _chunk({"content": "x"}) + "data: " + json.dumps({"choices": [
        {"index": 0, "delta": [1]}]}) + "\n\n",
}
ODD_ANSWERS = {
    "a message as a string": {"id": "c", "choices": [{"index": 0, "message": "hi"}]},
    "a function as a string": {"id": "c", "choices": [{"index": 0, "message": {
        "content": None, "tool_calls": [{"id": "a", "function": "f"}]}}]},
    "an id, name and arguments of other types": {"id": "c", "choices": [{"index": 0, "message": {
        "content": None, "tool_calls": [{"id": 1, "function": {"name": None, "arguments": {"a": 1}}}]}}]},
    "a model as a number": {"id": 5, "model": 7, "choices": [{"index": 0, "message": {"content": "x"}}]},
    "usage past 64 bits": {"id": "c", "choices": [{"index": 0, "message": {"content": "x"}}],
                           "usage": {"prompt_tokens": 1.5, "completion_tokens": 1e30}},
}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("case", list(ODD_STREAMS) + list(ODD_ANSWERS))
def test_odd_upstream_answers_are_translated_or_a_502(client, mock, path, case):
    """An OpenAI-compatible upstream's answer of an unexpected shape: the translated answer is well-formed
    (string ids, names and model; integer usage) or a 502 in the client's format, never a 500; a stream
    stays a well-formed event sequence (odd tool-call pieces are skipped, not a failure of the stream)."""
    stream = case in ODD_STREAMS
    raw = ODD_STREAMS[case] + _chunk({}, "stop") + "data: [DONE]\n\n" if stream else json.dumps(ODD_ANSWERS[case])
    mock.script("edge-a", default={"raw": raw, "content_type": "text/event-stream" if stream else "application/json"})
    body = _valid(path, "edge-a")
    body["stream"] = stream
    r = post(client, path, json.dumps(body).encode(), upstream_fault=True)
    if stream and case != "a delta that is a list":  # that one the upstream client itself refuses (a 503)
        assert r.status_code == 200 and sse_events(r.text)[-1][0] in ("message_stop", "response.completed"), r.text
    elif not stream:
        assert r.status_code in (200, 502), r.text


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_a_405_in_the_clients_format(client, path, method):
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    (check_anthropic_error if path.startswith("/v1/messages") else check_openai_error)(r)


# ---- upstream answers of any shape ---------------------------------------------------------------------

_call = obj({"id": st.sampled_from(["call_1", "call_2"]), "type": "function",
             "function": obj({"name": st.sampled_from(["f", "g"]), "arguments": st.sampled_from(["{}", '{"a": 1}', ""])})},
            {"index": st.integers(0, 2)})
_finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call", None])
_usage = obj({"prompt_tokens": st.integers(0, 10_000), "completion_tokens": st.integers(0, 10_000)},
             {"total_tokens": st.integers(0, 20_000)})
# Integers within 64 bits and usage of the documented shape: past those the upstream clients fail before
# any translation (see the xfail tests below).
json64 = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | text, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(text, inner, max_size=3), max_leaves=8)


def with_usage(body: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(body, st.none() | _usage).map(lambda t: {**t[0], "usage": t[1]} if t[1] else t[0])


upstream_answers = with_usage(mutated(obj(
    {"id": "chatcmpl-x", "object": "chat.completion", "model": "edge-a",
     "choices": st.lists(obj({"index": 0, "finish_reason": _finish, "message": obj(
         {"role": "assistant", "content": st.none() | text}, {"tool_calls": st.lists(_call, max_size=2)})}),
         min_size=1, max_size=2)}), json64))
upstream_chunks = st.lists(with_usage(mutated(obj(
    {"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": "edge-a",
     "choices": st.lists(obj({"index": 0, "delta": obj({}, {"role": st.just("assistant"), "content": text,
                                                            "tool_calls": st.lists(_call, max_size=2)})},
                             {"finish_reason": _finish}), max_size=1)}), json64)), min_size=1, max_size=5)


@settings(FUZZ, max_examples=300)
@given(path=st.sampled_from(["/v1/messages", "/v1/responses"]), model=st.sampled_from(["edge-a", "lit"]),
       answer=upstream_answers, chunks=upstream_chunks, stream=st.booleans(), done=st.booleans())
def test_random_upstream_answers(client, upstream, path, model, answer, chunks, stream, done):
    """What an OpenAI-compatible upstream answers, of any shape: the client gets a well-formed answer or
    stream of its dialect, or an error in its format (a 502/503 is right: the upstream is at fault)."""
    if stream:
        raw = "".join("data: " + json.dumps(c) + "\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")
        upstream.script(model, default={"raw": raw, "content_type": "text/event-stream"})
    else:
        upstream.script(model, default={"raw": json.dumps(answer), "content_type": "application/json"})
    try:
        body = _valid(path, model)
        body["stream"] = stream
        post(client, path, json.dumps(body).encode(), upstream_fault=True)
    finally:
        upstream.reset()


def test_usage_of_an_odd_type_from_a_native_upstream_is_not_a_500(client, mock):
    mock.script("edge-a", default={"raw": json.dumps({"id": "c", "choices": [{"index": 0, "message": {
        "content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": "abc"}}),
        "content_type": "application/json"})
    post(client, "/v1/messages", json.dumps(_valid("/v1/messages", "edge-a")).encode(), upstream_fault=True)


def test_a_chunk_with_an_integer_past_64_bits_from_litellm_is_not_a_500(client, mock):
    chunk = {"id": 2 ** 64, "model": "lit", "choices": [{"index": 0, "delta": {"content": "x"}}]}
    mock.script("lit", default={"raw": "data: " + json.dumps(chunk) + "\n\n" + _chunk({}, "stop") + "data: [DONE]\n\n"})
    body = {**_valid("/v1/messages", "lit"), "stream": True}
    post(client, "/v1/messages", json.dumps(body).encode(), upstream_fault=True)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_litellm_chunk_with_content_of_another_type_is_not_a_500(client, mock, path):
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "index": 0}] * 2
    mock.script("lit", default={"raw": _chunk({"tool_calls": calls, "content": -1})})
    body = {**_valid(path, "lit"), "stream": True}
    post(client, path, json.dumps(body).encode(), upstream_fault=True)
