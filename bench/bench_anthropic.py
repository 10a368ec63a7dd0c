#!/usr/bin/env python3
"""What reading an Anthropic upstream costs the gateway: Messages passed through (AnthropicProvider) against
the same stream translated to Chat Completions by litellm, and a bare aiohttp read of the bytes.

    PYTHONPATH=$PWD python3 bench/bench_anthropic.py                 # 2,000 text deltas, 5 rounds
    PYTHONPATH=$PWD python3 bench/bench_anthropic.py --deltas 500 --rounds 3

An in-process aiohttp server on loopback answers /v1/messages with one fixed Anthropic stream (message_start
... N content_block_delta ... message_stop), written in 4 KiB pieces that cut through events. Each round
drains it once per reader, the readers alternating; the report is the median wall time per stream and per
event, and the non-streamed answer (one message of N words) the same way.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
from aiohttp import web

from gateway.providers.anthropic_native import AnthropicProvider
from gateway.providers.base import Deadlines, UpstreamCall
from gateway.providers.litellm_client import LitellmProvider, import_litellm


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _stream(n: int) -> bytes:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-bench", "content": [],
               "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}
    events = [_sse("message_start", {"type": "message_start", "message": message}),
              _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
              _sse("ping", {"type": "ping"})]
    events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": f"word{i} "}}) for i in range(n)]
    events += [_sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                      "usage": {"output_tokens": n}}),
               _sse("message_stop", {"type": "message_stop"})]
    return b"".join(events)


def _message(n: int) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-bench",
                       "content": [{"type": "text", "text": " ".join(f"word{i}" for i in range(n))}],
                       "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": n}}).encode()


async def main(deltas: int, rounds: int) -> None:
    stream_bytes, message_bytes = _stream(deltas), _message(deltas)

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=message_bytes, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(stream_bytes), 4096):
            await response.write(stream_bytes[start:start + 4096])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    session = aiohttp.ClientSession()
    await asyncio.to_thread(import_litellm)
    native = AnthropicProvider(lambda: session, base, "k", "2023-06-01", {})
    litellm = LitellmProvider({"custom_llm_provider": "anthropic", "api_base": base, "api_key": "k"})
    question = {"model": "claude-bench", "max_tokens": 4096, "messages": [{"role": "user", "content": "go"}]}
    deadlines = Deadlines(connect=5, attempt=60, first_token=60)

    async def raw_read(stream: bool) -> None:
        body = json.dumps({**question, "stream": stream}).encode()
        async with session.post(base + "/v1/messages", data=body, headers={"content-type": "application/json"}) \
                as response:
            while await response.content.readany():
                pass

    async def passthrough(stream: bool) -> None:
        body = {**question, "stream": stream} if stream else question
        call = UpstreamCall(body, "claude-bench", stream, deadlines, json.dumps(body).encode(), dialect="anthropic")
        if not stream:
            await native.complete(call)
            return
        events = await native.stream(call)
        async for _ in events:
            pass

    async def translated(stream: bool) -> None:
        chat = {"model": "auto", "max_tokens": 4096, "messages": [{"role": "user", "content": "go"}]}
        call = UpstreamCall({**chat, "stream": stream}, "claude-bench", stream, deadlines)
        if not stream:
            await litellm.complete(call)
            return
        chunks = await litellm.stream(call)
        async for _ in chunks:
            pass

    readers = {"bare aiohttp read": raw_read, "AnthropicProvider (pass-through)": passthrough,
               "litellm (translated to chat)": translated}
    for stream in (True, False):
        times: dict[str, list[float]] = {name: [] for name in readers}
        for reader in readers.values():
            await reader(stream)  # warm up
        for _ in range(rounds):
            for name, reader in readers.items():
                await asyncio.sleep(0.2)  # let litellm's after-call tasks finish outside the next timing
                started = time.perf_counter()
                await reader(stream)
                times[name].append(time.perf_counter() - started)
        kind = f"stream of {deltas} deltas ({len(stream_bytes):,} bytes)" if stream else \
            f"message of {deltas} words ({len(message_bytes):,} bytes)"
        print(f"\n{kind}, median of {rounds}:")
        for name, values in times.items():
            median = statistics.median(values)
            per = f", {median / (deltas + 7) * 1e6:.1f} us/event" if stream else ""
            print(f"  {name:34s} {median * 1000:8.2f} ms{per}")
    await native.aclose()
    await litellm.aclose()
    await session.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--deltas", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.deltas, args.rounds))
