"""Anthropic Messages, OpenAI Responses and embeddings: the pure translators, then the real gateway with the
mock upstream and the official `anthropic` and `openai` SDKs, and one resilience suite run through every
dialect (chat, messages, responses) asserting the same decision headers and behaviour."""

from __future__ import annotations

import hashlib
import json
import time

import anthropic
import httpx
import openai
import orjson
import pytest
from conftest import Gateway
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import anthropic as amsg
from gateway.api import embeddings as emb
from gateway.api import responses as oresp
from gateway.errors import ApiError
from gateway.policy.compile import PolicyInvalid, compile_policy
from gateway.request import Request
from gateway.routing.router import conversation_keys

KEY = "sk-dialects-test"
OTHER_KEY = "sk-dialects-other"
LIMITED_KEY = "sk-dialects-limited"
AUTH = {"Authorization": f"Bearer {KEY}"}


# ---- pure translators ----------------------------------------------------------------------------

def sse(text: str) -> list[tuple[str | None, object]]:
    """(event name, data) of every event of an SSE body; data is JSON-decoded unless it is [DONE]."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            payload = "\n".join(data)
            out.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return out


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    c = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "model": "m",
         "choices": [] if delta is None and finish is None else [{"index": 0, "delta": delta or {},
                                                                  "finish_reason": finish}]}
    if usage is not None:
        c["usage"] = usage
    return c


def test_anthropic_request_translation_covers_blocks_tools_and_options():
    body = {
        "model": "auto", "max_tokens": 100, "temperature": 0.3, "top_p": 0.9, "top_k": 5,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "iVBOR"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me call the tool", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"}]},
        ],
    }
    chat = amsg.to_chat(body)
    assert chat["model"] == "auto" and chat["max_tokens"] == 100
    assert chat["temperature"] == 0.3 and chat["top_p"] == 0.9 and "top_k" not in chat
    assert chat["stop"] == ["END"] and chat["user"] == "u-1"
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"},
                                                               "description": "Weather"}}]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    m = chat["messages"]
    assert m[0] == {"role": "system", "content": "Be brief.\nBe kind."}
    assert m[1]["role"] == "user" and m[1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
    assert m[2] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert m[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}  # right after the tool call
    assert m[4] == {"role": "user", "content": "And tomorrow?"}
    assert len(m) == 5 and "stream" not in chat
    streamed = amsg.to_chat({**body, "stream": True})
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("patch, param", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"model": 3}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": {}}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": [], "content": "x"}]}, "messages[0].role"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"name": "t"}]}, "tools[0].input_schema"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stream": "yes"}, "stream"),
])
def test_anthropic_bad_requests_name_the_field(patch, param):
    body = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **patch}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ApiError) as caught:
        amsg.to_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_anthropic_completion_and_stop_reasons():
    data = {"id": "chatcmpl-xyz", "model": "m", "usage": {"prompt_tokens": 9, "completion_tokens": 4},
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}}]}
    message = amsg.encode_completion(data)
    assert message["id"] == "msg_xyz" and message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "Let me look."},
                                  {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}]
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 9, "output_tokens": 4}
    for finish, expected in (("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")):
        data["choices"][0]["finish_reason"] = finish
        assert amsg.encode_completion(data)["stop_reason"] == expected
    data["choices"][0].update(finish_reason="stop", stop_reason="END")  # vLLM names the stop string it hit
    assert (amsg.encode_completion(data, ["END"])["stop_reason"], amsg.encode_completion(data, ["END"])[
        "stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("status, kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                          (403, "permission_error"), (404, "not_found_error"),
                                          (413, "request_too_large"), (429, "rate_limit_error"),
                                          (500, "api_error"), (503, "overloaded_error"), (504, "api_error")])
def test_anthropic_error_shape(status, kind):
    body = orjson.loads(amsg.error_body(status, {"error": {"message": "boom", "type": "x"}}))
    assert body == {"type": "error", "error": {"type": kind, "message": "boom"}}


def _anthropic_events(pieces: list[str], tool_args: list[str] | None) -> list[tuple]:
    stream = amsg.AnthropicStream()
    raw = stream.chunk(chunk({"role": "assistant", "content": ""}))
    for p in pieces:
        raw += stream.chunk(chunk({"content": p}))
    if tool_args is not None:
        raw += stream.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                                   "function": {"name": "f", "arguments": ""}}]}))
        for a in tool_args:
            raw += stream.chunk(chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}))
    raw += stream.chunk(chunk({}, "tool_calls" if tool_args is not None else "stop"))
    raw += stream.chunk(chunk(usage={"prompt_tokens": 3, "completion_tokens": 7}))
    raw += stream.end()
    return sse(raw.decode())


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.text(max_size=8), max_size=6),
       tool_args=st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), max_size=4)))
def test_anthropic_stream_is_well_formed(pieces, tool_args):
    events = _anthropic_events(pieces, tool_args)
    names = [n for n, _ in events]
    assert all(n == d["type"] for n, d in events)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index, seen = None, []
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None
            open_index = data["index"]
            seen.append(data["content_block"]["type"])
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    assert seen == [t for t in (["text"] if "".join(pieces) else []) + (["tool_use"] if tool_args is not None else [])]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")
    assert text == "".join(pieces)
    if tool_args is not None:
        assert "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"
                       and d["delta"]["type"] == "input_json_delta") == "".join(tool_args)
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == ("tool_use" if tool_args is not None else "end_turn")
    assert final["usage"] == {"input_tokens": 3, "output_tokens": 7}


def test_anthropic_stream_error_event_ends_the_stream():
    stream = amsg.AnthropicStream()
    raw = stream.chunk(chunk({"content": "Hel"})) + stream.error(502, {"error": {"message": "cut"}}) + stream.end()
    events = sse(raw.decode())
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}})
    assert "message_stop" not in [n for n, _ in events]


def test_responses_request_translation():
    body = {"model": "auto", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2,
            "store": False, "reasoning": {"effort": "low"}, "parallel_tool_calls": False,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/img.png", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "call_2", "name": "f", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "one"},
                {"type": "function_call_output", "call_id": "call_2", "output": "two"},
            ]}
    chat = oresp.to_chat(body)
    assert chat["max_tokens"] == 50 and chat["temperature"] == 0.2 and chat["parallel_tool_calls"] is False
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                               "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "out",
                                                                              "schema": {"type": "object"}}}
    m = chat["messages"]
    assert m[0] == {"role": "system", "content": "Be brief."}
    assert m[1] == {"role": "user", "content": "hi"}
    assert m[2]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/img.png", "detail": "low"}}
    assert m[3]["role"] == "assistant" and m[3]["content"] == "Calling."
    assert [c["id"] for c in m[3]["tool_calls"]] == ["call_1", "call_2"]  # one assistant turn, two calls
    assert m[4:] == [{"role": "tool", "tool_call_id": "call_1", "content": "one"},
                     {"role": "tool", "tool_call_id": "call_2", "content": "two"}]


@pytest.mark.parametrize("patch, param", [
    ({"input": None}, "input"),
    ({"input": 5}, "input"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
    ({"input": [{"type": [], "role": "user"}]}, "input[0].type"),
    ({"input": [{"role": {}, "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
])
def test_responses_bad_requests_name_the_field(patch, param):
    body = {k: v for k, v in {"model": "auto", "input": "hi", **patch}.items() if v is not None}
    with pytest.raises(ApiError) as caught:
        oresp.to_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.text(max_size=8), max_size=6),
       tool_args=st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=5), max_size=4)))
def test_responses_stream_is_well_formed(pieces, tool_args):
    stream = oresp.ResponsesStream({"model": "auto", "input": "x"})
    raw = stream.chunk(chunk({"role": "assistant", "content": ""}))
    for p in pieces:
        raw += stream.chunk(chunk({"content": p}))
    if tool_args is not None:
        raw += stream.chunk(chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "f",
                                                                                             "arguments": ""}}]}))
        for a in tool_args:
            raw += stream.chunk(chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}))
    raw += stream.chunk(chunk({}, "stop")) + stream.chunk(chunk(usage={"prompt_tokens": 2, "completion_tokens": 5}))
    raw += stream.end()
    events = sse(raw.decode())
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(n == d["type"] for n, d in events)
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "".join(pieces)
    final = events[-1][1]["response"]
    expected_types = (["message"] if text else []) + (["function_call"] if tool_args is not None else [])
    assert [item["type"] for item in final["output"]] == expected_types
    added, done = names.count("response.output_item.added"), names.count("response.output_item.done")
    assert added == done == len(expected_types)
    if text:
        assert final["output"][0]["content"][0]["text"] == text
    if tool_args is not None:
        assert final["output"][-1]["arguments"] == "".join(tool_args)
    assert final["usage"]["input_tokens"] == 2 and final["usage"]["output_tokens"] == 5


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)
_block = st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "x"])
                                        | _json},
                               optional={"text": _json, "source": _json, "id": _json, "name": _json, "input": _json,
                                         "tool_use_id": _json, "content": _json, "is_error": _json})
_anthropic_body = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["auto", ""]) | _json, "max_tokens": st.integers(-1, 5) | _json,
    "system": _json | st.lists(_block, max_size=2), "stream": _json, "stop_sequences": _json, "metadata": _json,
    "temperature": _json, "top_p": _json, "tools": _json | st.lists(st.dictionaries(
        st.sampled_from(["name", "input_schema", "type", "description"]), _json), max_size=2),
    "tool_choice": _json,
    "messages": _json | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]) | _json},
                                                       optional={"content": _json | st.lists(_block, max_size=3)}),
                                 max_size=3)})
_item = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]) | _json,
    "role": st.sampled_from(["user", "assistant", "system", "x"]) | _json, "call_id": _json, "name": _json,
    "arguments": _json, "output": _json, "content": _json | st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal", "x"]) | _json},
        optional={"text": _json, "image_url": _json, "detail": _json}), max_size=2)})
_responses_body = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["auto", ""]) | _json, "input": _json | st.lists(_item, max_size=3),
    "instructions": _json, "max_output_tokens": _json, "stream": _json, "tools": _json | st.lists(
        st.dictionaries(st.sampled_from(["type", "name", "parameters", "strict"]), _json), max_size=2),
    "tool_choice": _json, "text": _json, "previous_response_id": _json, "user": _json})


@settings(max_examples=400, deadline=None)
@given(body=_anthropic_body)
def test_anthropic_translation_of_any_body_is_a_chat_body_or_a_400(body):
    try:
        chat = amsg.to_chat(body)
    except ApiError as exc:
        assert exc.status == 400 and exc.param
        return
    assert isinstance(chat["messages"], list) and chat["messages"]
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in chat["messages"])
    orjson.dumps(chat)


@settings(max_examples=400, deadline=None)
@given(body=_responses_body)
def test_responses_translation_of_any_body_is_a_chat_body_or_a_400(body):
    try:
        chat = oresp.to_chat(body)
    except ApiError as exc:
        assert exc.status == 400 and exc.param
        return
    assert isinstance(chat["messages"], list) and any(m["role"] != "system" for m in chat["messages"])
    orjson.dumps(chat)

def test_embedding_input_checks():
    assert emb.validate({"model": "auto", "input": "hi"}) == ("auto", ["hi"])
    assert emb.validate({"model": "auto", "input": [[1, 2], [3]]})[1] == [" " * 8, " " * 4]
    for bad in ({"model": "auto"}, {"model": "auto", "input": []}, {"model": "auto", "input": [1, "a"]},
                {"model": "auto", "input": ""}, {"input": "x"}, {"model": "auto", "input": "x", "dimensions": 0}):
        with pytest.raises(ApiError) as caught:
            emb.validate(bad)
        assert caught.value.status == 400


EMBED_POLICY = """
version: 1
models:
  chat-a: {{tier: edge, litellm: {{model: openai/chat-a, api_base: "{url}"}}}}
  emb-a: {{tier: edge, kind: embedding, litellm: {{model: openai/emb-a, api_base: "{url}"}}{extra}}}
routes:
  - {{name: auto, when: {{model: auto}}, targets: [{targets}]}}
"""


def test_policy_keeps_embedding_models_out_of_chat_routes():
    policy = compile_policy(EMBED_POLICY.format(url="http://x/v1", extra="", targets="chat-a"), env={})
    assert policy.models["emb-a"].kind == "embedding" and policy.models["chat-a"].kind == "chat"
    with pytest.raises(PolicyInvalid, match="emb-a' is an embedding model"):
        compile_policy(EMBED_POLICY.format(url="http://x/v1", extra="", targets="emb-a"), env={})
    with pytest.raises(PolicyInvalid, match="is a chat model"):
        compile_policy(EMBED_POLICY.format(url="http://x/v1", extra=", fallbacks: [chat-a]", targets="chat-a"),
                       env={})
    with pytest.raises(PolicyInvalid, match="kind must be chat or embedding"):
        compile_policy(EMBED_POLICY.format(url="http://x/v1", extra="", targets="chat-a").replace(
            "kind: embedding", "kind: vectors"), env={})
    with pytest.raises(PolicyInvalid, match="cannot embed"):
        compile_policy("version: 1\nmodels:\n  e: {tier: edge, kind: embedding, embedded: {}}\n", env={})


# ---- the real gateway ----------------------------------------------------------------------------

DIALECTS = ["chat", "messages", "responses"]
CANNED = "We are busy; a person will follow up."


def _policy(url: str, dead: int) -> str:
    names = [f"{kind}-{d}" for d in DIALECTS for kind in ("rp", "rb", "fp", "fb", "cp", "hang", "mid")]
    models = "\n".join(f"  {n}: {{tier: cloud, litellm: {{model: openai/{n}, api_base: \"{url}\", api_key: t}}, "
                       f"timeout: 2s, first_token_timeout: 1s}}" for n in names)
    routes = "\n".join(
        f"  - {{name: retry-{d}, when: {{model: retry-{d}}}, targets: [rp-{d}, rb-{d}]}}\n"
        f"  - {{name: fallback-{d}, when: {{model: fallback-{d}}}, targets: [fp-{d}, fb-{d}]}}\n"
        f"  - {{name: canned-{d}, when: {{model: canned-{d}}}, targets: [cp-{d}], "
        f"degrade: {{reply: \"{CANNED}\", retry_after: 7s}}}}\n"
        f"  - {{name: deadline-{d}, when: {{model: deadline-{d}}}, targets: [hang-{d}], deadline: 1500ms}}\n"
        f"  - {{name: mid-{d}, when: {{model: mid-{d}}}, targets: [mid-{d}]}}" for d in DIALECTS)
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    other = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
    limited = hashlib.sha256(LIMITED_KEY.encode()).hexdigest()
    return f"""
version: 1
models:
  edge-a: {{tier: edge, litellm: {{model: openai/edge-a, api_base: "{url}", api_key: t}}}}
  cloud-a: {{tier: cloud, litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: t}}}}
  tools-a: {{tier: cloud, litellm: {{model: openai/tools-a, api_base: "{url}", api_key: t}}}}
  emb-edge:
    tier: edge
    kind: embedding
    litellm: {{model: openai/emb-edge, api_base: "{url}", api_key: t}}
    fallbacks: [emb-cloud]
  emb-cloud: {{tier: cloud, kind: embedding, litellm: {{model: openai/emb-cloud, api_base: "{url}", api_key: t}}}}
  emb-dead: {{tier: edge, kind: embedding, litellm: {{model: openai/emb-dead, api_base: "http://127.0.0.1:{dead}/v1"}}}}
{models}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - {{name: tools, when: {{model: tools}}, targets: [tools-a]}}
{routes}
  - {{name: auto, when: {{model: auto}}, simple: [edge-a, cloud-a], complex: [cloud-a, edge-a]}}
retry: {{attempts: 3, backoff: {{initial: 20ms, max: 100ms, jitter: full}}}}
breaker: {{failures: 100, window: 10s, cooldown: 1s}}
responses: {{store: true, ttl: 10m}}
auth:
  required: true
  keys:
    - {{name: tester, sha256: {digest}}}
    - {{name: other, sha256: {other}}}
    - {{name: limited, sha256: {limited}, models: [auto]}}
"""


@pytest.fixture(scope="module")
def gw(upstream, tmp_module, dead_port):
    gateway = Gateway(_policy(upstream.url, dead_port), tmp_module)
    yield gateway
    gateway.stop()


@pytest.fixture
def claude(gw):
    return anthropic.Anthropic(base_url=gw.base, api_key=KEY, max_retries=0)


@pytest.fixture
def oai(gw):
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=KEY, max_retries=0)


def test_anthropic_sdk_message_with_decision_headers(gw, mock, claude):
    raw = claude.messages.with_raw_response.create(
        model="auto", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Hi there"}],
        stop_sequences=["END"], metadata={"user_id": "u-7"}, extra_headers={"anthropic-version": "2023-06-01"})
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == "mock answer to: Hi there"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 7
    assert raw.headers["x-gateway-model"] == "edge-a" and raw.headers["x-gateway-route"] == "auto"
    assert raw.headers["x-gateway-tier"] == "edge" and raw.headers["x-gateway-attempts"] == "1"
    sent = mock.requests("edge-a")[-1]
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["body"]["max_tokens"] == 64 and sent["body"]["stop"] == ["END"] and sent["body"]["user"] == "u-7"


def test_anthropic_sdk_stream(gw, mock, claude):
    with claude.messages.stream(model="auto", max_tokens=64,
                                messages=[{"role": "user", "content": "stream this"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "mock answer to: stream this"
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5  # the mock's usage chunk (5 chunks) reached message_delta


def test_anthropic_raw_stream_event_sequence(gw, mock):
    r = httpx.post(gw.base + "/v1/messages", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "auto", "max_tokens": 32, "stream": True,
                         "messages": [{"role": "user", "content": "hello"}]}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-gateway-model"] == "edge-a"
    names = [n for n, _ in sse(r.text)]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_anthropic_sdk_tool_use_round_trip(gw, mock, claude):
    tools = [{"name": "get_weather", "description": "Current weather",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    mock.script("tools-a", [{"tool_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}])
    first = claude.messages.create(model="tools", max_tokens=64, tools=tools,
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    second = claude.messages.create(model="tools", max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}]}])
    assert second.stop_reason == "end_turn" and second.content[0].text.startswith("mock answer")
    sent = mock.requests("tools-a")
    assert sent[0]["body"]["tools"][0]["function"]["name"] == "get_weather"
    history = sent[1]["body"]["messages"]
    assert history[1]["tool_calls"][0]["id"] == use.id
    assert history[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert history[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C, sunny"}


def test_anthropic_sdk_streamed_tool_use(gw, mock, claude):
    mock.script("tools-a", [{"tool_call": {"name": "lookup", "arguments": '{"query": "gateway dialects"}'}}])
    with claude.messages.stream(model="tools", max_tokens=64, messages=[{"role": "user", "content": "look it up"}],
                                tools=[{"name": "lookup", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"query": "gateway dialects"}
    assert final.usage.output_tokens == 5


def test_anthropic_errors_in_anthropic_shape(gw, mock, claude):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "not_found_error"
    bad = anthropic.Anthropic(base_url=gw.base, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    for payload in ({"model": "auto", "messages": [{"role": "user", "content": "x"}]}, b"{not json", b"[1]",
                    {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "x"}]}]}):
        kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
        r = httpx.post(gw.base + "/v1/messages", headers={"x-api-key": KEY, "x-request-id": "bad-1"}, timeout=10,
                       **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
        assert r.headers["x-request-id"] == "bad-1" and r.headers["x-gateway-policy-version"]
    deep: object = "x"
    for _ in range(300):  # parses (orjson reads up to 1024 levels) but cannot be re-encoded (255)
        deep = [deep]
    for path, body in (("/v1/messages", {"model": "auto", "max_tokens": 5, "metadata": {"user_id": "u"},
                                         "tools": [{"name": "t", "input_schema": {"type": "object", "x": deep}}],
                                         "messages": [{"role": "user", "content": "x"}]}),
                       ("/v1/responses", {"model": "auto", "input": "x", "tools": [
                           {"type": "function", "name": "t", "parameters": {"x": deep}}]}),
                       ("/v1/embeddings", {"model": "auto", "input": "x", "user": deep})):
        r = httpx.post(gw.base + path, headers={"x-api-key": KEY}, json=body, timeout=10)
        assert r.status_code == 400, (path, r.text)
    r = httpx.get(gw.base + "/v1/messages", headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code == 405 and r.json()["type"] == "error"
    assert not mock.requests()


def test_a_keys_model_list_holds_on_every_endpoint(gw, mock):
    limited = {"x-api-key": LIMITED_KEY}
    r = httpx.post(gw.base + "/v1/messages", headers=limited, timeout=10,
                   json={"model": "tools", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = httpx.post(gw.base + "/v1/responses", headers=limited, json={"model": "tools", "input": "x"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = httpx.post(gw.base + "/v1/embeddings", headers=limited, json={"model": "emb-edge", "input": "x"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = httpx.post(gw.base + "/v1/messages/count_tokens", headers=limited, timeout=10,
                   json={"model": "tools", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 403 and r.json()["type"] == "error"
    r = httpx.post(gw.base + "/v1/messages", headers=limited, timeout=10,
                   json={"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert [req["model"] for req in mock.requests()] == ["edge-a"]


def test_anthropic_count_tokens(gw, mock, claude):
    short = claude.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "hi"}])
    long = claude.messages.count_tokens(model="auto", system="Be brief.",
                                        messages=[{"role": "user", "content": "a much longer question " * 40}])
    assert 0 < short.input_tokens < long.input_tokens
    assert long.input_tokens == (len("Be brief.") + len("a much longer question " * 40)) // 4 + 8
    r = httpx.post(gw.base + "/v1/messages/count_tokens", json={"model": "auto", "messages": []},
                   headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(gw.base + "/v1/messages/count_tokens", json={"model": "auto", "messages": []}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert not mock.requests()


def test_openai_sdk_responses_create(gw, mock, oai):
    raw = oai.responses.with_raw_response.create(model="auto", instructions="Be brief.", input="Hi there",
                                                 max_output_tokens=40, store=False)
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "mock answer to: Hi there"
    assert response.usage.output_tokens == 7 and response.usage.total_tokens > 7
    assert raw.headers["x-gateway-model"] == "edge-a" and raw.headers["x-gateway-route"] == "auto"
    sent = mock.requests("edge-a")[-1]["body"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert sent["max_tokens"] == 40


def test_openai_sdk_responses_stream(gw, mock, oai):
    with oai.responses.stream(model="auto", input="stream it") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "mock answer to: stream it"
    assert final.usage.output_tokens == 5
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]


def test_openai_sdk_responses_function_call_round_trip(gw, mock, oai):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    mock.script("tools-a", [{"tool_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}] * 2)
    first = oai.responses.create(model="tools", input="Weather in Oslo?", tools=tools)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {
        "city": "Oslo"}
    with oai.responses.stream(model="tools", input="Weather in Oslo?", tools=tools) as stream:
        streamed = stream.get_final_response()
    assert streamed.output[0].type == "function_call" and json.loads(streamed.output[0].arguments) == {"city": "Oslo"}
    second = oai.responses.create(model="tools", tools=tools, input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "-3C"}])
    assert second.output_text.startswith("mock answer")
    history = mock.requests("tools-a")[-1]["body"]["messages"]
    assert history[1]["tool_calls"][0]["id"] == call.call_id
    assert history[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "-3C"}


def test_responses_errors_in_openai_shape(gw, mock, oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="auto", input="x", previous_response_id="resp_123")
    assert "resp_123' not found" in caught.value.message and caught.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="x")
    r = httpx.post(gw.base + "/v1/responses", headers=AUTH, json={"model": "auto", "input": 5}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert not mock.requests()


def test_stored_responses_continue_with_previous_response_id(gw, mock, oai):
    first = oai.responses.create(model="auto", instructions="Be brief.", input="My name is Ada.")
    assert first.store is True
    second = oai.responses.create(model="auto", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert mock.requests("edge-a")[-1]["body"]["messages"] == [  # the instructions are not carried over
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "mock answer to: My name is Ada."},
        {"role": "user", "content": "What is my name?"}]
    with oai.responses.stream(model="auto", input="Thanks.", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert len(mock.requests("edge-a")[-1]["body"]["messages"]) == 5
    oai.responses.create(model="auto", input="Bye.", previous_response_id=third.id)  # a streamed turn is kept too
    assert [m["content"] for m in mock.requests("edge-a")[-1]["body"]["messages"]][-3:] == [
        "Thanks.", "mock answer to: Thanks.", "Bye."]
    unstored = oai.responses.create(model="auto", input="Forget this.", store=False)
    assert unstored.store is False
    with pytest.raises(openai.BadRequestError, match="not found"):
        oai.responses.create(model="auto", input="x", previous_response_id=unstored.id)
    other = openai.OpenAI(base_url=gw.base + "/v1", api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="not found"):  # stored answers belong to their key
        other.responses.create(model="auto", input="x", previous_response_id=first.id)


def test_stored_function_call_is_answered_with_its_output_only(gw, mock, oai):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    mock.script("tools-a", [{"tool_call": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}])
    first = oai.responses.create(model="tools", input="Weather in Rome?", tools=tools)
    call = first.output[0]
    second = oai.responses.create(model="tools", tools=tools, previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "25C"}])
    assert second.output_text.startswith("mock answer")
    sent = mock.requests("tools-a")[-1]["body"]["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Rome?"}
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[1]["tool_calls"][0]["function"]["name"] == (
        "get_weather")
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "25C"}


def test_openai_sdk_embeddings(gw, mock, oai):
    raw = oai.embeddings.with_raw_response.create(model="auto", input=["first text", "second text"])
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    assert result.data[0].embedding != result.data[1].embedding
    assert raw.headers["x-gateway-model"] == "emb-edge" and raw.headers["x-gateway-tier"] == "edge"
    assert raw.headers["x-gateway-route"] == "embeddings" and raw.headers["x-gateway-attempts"] == "1"
    assert mock.requests("emb-edge")[0]["body"]["input"] == ["first text", "second text"]
    again = oai.embeddings.create(model="emb-cloud", input="first text")
    assert again.data[0].embedding == result.data[0].embedding  # the mock's vectors are deterministic


def test_embeddings_retry_fallback_and_errors(gw, mock, oai):
    mock.script("emb-edge", [{"status": 500}])
    r = httpx.post(gw.base + "/v1/embeddings", headers=AUTH, json={"model": "emb-edge", "input": "x"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    assert r.headers["x-gateway-model"] == "emb-edge"
    mock.script("emb-edge", [], default={"status": 503})
    r = httpx.post(gw.base + "/v1/embeddings", headers=AUTH, json={"model": "emb-edge", "input": "x"}, timeout=10)
    assert r.status_code == 200 and r.headers["x-gateway-model"] == "emb-cloud"
    assert r.headers["x-gateway-fallbacks"] == "1" and r.headers["x-gateway-tier"] == "cloud"
    r = httpx.post(gw.base + "/v1/embeddings", headers=AUTH, json={"model": "emb-dead", "input": "x"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstreams_unavailable"
    mock.script("emb-cloud", [{"status": 400, "message": "input too long"}])
    r = httpx.post(gw.base + "/v1/embeddings", headers=AUTH, json={"model": "emb-cloud", "input": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"] == "input too long"
    with pytest.raises(openai.BadRequestError, match="chat model"):
        oai.embeddings.create(model="edge-a", input="x")
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nope", input="x")
    r = httpx.post(gw.base + "/v1/embeddings", headers=AUTH, json={"model": "auto", "input": []}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = httpx.post(gw.base + "/v1/embeddings", json={"model": "auto", "input": "x"}, timeout=10)
    assert r.status_code == 401
    r = httpx.post(gw.base + "/v1/chat/completions", headers=AUTH, timeout=10,
                   json={"model": "emb-edge", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400  # an embedding model is not a chat target



@settings(max_examples=80, deadline=None)
@given(body=_anthropic_body)
def test_gateway_answers_any_messages_body_without_a_5xx(gw, body):
    r = httpx.post(gw.base + "/v1/messages", headers={"x-api-key": KEY}, json=body, timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.json()["type"] == "error" and r.json()["error"]["type"] in ("invalid_request_error",
                                                                             "not_found_error")


@settings(max_examples=80, deadline=None)
@given(body=_responses_body)
def test_gateway_answers_any_responses_body_without_a_5xx(gw, body):
    r = httpx.post(gw.base + "/v1/responses", headers=AUTH, json=body, timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.json()["error"]["type"] in ("invalid_request_error", "not_found_error")

# ---- one resilience suite, every dialect ---------------------------------------------------------

def call(gw, dialect: str, model: str, stream: bool = False, content: str = "hello") -> httpx.Response:
    if dialect == "chat":
        path, body = "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": content}]}
    elif dialect == "messages":
        path, body = "/v1/messages", {"model": model, "max_tokens": 64,
                                      "messages": [{"role": "user", "content": content}]}
    else:
        path, body = "/v1/responses", {"model": model, "input": content}
    return httpx.post(gw.base + path, json={**body, "stream": stream}, headers=AUTH, timeout=30)


def answer_text(dialect: str, r: httpx.Response, stream: bool) -> str:
    if not stream:
        data = r.json()
        if dialect == "chat":
            return data["choices"][0]["message"]["content"]
        if dialect == "messages":
            assert data["type"] == "message"
            return "".join(b["text"] for b in data["content"] if b["type"] == "text")
        assert data["object"] == "response"
        return "".join(p["text"] for item in data["output"] if item["type"] == "message" for p in item["content"])
    events = sse(r.text)
    if dialect == "chat":
        assert events[-1][1] == "[DONE]"
        return "".join(e["choices"][0]["delta"].get("content") or "" for _, e in events[:-1] if e.get("choices"))
    if dialect == "messages":
        assert events[-1][0] == "message_stop"
        return "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta")
    assert events[-1][0] == "response.completed"
    return "".join(e["delta"] for n, e in events if n == "response.output_text.delta")


def error_of(dialect: str, r: httpx.Response) -> str:
    """The error type as the dialect reports it (Anthropic's own shape, OpenAI's for the others)."""
    data = r.json()
    if dialect == "messages":
        assert data["type"] == "error"
        return data["error"]["type"]
    return data["error"]["type"]


DECISION = ("x-gateway-route", "x-gateway-model", "x-gateway-tier", "x-gateway-attempts", "x-gateway-fallbacks",
            "x-gateway-policy-version", "x-gateway-complexity", "x-gateway-degraded")


def test_decision_headers_are_identical_across_dialects(gw, mock):
    seen = []
    for dialect in DIALECTS:
        for stream in (False, True):
            r = call(gw, dialect, "auto", stream, content="same question")
            assert r.status_code == 200
            seen.append(tuple(r.headers.get(h) for h in DECISION))
            assert answer_text(dialect, r, stream) == "mock answer to: same question"
    assert len(set(seen)) == 1 and seen[0][1] == "edge-a"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_retry_then_success(gw, mock, dialect, stream):
    mock.script(f"rp-{dialect}", [{"status": 500}, {"status": 503}])
    r = call(gw, dialect, f"retry-{dialect}", stream)
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == f"rp-{dialect}" and r.headers["x-gateway-attempts"] == "3"
    assert answer_text(dialect, r, stream) == "mock answer to: hello"
    assert len(mock.requests(f"rp-{dialect}")) == 3


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_fallback_to_second_target(gw, mock, dialect, stream):
    mock.script(f"fp-{dialect}", [], default={"status": 502})
    r = call(gw, dialect, f"fallback-{dialect}", stream)
    assert r.status_code == 200
    assert r.headers["x-gateway-model"] == f"fb-{dialect}"
    assert r.headers["x-gateway-fallbacks"] == "1" and r.headers["x-gateway-attempts"] == "4"
    assert answer_text(dialect, r, stream) == "mock answer to: hello"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_all_fail_gives_the_canned_reply_in_the_dialects_format(gw, mock, dialect, stream):
    mock.script(f"cp-{dialect}", [], default={"status": 500})
    r = call(gw, dialect, f"canned-{dialect}", stream)
    assert r.status_code == 200
    assert r.headers["x-gateway-degraded"] == "true" and r.headers["retry-after"] == "7"
    assert answer_text(dialect, r, stream) == CANNED


@pytest.mark.parametrize("dialect", DIALECTS)
def test_total_deadline_bounds_a_hanging_upstream(gw, mock, dialect):
    mock.script(f"hang-{dialect}", [], default={"hang": True})
    started = time.monotonic()
    r = call(gw, dialect, f"deadline-{dialect}")
    elapsed = time.monotonic() - started
    assert r.status_code == 503 and "retry-after" in r.headers
    assert error_of(dialect, r) == {"chat": "service_unavailable", "responses": "service_unavailable",
                                    "messages": "overloaded_error"}[dialect]
    # The executor gives up early by twice the event loop's recent lag, at most a quarter of the deadline.
    assert 1.5 * 0.75 <= elapsed < 1.5 + 0.5


@pytest.mark.parametrize("dialect", DIALECTS)
def test_failure_mid_stream_ends_with_the_dialects_error_event(gw, mock, dialect):
    mock.script(f"mid-{dialect}", [{"error_after": 2}])
    r = call(gw, dialect, f"mid-{dialect}", stream=True)
    assert r.status_code == 200
    events = sse(r.text)
    if dialect == "chat":
        assert "error" in events[-2][1] and events[-1][1] == "[DONE]"
    elif dialect == "messages":
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
        assert "message_stop" not in [n for n, _ in events]
    else:
        assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
        assert events[-1][1]["response"]["status"] == "failed"



@pytest.mark.parametrize("dialect", ["messages", "responses"])
def test_client_disconnect_cancels_the_upstream_stream(gw, mock, dialect):
    mock.script(f"mid-{dialect}", [{"content": " ".join(["word"] * 200), "chunks": 200, "chunk_delay": 0.05}])
    path, body = {"messages": ("/v1/messages", {"max_tokens": 500, "messages": [{"role": "user", "content": "x"}]}),
                  "responses": ("/v1/responses", {"input": "x"})}[dialect]
    with httpx.stream("POST", gw.base + path, headers=AUTH, timeout=30,
                      json={"model": f"mid-{dialect}", "stream": True, **body}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("event: ")
        [next(lines) for _ in range(8)]
    time.sleep(0.6)
    assert mock.requests(f"mid-{dialect}")[0]["aborted"]


@pytest.mark.parametrize("dialect", ["messages", "responses"])
def test_client_disconnect_cancels_a_non_stream_call(gw, mock, dialect):
    mock.script(f"rp-{dialect}", [{"delay": 1.0}])
    with pytest.raises(httpx.ReadTimeout):
        call_with_timeout = httpx.Timeout(0.3)
        path, body = {"messages": ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
                      "responses": ("/v1/responses", {"input": "x"})}[dialect]
        httpx.post(gw.base + path, headers=AUTH, json={"model": f"retry-{dialect}", **body}, timeout=call_with_timeout)
    time.sleep(1.2)
    assert mock.requests(f"rp-{dialect}")[0]["aborted"]

# ---- conversations never move down a tier --------------------------------------------------------

LONG = "Prove that the sum of the first n odd numbers is n squared, step by step. " * 10


def test_conversation_keys_link_a_turn_to_the_one_before():
    def keys(messages, key_name=None, headers=None, model="auto"):
        return conversation_keys(Request({}, b"", model, False, messages, headers or {}, key_name))

    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about tides."}]
    turn2 = turn1 + [{"role": "assistant", "content": "They follow the moon."}, {"role": "user", "content": "Why?"}]
    turn3 = turn2 + [{"role": "assistant", "content": "Gravity."}, {"role": "user", "content": "Thanks."}]
    assert keys(turn1)[1] is None  # a first turn has no turn before it
    assert keys(turn2)[1] == keys(turn1)[0] and keys(turn3)[1] == keys(turn2)[0]
    assert keys(turn2, key_name="other")[1] != keys(turn1)[0]  # scoped to the caller's key
    assert keys(turn2, model="fast")[1] != keys(turn1)[0]      # and to the model asked for
    given = keys(turn1, headers={"x-gateway-conversation": "c-1"})
    other_text = keys([{"role": "user", "content": "x"}], headers={"x-gateway-conversation": "c-1"})
    assert given[0] == given[1] == other_text[0]


def test_policy_conversations_switch():
    base = EMBED_POLICY.format(url="http://x/v1", extra="", targets="chat-a")
    assert compile_policy(base, env={}).sticky_ttl == 3600.0
    assert compile_policy(base + "conversations: {sticky: false}\n", env={}).sticky_ttl is None
    assert compile_policy(base + "conversations: {ttl: 10m}\n", env={}).sticky_ttl == 600.0
    with pytest.raises(PolicyInvalid, match="unknown key 'stickiness'"):
        compile_policy(base + "conversations: {stickiness: true}\n", env={})
    assert compile_policy(base, env={}).responses_ttl is None  # responses are kept only when asked
    assert compile_policy(base + "responses: {store: true}\n", env={}).responses_ttl == 3600.0
    assert compile_policy(base + "responses: {store: true, ttl: 5m}\n", env={}).responses_ttl == 300.0
    with pytest.raises(PolicyInvalid, match="responses.store must be true or false"):
        compile_policy(base + "responses: {store: yes please}\n", env={})


STICKY_POLICY = """
version: 1
models:
  edge-a: {tier: edge, litellm: {model: openai/edge-a, api_base: "http://127.0.0.1:9/v1"}}
  cloud-a: {tier: cloud, optional: true, litellm: {model: openai/cloud-a, api_base: "http://127.0.0.1:9/v1",
            api_key: "env:STICKY_TEST_KEY"}}
classifier: {kind: length}
routes:
  - {name: auto, when: {model: auto}, targets: [edge-a, cloud-a]}
"""


async def test_router_keeps_a_cloud_conversation_on_the_cloud_only_when_the_cloud_can_serve():
    from gateway.routing.router import Router
    from gateway.state.memory import MemoryStore

    class Length:
        default_threshold = 0.5

        async def score(self, text: str) -> float:
            return 0.0

        def threshold_for_share(self, share: float) -> float:
            return 0.5

    store = MemoryStore()
    router = Router(lambda kind: Length(), store=store)
    turn1 = [{"role": "user", "content": "Plan my trip."}]
    turn2 = turn1 + [{"role": "assistant", "content": "Where to?"}, {"role": "user", "content": "Rome."}]
    first = Request({}, b"", "auto", False, turn1)
    later = Request({}, b"", "auto", False, turn2)
    policy = compile_policy(STICKY_POLICY, env={"STICKY_TEST_KEY": "k"})
    decision, plan, _ = await router.decide(policy, first)
    assert decision.conversation == conversation_keys(first)[0] and decision.sticky is None
    decision, plan, _ = await router.decide(policy, later)
    assert [t.name for t in plan.targets] == ["edge-a", "cloud-a"] and decision.sticky is None  # not answered yet
    await store.cache_set(conversation_keys(first)[0], b"cloud", 60)  # what the app records after a cloud answer
    decision, plan, _ = await router.decide(policy, later)
    assert [t.name for t in plan.targets] == ["cloud-a"] and decision.sticky == "cloud" and decision.tier == "cloud"
    assert any("edge targets skipped" in r for r in decision.reasons)
    unavailable = compile_policy(STICKY_POLICY, env={})  # the cloud model's key is unset: keep the edge
    decision, plan, _ = await router.decide(unavailable, later)
    assert [t.name for t in plan.targets] == ["edge-a"] and decision.sticky is None
    off = compile_policy(STICKY_POLICY + "conversations: {sticky: false}\n", env={"STICKY_TEST_KEY": "k"})
    decision, plan, _ = await router.decide(off, later)
    assert [t.name for t in plan.targets] == ["edge-a", "cloud-a"] and decision.conversation is None

def _chat(gw, messages, headers=None):
    return httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", "messages": messages},
                      headers={**AUTH, **(headers or {})}, timeout=30)


def _wait_sticky(check, timeout: float = 2.0):
    """The cloud answer is remembered just after the response; poll until a later turn sees it."""
    deadline = time.monotonic() + timeout
    while True:
        r = check()
        if r.headers.get("x-gateway-sticky") or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_conversation_answered_by_the_cloud_stays_there(gw, mock, claude):
    opening = [{"role": "user", "content": "Sticky opening. " + LONG}]
    first = _chat(gw, opening)
    assert first.headers["x-gateway-tier"] == "cloud" and "x-gateway-sticky" not in first.headers
    follow = opening + [{"role": "assistant", "content": "Here is the proof."}, {"role": "user", "content": "thanks"}]
    r = _wait_sticky(lambda: _chat(gw, follow))
    assert r.headers["x-gateway-sticky"] == "cloud"
    assert r.headers["x-gateway-tier"] == "cloud" and r.headers["x-gateway-model"] == "cloud-a"
    # the same short follow-up in a conversation the cloud never answered stays on the edge
    other = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
             {"role": "user", "content": "thanks"}]
    r = _chat(gw, other)
    assert r.headers["x-gateway-tier"] == "edge" and "x-gateway-sticky" not in r.headers
    # the Anthropic dialect sees the same conversation
    raw = claude.messages.with_raw_response.create(model="auto", max_tokens=32, messages=follow)
    assert raw.headers["x-gateway-sticky"] == "cloud" and raw.headers["x-gateway-model"] == "cloud-a"


def test_client_given_conversation_id(gw, mock):
    first = _chat(gw, [{"role": "user", "content": LONG}], {"x-gateway-conversation": "conv-given-1"})
    assert first.headers["x-gateway-tier"] == "cloud"
    given = {"x-gateway-conversation": "conv-given-1"}
    r = _wait_sticky(lambda: _chat(gw, [{"role": "user", "content": "short"}], given))
    assert r.headers["x-gateway-sticky"] == "cloud" and r.headers["x-gateway-tier"] == "cloud"
    r = _chat(gw, [{"role": "user", "content": "short"}], {"x-gateway-conversation": "conv-given-2"})
    assert r.headers["x-gateway-tier"] == "edge" and "x-gateway-sticky" not in r.headers


# ---- the embedded model (llama.cpp in process) through the dialects ------------------------------

def _embedded_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401

        from gateway.edge_weights import default_gguf_path

        default_gguf_path()
    except Exception as exc:  # noqa: BLE001 - ImportError, a broken shared library, or no weights
        return f"the embedded model is not installed: {exc}"
    return None


needs_embedded = pytest.mark.skipif(_embedded_missing() is not None, reason=_embedded_missing() or "")


@pytest.fixture(scope="module")
def edge_gw(tmp_module):
    from conftest import ROOT

    gateway = Gateway((ROOT / "policies" / "default.yaml").read_text(), tmp_module, env={"OPENAI_API_KEY": ""})
    yield gateway
    gateway.stop()


@pytest.mark.edge
@needs_embedded
def test_anthropic_sdk_against_the_embedded_model(edge_gw):
    client = anthropic.Anthropic(base_url=edge_gw.base, api_key="unused", max_retries=0, timeout=60)
    raw = client.messages.with_raw_response.create(
        model="auto", max_tokens=24, extra_body={"temperature": 0}, system="Answer in one short sentence.",
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    message = raw.parse()
    assert raw.headers["x-gateway-model"] == "local" and raw.headers["x-gateway-tier"] == "edge"
    assert message.content[0].type == "text" and "Paris" in message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.input_tokens > 0
    with client.messages.stream(model="local", max_tokens=2, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "Write a long story about a dragon."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.stop_reason == "max_tokens" and final.usage.output_tokens == 2


@pytest.mark.edge
@needs_embedded
def test_openai_sdk_responses_and_embeddings_against_the_embedded_model(edge_gw):
    client = openai.OpenAI(base_url=edge_gw.base + "/v1", api_key="unused", max_retries=0, timeout=60)
    response = client.responses.create(model="auto", input="What is the capital of France?", temperature=0,
                                       max_output_tokens=24)
    assert "Paris" in response.output_text and response.usage.input_tokens > 0
    # A truncated answer ends with response.incomplete, as OpenAI's does (the SDK's stream helper waits for
    # response.completed only, so the events are read as they come).
    events = list(client.responses.create(model="local", input="Write a long story about a dragon.",
                                          temperature=0, max_output_tokens=3, stream=True))
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    final = events[-1]
    assert final.type == "response.incomplete" and final.response.incomplete_details.reason == "max_output_tokens"
    assert final.response.output_text.strip() and final.response.usage.output_tokens == 3
    with pytest.raises(openai.BadRequestError, match="does not store responses"):  # the default policy keeps none
        client.responses.create(model="auto", input="x", previous_response_id=response.id)
    assert response.store is False
    with pytest.raises(openai.BadRequestError, match="chat model"):
        client.embeddings.create(model="local", input="x")
    with pytest.raises(openai.NotFoundError, match="no embedding model"):
        client.embeddings.create(model="auto", input="x")


def test_unknown_paths_under_messages_answer_in_anthropics_shape(gw):
    for path in ("/v1/messages/batches", "/v1/messages/x/y"):
        r = httpx.post(gw.base + path, json={}, headers=AUTH, timeout=10)
        assert r.status_code == 404
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error", r.text
    other = httpx.post(gw.base + "/v1/nothing", json={}, headers=AUTH, timeout=10)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
