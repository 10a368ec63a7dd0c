"""The Anthropic pass-through provider against the mock's Messages API on loopback: the client's bytes go up
with only the model changed, the upstream's bytes come back, and failures are classified like any
upstream's."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import orjson
import pytest

from gateway.providers.anthropic_native import AnthropicProvider, messages_url
from gateway.providers.base import Deadlines, UpstreamCall
from gateway.providers.errors import Action, UpstreamError

VERSION = "2023-06-01"
THINKING = {"thinking": "Let me weigh both options.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxY+sig=="}
# A conversation as a client writes it: odd spacing, a thinking block with its signature, cache_control,
# tool_use and tool_result, and a field the gateway does not know.
CLIENT_BODY = (
    b'{ "model" :  "client-alias",\n  "max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 2000},'
    b' "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],'
    b' "messages": [{"role": "user", "content": "What is 2+2? Use the tool."},'
    b' {"role": "assistant", "content": [{"type": "thinking", "thinking": "I should call add.",'
    b' "signature": "EqQBCgIYAhIMsig\\u002bXYZ=="}, {"type": "tool_use", "id": "toolu_01", "name": "add",'
    b' "input": {"a": 2, "b": 2}}]},'
    b' {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "4",'
    b' "cache_control": {"type": "ephemeral"}}]}],'
    b' "tools": [{"name": "add", "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}}}],'
    b' "future_field": 1.50}'
)


def run(coro):
    return asyncio.run(coro)


def call(raw: bytes = CLIENT_BODY, model: str = "claude-up", stream: bool = False, dialect: str = "anthropic",
         deadlines: Deadlines | None = None) -> UpstreamCall:
    body = orjson.loads(raw)
    if stream:
        body["stream"] = True
        raw = raw[:-1] + b', "stream": true}'
    return UpstreamCall(body, model, stream, deadlines or Deadlines(connect=2, attempt=5, first_token=5), raw,
                        dialect=dialect)


async def _with(mock, fn, api_base: str | None = None, **kwargs):
    session = aiohttp.ClientSession()
    params = kwargs.pop("params", {})
    provider = AnthropicProvider(lambda: session, api_base or mock.base, "sk-ant-policy", VERSION, params, **kwargs)
    try:
        return await fn(provider)
    finally:
        await provider.aclose()
        await session.close()


async def _drain(stream) -> list[bytes]:
    pieces = []
    try:
        async for piece in stream:
            pieces.append(piece)
    finally:
        await stream.aclose()
    return pieces


def _events(blob: bytes) -> list[tuple[str, dict]]:
    out = []
    for event in blob.split(b"\n\n"):
        if not event:
            continue
        lines = event.split(b"\n")
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), event
        out.append((lines[0][7:].decode(), json.loads(lines[1][6:])))
    return out


def test_body_passes_byte_for_byte_except_model(mock):
    mock.script("claude-up", [{"thinking": THINKING, "content": "2+2 is 4."}])
    completion = run(_with(mock, lambda p: p.complete(call())))
    record = mock.requests("claude-up")[0]
    assert record["path"] == "/v1/messages"
    assert record["raw"].encode() == CLIENT_BODY.replace(b'"client-alias"', b'"claude-up"')
    sent = record["body"]
    assert sent["messages"][1]["content"][0]["signature"] == "EqQBCgIYAhIMsig+XYZ=="
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][2]["content"][0]["type"] == "tool_result" and sent["thinking"]["budget_tokens"] == 2000
    headers = {k.lower(): v for k, v in record["headers"].items()}
    assert headers["x-api-key"] == "sk-ant-policy" and headers["anthropic-version"] == VERSION
    assert headers["content-type"] == "application/json" and "authorization" not in headers
    # The answer: Anthropic's message, thinking block and signature included, with its usage.
    assert completion.dialect == "anthropic"
    answer = orjson.loads(completion.body)
    assert answer["type"] == "message" and answer["content"][0] == {"type": "thinking", **THINKING}
    assert answer["content"][1] == {"type": "text", "text": "2+2 is 4."}
    assert completion.usage.prompt_tokens == answer["usage"]["input_tokens"]
    assert completion.usage.completion_tokens == 7


def test_same_model_forwards_the_bytes_untouched_and_the_answer_comes_back_untouched(mock):
    answer = (b'{"id":"msg_1",  "type":"message","role":"assistant","model":"claude-up","content":[{"type":"thinking",'
              b'"thinking":"hm","signature":"c2ln"},{"type":"text","text":"4"}],"stop_reason":"end_turn",'
              b'"usage":{"input_tokens":10,"output_tokens":3,"cache_creation_input_tokens":5,'
              b'"cache_read_input_tokens":20}}')
    mock.script("claude-up", [{"raw": answer.decode(), "content_type": "application/json"}])
    raw = CLIENT_BODY.replace(b'"client-alias"', b'"claude-up"')
    completion = run(_with(mock, lambda p: p.complete(call(raw))))
    assert mock.requests("claude-up")[0]["raw"].encode() == raw
    assert completion.body == answer
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (35, 3)


def test_a_nested_model_key_is_kept_and_the_body_re_encoded(mock):
    raw = b'{"model": "client-alias", "max_tokens": 5, "metadata": {"user_id": "u"}, "messages": [{"role": "user",' \
          b' "content": [{"type": "tool_result", "tool_use_id": "t", "content": "{\\"model\\": 1}"}]}],' \
          b' "tools": [{"name": "pick", "input_schema": {"properties": {"model": {"type": "string"}}}}]}'
    run(_with(mock, lambda p: p.complete(call(raw))))
    sent = mock.requests("claude-up")[0]["body"]
    assert sent == {**json.loads(raw), "model": "claude-up"}


def test_policy_headers_only(mock):
    params = {"extra_headers": {"anthropic-beta": "interleaved-thinking-2025-05-14", "x-api-key": "not-this"}}
    run(_with(mock, lambda p: p.complete(call()), params=params))
    headers = {k.lower(): v for k, v in mock.requests("claude-up")[0]["headers"].items()}
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["x-api-key"] == "sk-ant-policy"


def test_stream_passes_events_and_counts_usage(mock):
    mock.script("claude-up", [{"thinking": THINKING, "content": "two plus two is four", "cache_read": 30}])

    async def fn(p):
        stream = await p.stream(call(stream=True))
        assert stream.framed and stream.dialect == "anthropic"
        return await _drain(stream), stream

    pieces, stream = run(_with(mock, fn))
    assert all(p.endswith(b"\n\n") for p in pieces)
    events = _events(b"".join(pieces))
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "ping", *["content_block_delta"] * 5, "content_block_stop", "message_delta",
        "message_stop"]
    assert events[3][1]["delta"] == {"type": "signature_delta", "signature": THINKING["signature"]}
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "two plus two is four"
    prompt = events[0][1]["message"]["usage"]["input_tokens"] + 30
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (prompt, 5)
    assert stream.text_chars == len(THINKING["thinking"]) + len(text)
    assert mock.requests("claude-up")[0]["body"]["stream"] is True


STREAM = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in [
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                            "content": [], "usage": {"input_tokens": 12,
                                                                                     "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 2, "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "input_json_delta", "partial_json": "\"b\": 2}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
])


@pytest.mark.parametrize("split", [0, 7, 50])
def test_stream_is_re_framed_on_event_boundaries(mock, split):
    """However the upstream's writes cut through events, the pieces are whole events and their bytes, put
    together, are the upstream's."""
    mock.script("claude-up", [{"raw": STREAM, "split": split}])
    pieces, stream = run(_with(mock, _open_and_drain))
    assert b"".join(pieces) == STREAM.encode()
    for piece in pieces:
        assert piece.startswith(b"event: ") and piece.endswith(b"\n\n")
        _events(piece)  # parses: whole events only
    if split:
        assert len(pieces) > 1
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (12, 9)
    assert stream.text_chars == len('{\\"a\\": 2, ') + len('\\"b\\": 2}')


async def _open_and_drain(p, **kwargs):
    stream = await p.stream(call(stream=True, **kwargs))
    return await _drain(stream), stream


_OVERLOADED = 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'


@pytest.mark.parametrize("raw, content_type, kind", [
    ("<html><body>\n\n<h1>502 Bad Gateway</h1>\n\n</body></html>", "text/html", "malformed"),
    ("", "text/event-stream", "malformed"),
    (STREAM.split("\n\n", 2)[2], "text/event-stream", "malformed"),   # no message_start
    (_OVERLOADED, "text/event-stream", "overloaded"),
    ('{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "application/json",
     "overloaded"),  # an error answered with a 200
    (STREAM.split("\n\n")[0] + "\n\n" + _OVERLOADED, "text/event-stream", "overloaded"),  # before any content
    (STREAM.split("\n\n")[0] + "\n\n", "text/event-stream", "stream_cut"),
])
def test_opening_is_validated_before_stream_returns(mock, raw, content_type, kind):
    mock.script("claude-up", [{"raw": raw, "content_type": content_type}])

    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            await p.stream(call(stream=True))
        return caught.value

    error = run(_with(mock, fn))
    assert error.kind == kind and error.action is Action.RETRY
    if kind == "overloaded":
        assert error.body == {"error": {"message": "Overloaded", "type": "overloaded_error", "code": None}}


@pytest.mark.parametrize("action, kind", [({"error_after": 2}, "overloaded"),
                                          ({"error_after": 2, "error_type": "api_error"}, "server"),
                                          ({"cut_after": 2}, "stream_cut")])
def test_failure_after_content_raises_while_iterating(mock, action, kind):
    mock.script("claude-up", [{**action, "content": "one two three four five", "chunk_delay": 0.02}])

    async def fn(p):
        stream = await p.stream(call(stream=True))
        pieces = []
        with pytest.raises(UpstreamError) as caught:
            async for piece in stream:
                pieces.append(piece)
        await stream.aclose()
        return pieces, caught.value

    pieces, error = run(_with(mock, fn))
    assert error.kind == kind
    events = _events(b"".join(pieces))
    assert sum(name == "content_block_delta" for name, _ in events) == 2
    assert all(name != "error" for name, _ in events)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("action, kind, expected_action, error_type", [
    ({"status": 429, "headers": {"retry-after": "3"}}, "rate_limit", Action.RETRY, "rate_limit_error"),
    ({"status": 529}, "overloaded", Action.RETRY, "overloaded_error"),
    ({"status": 500}, "server", Action.RETRY, "api_error"),
    ({"status": 401}, "auth_upstream", Action.FAILOVER, "authentication_error"),
    ({"status": 400, "message": "messages: field required"}, "bad_request", Action.CLIENT, "invalid_request_error"),
    ({"status": 400, "message": "prompt is too long: 210000 tokens > 200000 maximum"}, "context_window",
     Action.FAILOVER, "invalid_request_error"),
])
def test_http_errors_are_classified_and_normalised(mock, stream, action, kind, expected_action, error_type):
    mock.script("claude-up", [action])

    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            if stream:
                await p.stream(call(stream=True))
            else:
                await p.complete(call())
        return caught.value

    error = run(_with(mock, fn))
    assert (error.kind, error.action, error.status) == (kind, expected_action, action["status"])
    assert error.body == {"error": {"message": action.get("message", f"mock error {action['status']}"),
                                    "type": error_type, "code": None}}
    assert error.retry_after == (3.0 if action["status"] == 429 else None)


def test_html_error_page_is_classified_by_its_status(mock):
    mock.script("claude-up", [{"status": 502, "message": "ignored"}])
    mock.script("claude-up", [{"raw": "<html>Bad gateway</html>", "content_type": "text/html"}])

    async def fn(p):
        with pytest.raises(UpstreamError) as first:
            await p.complete(call())
        with pytest.raises(UpstreamError) as second:
            await p.complete(call())  # a 200 that is not a message
        return first.value, second.value

    first, second = run(_with(mock, fn))
    assert first.kind == "server" and first.body["error"]["type"] == "api_error"
    assert second.kind == "malformed"


def test_redirect_is_not_followed(mock):
    mock.script("claude-up", [{"status": 302, "headers": {"Location": mock.base + "/v1/messages"}}])

    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            await p.complete(call())
        return caught.value

    error = run(_with(mock, fn))
    assert error.kind == "redirect" and error.action is Action.FAILOVER
    assert len(mock.requests()) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_oversized_answer_or_event(mock, stream):
    mock.script("claude-up", [{"huge": 32 * 1024 * 1024}])

    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            if stream:
                await p.stream(call(stream=True))
            else:
                await p.complete(call())
        return caught.value

    error = run(_with(mock, fn, max_body=1024 * 1024, max_event=256 * 1024))
    assert error.kind == "oversized" and error.action is Action.FAILOVER
    # Reading stopped near the cap: the mock's writes failed long before the whole answer left it
    # (loopback socket buffers can hold several MiB, so the bound leaves room for them).
    deadline = time.monotonic() + 10
    while not mock.requests("claude-up")[0]["aborted"] and time.monotonic() < deadline:
        time.sleep(0.05)
    record = mock.requests("claude-up")[0]
    assert record["aborted"] and record["sent"] < 16 * 1024 * 1024


def test_no_first_token_in_time(mock):
    mock.script("claude-up", [{"first_token_delay": 2}])

    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            await p.stream(call(stream=True, deadlines=Deadlines(connect=2, attempt=5, first_token=0.3)))
        return caught.value

    assert run(_with(mock, fn)).kind == "timeout"


def test_aclose_stops_the_upstream(mock):
    mock.script("claude-up", [{"chunks": 40, "chunk_delay": 0.05}])

    async def fn(p):
        stream = await p.stream(call(stream=True))
        await stream.__anext__()
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    run(_with(mock, fn))
    deadline = time.monotonic() + 5
    while not mock.requests("claude-up")[0]["aborted"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock.requests("claude-up")[0]["aborted"]


def test_connection_refused(mock, dead_port):
    async def fn(p):
        with pytest.raises(UpstreamError) as caught:
            await p.complete(call())
        return caught.value

    assert run(_with(mock, fn, api_base=f"http://127.0.0.1:{dead_port}")).kind == "connect"


def test_stream_flag_follows_the_call(mock):
    """A body whose `stream` disagrees with the call is re-encoded with the call's."""
    async def fn(p):
        streamed = UpstreamCall(orjson.loads(CLIENT_BODY), "claude-up", True, Deadlines(2, 5, 5), CLIENT_BODY,
                                dialect="anthropic")
        await _drain(await p.stream(streamed))
        plain = call(stream=True)
        await p.complete(UpstreamCall(plain.body, "claude-up", False, Deadlines(2, 5, 5), plain.raw,
                                      dialect="anthropic"))

    run(_with(mock, fn))
    first, second = mock.requests("claude-up")
    assert first["body"]["stream"] is True and "stream" not in second["body"]
    assert second["body"]["messages"] == json.loads(CLIENT_BODY)["messages"]


def test_chat_client_goes_through_litellm(mock):
    """A Chat Completions client routed to an Anthropic upstream: litellm translates both ways."""
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hello claude"}], "max_tokens": 50}

    async def fn(p):
        assert p.load() is None
        completion = await p.complete(UpstreamCall(chat, "claude-up", False, Deadlines(2, 10, 10)))
        stream = await p.stream(UpstreamCall({**chat, "stream": True}, "claude-up", True, Deadlines(2, 10, 10)))
        chunks = await _drain(stream)
        return completion, chunks, stream

    completion, chunks, stream = run(_with(mock, fn))
    assert completion.dialect == "openai"
    data = orjson.loads(completion.body)
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "mock answer to: hello claude"
    assert getattr(stream, "dialect", "openai") == "openai"
    text = "".join(orjson.loads(c)["choices"][0]["delta"].get("content") or "" for c in chunks
                   if orjson.loads(c).get("choices"))
    assert text == "mock answer to: hello claude"
    for record in mock.requests("claude-up"):
        assert record["path"] == "/v1/messages"
        assert record["body"]["messages"][0]["role"] == "user" and "max_tokens" in record["body"]
        assert {k.lower(): v for k, v in record["headers"].items()}["x-api-key"] == "sk-ant-policy"


def test_messages_url():
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("https://proxy.example/anthropic/") == "https://proxy.example/anthropic/v1/messages"
    assert messages_url("https://proxy.example/v1") == "https://proxy.example/v1/messages"
    assert messages_url("https://proxy.example/v1/messages") == "https://proxy.example/v1/messages"


def test_comments_are_dropped_and_message_delta_usage_is_cumulative(mock):
    events = STREAM.split("\n\n")
    raw = "\n\n".join(events[:3] + [": keep-alive"] + events[3:6]) + "\n\n" + \
        'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": ' \
        '{"input_tokens": 12, "cache_read_input_tokens": 100, "output_tokens": 21}}\n\n' + \
        'event: message_stop\ndata: {"type": "message_stop"}\n\n'
    mock.script("claude-up", [{"raw": raw, "split": 9}])
    pieces, stream = run(_with(mock, _open_and_drain))
    assert b"".join(pieces) == raw.replace(": keep-alive\n\n", "").encode()
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (112, 21)


@pytest.mark.parametrize("raw, spliced", [
    # An escaped key is still the one model key: spliced, every other byte kept.
    (b'{"\\u006dodel":"client-alias","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}', True),
    # Two top-level keys: the upstream might read the first, so the body is re-encoded with one.
    (b'{"model":"claude-up","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"model":"client-alias"}',
     False),
])
def test_model_key_forms(mock, raw, spliced):
    run(_with(mock, lambda p: p.complete(call(raw))))
    record = mock.requests("claude-up")[0]
    assert record["body"]["model"] == "claude-up"
    if spliced:
        assert record["raw"].encode() == raw.replace(b'"client-alias"', b'"claude-up"')
    else:
        assert record["raw"].count('"model"') == 1


def test_oversized_event_after_content_raises_while_iterating(mock):
    events = STREAM.split("\n\n")
    big = 'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": ' \
          '{"type": "input_json_delta", "partial_json": "' + "x" * 4096 + '"}}'
    mock.script("claude-up", [{"raw": "\n\n".join(events[:4] + [big] + events[4:]), "split": 256}])

    async def fn(p):
        stream = await p.stream(call(stream=True))
        pieces = []
        with pytest.raises(UpstreamError) as caught:
            async for piece in stream:
                pieces.append(piece)
        await stream.aclose()
        return pieces, caught.value

    pieces, error = run(_with(mock, fn, max_event=1024))
    assert error.kind == "oversized"
    assert b"".join(pieces) == "\n\n".join(events[:4]).encode() + b"\n\n"
