#!/usr/bin/env python3
"""A fast OpenAI-compatible mock upstream for the throughput benchmarks.

    python bench/mock_openai.py --port 19000 [--chunks 20] [--delay-ms 0] [--chunk-delay-ms 0]

POST .../chat/completions answers a fixed `chat.completion`, or with `"stream": true` a fixed SSE stream
(--chunks `chat.completion.chunk` events, a usage event when `stream_options.include_usage` is set, then
`data: [DONE]`) in chunked transfer encoding; GET /health and /v1/models answer small JSON bodies.
It is a bare asyncio protocol (uvloop when importable) with every answer built once at start, so with no
delay a request costs a parse and one socket write: the mock must never be what a benchmark measures.
On SIGTERM/SIGINT it prints one JSON line with the number of requests served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from typing import cast

STREAM = re.compile(rb'"stream"\s*:\s*true')
INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
REPLY = "Hello! This is the mock upstream answering."


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_body() -> bytes:
    return _dump({"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "mock",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                               "finish_reason": "stop"}],
                  "usage": USAGE})


def stream_events(chunks: int, usage: bool) -> list[bytes]:
    """SSE events: a role delta, content deltas, a finish delta, [optionally usage], [DONE]."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "mock"}
    words = REPLY.split(" ")
    events = []
    for i in range(max(chunks, 2)):
        if i == 0:
            delta: dict = {"role": "assistant", "content": ""}
            finish = None
        elif i == max(chunks, 2) - 1:
            delta, finish = {}, "stop"
        else:
            delta, finish = {"content": words[(i - 1) % len(words)] + " "}, None
        events.append(b"data: " + _dump(dict(head, choices=[{"index": 0, "delta": delta,
                                                              "finish_reason": finish}])) + b"\n\n")
    if usage:
        events.append(b"data: " + _dump(dict(head, choices=[], usage=USAGE)) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def head(status: str, ctype: str, length: int | None, close: bool) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    conn = "close" if close else "keep-alive"
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{framing}\r\nConnection: {conn}\r\n\r\n").encode()


class Answers:
    """Every response the mock can give, as bytes, built once."""

    def __init__(self, chunks: int) -> None:
        body = completion_body()
        self.json = {c: head("200 OK", "application/json", len(body), c) + body for c in (False, True)}
        self.events = {u: stream_events(chunks, u) for u in (False, True)}
        self.stream = {(u, c): head("200 OK", "text/event-stream", None, c)
                       + b"".join(chunk(e) for e in self.events[u]) + b"0\r\n\r\n"
                       for u in (False, True) for c in (False, True)}
        models = _dump({"object": "list", "data": [{"id": "mock", "object": "model", "owned_by": "bench"}]})
        self.models = {c: head("200 OK", "application/json", len(models), c) + models for c in (False, True)}
        health = b'{"status":"ok"}'
        self.health = {c: head("200 OK", "application/json", len(health), c) + health for c in (False, True)}
        missing = b'{"error":{"message":"not found","type":"invalid_request_error"}}'
        self.missing = {c: head("404 Not Found", "application/json", len(missing), c) + missing
                        for c in (False, True)}


class MockProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection (pipelined requests are queued in order)."""

    served = 0
    live: set[asyncio.Transport] = set()

    def __init__(self, answers: Answers, delay: float, chunk_delay: float) -> None:
        self.answers, self.delay, self.chunk_delay = answers, delay, chunk_delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        MockProtocol.live.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            MockProtocol.live.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].split(b"\r\n")
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            parts = lines[0].split(b" ")
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
            MockProtocol.served += 1
            self._answer(method, path.split(b"?", 1)[0], body, close)

    def _answer(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        assert self.transport is not None
        a = self.answers
        if method == b"POST" and path.endswith(b"/chat/completions"):
            stream = STREAM.search(body) is not None
            usage = stream and INCLUDE_USAGE.search(body) is not None
            if self.delay or (stream and self.chunk_delay):
                self.busy = True
                asyncio.ensure_future(self._slow(stream, usage, close))
                return
            self.transport.write(a.stream[(usage, close)] if stream else a.json[close])
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            self.transport.write(a.models[close])
        elif method == b"GET" and path in (b"/health", b"/healthz"):
            self.transport.write(a.health[close])
        else:
            self.transport.write(a.missing[close])
        if close:
            self.transport.close()

    async def _slow(self, stream: bool, usage: bool, close: bool) -> None:
        """The delayed path: --delay-ms before the answer, --chunk-delay-ms between stream events."""
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.transport is None:
                return
            if not stream:
                self.transport.write(self.answers.json[close])
            else:
                self.transport.write(head("200 OK", "text/event-stream", None, close))
                for i, event in enumerate(self.answers.events[usage]):
                    if i and self.chunk_delay:
                        await asyncio.sleep(self.chunk_delay)
                    if self.transport is None:
                        return
                    self.transport.write(chunk(event))
                self.transport.write(b"0\r\n\r\n")
            if close:
                self.transport.close()
        finally:
            self.busy = False
        if self.transport is not None and self.buf:
            self._serve_buffered()


async def serve(host: str, port: int, answers: Answers, delay: float, chunk_delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(answers, delay, chunk_delay), host, port,
                                      reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock_openai listening on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()
    for transport in list(MockProtocol.live):  # a stop must not wait for clients to hang up
        transport.abort()
    print(json.dumps({"served": MockProtocol.served}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=19000)
    ap.add_argument("--chunks", type=int, default=20, help="chat.completion.chunk events per stream (>= 2)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="before the answer / the first event")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="between stream events")
    a = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(a.host, a.port, Answers(a.chunks), a.delay_ms / 1000, a.chunk_delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
