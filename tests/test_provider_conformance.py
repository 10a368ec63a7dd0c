"""One conformance suite over both upstream clients (native aiohttp and litellm): same answers, same
error taxonomy, against the same mock upstream."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from gateway.providers.base import Deadlines, UpstreamCall
from gateway.providers.errors import Action, UpstreamError
from gateway.providers.litellm_client import LitellmProvider
from gateway.providers.native import NativeOpenAIProvider


def run(coro):
    return asyncio.run(coro)


async def _with_provider(kind: str, base: str, fn):
    if kind == "native":
        session = aiohttp.ClientSession()
        try:
            return await fn(NativeOpenAIProvider(lambda: session, base, "t"), "conf")
        finally:
            await session.close()
    provider = LitellmProvider({"api_base": base, "api_key": "t"})
    return await fn(provider, "openai/conf")


def call(model: str, stream=False, **body):
    payload = {"model": model, "messages": [{"role": "user", "content": "hello conformance"}], **body}
    if stream:
        payload["stream"] = True
    return UpstreamCall(payload, model, stream, Deadlines(connect=2, attempt=2, first_token=2))


KINDS = ["native", "litellm"]


@pytest.mark.parametrize("kind", KINDS)
def test_complete(kind, mock):
    async def fn(provider, model):
        return await provider.complete(call(model))

    completion = run(_with_provider(kind, mock.url, fn))
    data = orjson.loads(completion.body)
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "mock answer to: hello conformance"
    assert completion.usage.completion_tokens == 7 and completion.usage.prompt_tokens > 0
    assert mock.requests()[0]["body"]["model"] == "conf"


def _payloads(piece: bytes, framed: bool) -> list[dict]:
    if not framed:
        return [orjson.loads(piece)]
    return [orjson.loads(e[6:]) for e in piece.split(b"\n\n") if e.startswith(b"data: ")]


@pytest.mark.parametrize("kind", KINDS)
def test_stream_with_usage(kind, mock):
    async def fn(provider, model):
        stream = await provider.stream(call(model, stream=True, stream_options={"include_usage": True}))
        framed = getattr(stream, "framed", False)
        chunks = []
        async for piece in stream:
            chunks.extend(_payloads(piece, framed))
        await stream.aclose()
        return chunks, stream.usage

    chunks, usage = run(_with_provider(kind, mock.url, fn))
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert text == "mock answer to: hello conformance"
    assert usage is not None and usage.completion_tokens == 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action, kind_expected, action_expected", [
    ({"status": 500}, "server", Action.RETRY),
    ({"status": 503}, "server", Action.RETRY),
    ({"status": 429, "headers": {"Retry-After": "3"}}, "rate_limit", Action.RETRY),
    ({"status": 400, "message": "This model's maximum context length is 4096 tokens"}, "context_window", Action.FAILOVER),
    ({"status": 400, "message": "unsupported value for temperature"}, "bad_request", Action.CLIENT),
    ({"status": 401, "message": "invalid key"}, "auth_upstream", Action.FAILOVER),
])
def test_error_taxonomy(kind, mock, action, kind_expected, action_expected):
    mock.script("conf", [action])

    async def fn(provider, model):
        with pytest.raises(UpstreamError) as info:
            await provider.complete(call(model))
        return info.value

    error = run(_with_provider(kind, mock.url, fn))
    assert error.kind == kind_expected, error
    assert error.action is action_expected
    if kind_expected == "rate_limit" and kind == "native":
        assert error.retry_after == 3.0


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_and_timeout(kind, mock, dead_port):
    dead = f"http://127.0.0.1:{dead_port}/v1"

    async def refused(provider, model):
        with pytest.raises(UpstreamError) as info:
            await provider.complete(call(model))
        return info.value

    error = run(_with_provider(kind, dead, refused))
    assert error.kind == "connect" and error.action is Action.RETRY

    mock.script("conf", [{"delay": 3}])

    async def slow(provider, model):
        c = call(model)
        c.deadlines = Deadlines(connect=1, attempt=0.5, first_token=0.5)
        with pytest.raises(UpstreamError) as info:
            await provider.complete(c)
        return info.value

    error = run(_with_provider(kind, mock.url, slow))
    assert error.kind == "timeout" and error.action is Action.RETRY


async def _drain(provider, model, **body):
    stream = await provider.stream(call(model, stream=True, **body))
    framed = getattr(stream, "framed", False)
    chunks = []
    try:
        async for piece in stream:
            chunks.extend(_payloads(piece, framed))
    finally:
        await stream.aclose()
    return chunks, stream


@pytest.mark.parametrize("kind", KINDS)
def test_stream_asks_for_usage_and_hides_it_when_the_client_did_not(kind, mock):
    chunks, stream = run(_with_provider(kind, mock.url, _drain))
    assert mock.requests()[0]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.get("choices") for c in chunks) and not any(c.get("usage") for c in chunks)
    assert stream.usage is not None and stream.usage.completion_tokens == 5
    assert stream.text_chars == len("mock answer to: hello conformance")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", [{"raw": ""}, {"raw": "<html><body>bad gateway</body></html>",
                                                   "content_type": "text/html"}, {"raw": ": ping\n\n"}])
def test_stream_with_no_events_is_an_error_not_an_answer(kind, mock, action):
    """An upstream 200 without a single event must never read as a finished (empty) answer."""
    mock.script("conf", [action])

    async def fn(provider, model):
        with pytest.raises(UpstreamError) as info:
            chunks, _ = await _drain(provider, model)
            # A provider that passes it on must give nothing a chunk consumer could take for an answer.
            assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks), chunks
            raise UpstreamError("malformed", "ended without events")
        return info.value

    error = run(_with_provider(kind, mock.url, fn))
    assert error.action is Action.RETRY, error


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True])
def test_answer_over_the_cap_is_oversized(kind, mock, stream):
    mock.script("conf", [{"huge": 32 * 1024 * 1024}])

    async def fn(provider, model):
        with pytest.raises(UpstreamError) as info:
            if stream:
                await _drain(provider, model)
            else:
                await provider.complete(call(model))
        return info.value

    async def capped(provider_kind):
        if provider_kind == "native":
            session = aiohttp.ClientSession()
            try:
                return await fn(NativeOpenAIProvider(lambda: session, mock.url, "t", max_body=1 << 20,
                                                     max_event=1 << 18), "conf")
            finally:
                await session.close()
        return await fn(LitellmProvider({"api_base": mock.url, "api_key": "t"}, max_body=1 << 20, max_event=1 << 18),
                        "openai/conf")

    error = run(capped(kind))
    assert error.kind == "oversized", error
    # Reading stopped near the cap: far less than the whole answer left the mock (loopback socket buffers
    # can hold several MiB, so the bound leaves room for them).
    assert mock.requests()[0].get("sent", 0) < 16 * 1024 * 1024


def test_native_stream_retries_without_stream_options_when_the_upstream_refuses_them(mock):
    """The gateway adds `stream_options`; an upstream that rejects the field gets the client's body."""
    mock.script("conf", [{"status": 400, "message": "Unrecognized request argument supplied: stream_options"}])
    chunks, stream = run(_with_provider("native", mock.url, _drain))
    sent = [r["body"] for r in mock.requests()]
    assert len(sent) == 2 and "stream_options" in sent[0] and "stream_options" not in sent[1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "mock answer to: hello conformance"
    assert stream.usage is None and stream.text_chars > 0
