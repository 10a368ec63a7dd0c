"""The httpx client litellm's OpenAI-compatible calls go through: it stops reading an upstream answer at
the size caps (a non-streamed body, one line of an event stream), so memory stays bounded whatever the
upstream sends, and it follows no redirects."""

from __future__ import annotations

import asyncio
import weakref

import httpx

# Set from the settings (GATEWAY_MAX_UPSTREAM_BODY_BYTES / _EVENT_BYTES) when providers are made.
LIMITS = {"body": 16 * 1024 * 1024, "event": 1024 * 1024}
MARKER = "gateway-size-cap"  # in the error's text, so that it is recognised after litellm re-wraps it


class OverCap(httpx.ReadError):
    pass


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner, sse: bool) -> None:
        self._inner = inner
        self._sse = sse

    async def __aiter__(self):
        total = run = 0
        body, event = LIMITS["body"], LIMITS["event"]
        async for chunk in self._inner:
            if self._sse:
                end = chunk.rfind(b"\n")
                run = run + len(chunk) if end < 0 else len(chunk) - end - 1
                if run > event:
                    raise OverCap(f"{MARKER}: an upstream stream line is over the cap of {event} bytes")
            else:
                total += len(chunk)
                if total > body:
                    raise OverCap(f"{MARKER}: the upstream answer is over the cap of {body} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    """One connection pool per event loop (pooled connections cannot move between loops)."""

    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _pool(self) -> httpx.AsyncHTTPTransport:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60)
            pool = self._pools[loop] = httpx.AsyncHTTPTransport(limits=limits)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._pool().handle_async_request(request)
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        response.stream = _CappedStream(response.stream, sse)
        return response

    async def aclose(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()


def capped_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=_CappedTransport(), follow_redirects=False, timeout=None)
