"""HTTP calls over the shared aiohttp session, as every HTTP provider makes them: timeouts from the attempt's
deadlines, no redirect ever followed (the policy names every destination), answers read no further than a
cap, a non-200 read (capped) and classified, aiohttp's exceptions turned into `UpstreamError`s."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping

import aiohttp
import orjson

from gateway.providers.base import Deadlines
from gateway.providers.errors import UpstreamError

# A "model" key, also written with \u escapes. The client's bytes are forwarded only when they hold one:
# with two top-level "model" keys the gateway (last one wins) and an upstream that reads the first one
# would disagree on which model is called.
MODEL_KEY = re.compile(rb'"(?:m|\\u006[dD])(?:o|\\u006[fF])(?:d|\\u0064)(?:e|\\u0065)(?:l|\\u006[cC])"\s*:')
MAX_BODY_BYTES = 16 * 1024 * 1024   # a non-streamed answer
MAX_EVENT_BYTES = 1024 * 1024       # one SSE event of a stream
MAX_ERROR_BYTES = 64 * 1024         # what is read of an error answer (its message is all that is used)

ErrorOf = Callable[[int, bytes, Mapping[str, str]], UpstreamError]  # (status, body, headers) -> the error


def client_timeout(d: Deadlines, stream: bool) -> aiohttp.ClientTimeout:
    if stream:
        # The first token is bounded by the executor; sock_read bounds every later gap between chunks.
        return aiohttp.ClientTimeout(total=None, connect=d.connect, sock_connect=d.connect, sock_read=d.attempt)
    return aiohttp.ClientTimeout(total=d.attempt, connect=d.connect, sock_connect=d.connect)


async def post(session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str],
               deadlines: Deadlines, stream: bool, error_of: ErrorOf) -> aiohttp.ClientResponse:
    """POST and return a 200 response (its body unread); any other status raises `error_of`'s error."""
    try:
        response = await session.post(url, data=data, headers=headers, timeout=client_timeout(deadlines, stream),
                                      allow_redirects=False)
    except BaseException as exc:
        raise classify(exc) from None
    if response.status != 200:
        try:
            raw = await read_capped(response, MAX_ERROR_BYTES, truncate=True)
        except BaseException as exc:
            raise classify(exc) from None
        finally:
            hand_back(response, response.content.at_eof())
        raise error_of(response.status, raw, response.headers)
    return response


async def read_capped(response: aiohttp.ClientResponse, cap: int, truncate: bool = False) -> bytes:
    """The body, read no further than `cap` bytes: past it, the first `cap` bytes (`truncate`) or an
    "oversized" error."""
    length = response.content_length
    if length is not None and length > cap and not truncate:
        raise UpstreamError("oversized", f"the upstream answer is {length} bytes, over the cap of {cap}", status=200)
    parts, total = [], 0
    async for piece in response.content.iter_any():
        total += len(piece)
        if total > cap:
            if truncate:
                parts.append(piece[:cap - total + len(piece)])
                break
            raise UpstreamError("oversized", f"the upstream answer is over the cap of {cap} bytes", status=200)
        parts.append(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def hand_back(response: aiohttp.ClientResponse, read_to_end: bool) -> None:
    """Give a response's connection back to the pool only when it was read to the end; otherwise close it,
    which also stops the upstream (a half-read connection must never be reused)."""
    if read_to_end:
        response.release()
    else:
        response.close()


async def read_json(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, object]:
    """A 200 answer's bytes (read no further than `cap`) and what they parse to; "malformed" when not JSON.
    The connection goes back to the pool only when it was read to the end."""
    try:
        raw = await read_capped(response, cap)
    except BaseException as exc:
        response.close()  # an unread rest must not go back to the pool
        raise classify(exc) from None
    response.release()
    try:
        return raw, orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("malformed", "the upstream answered with invalid JSON", status=200) from None


def classify(exc: BaseException, in_stream: bool = False) -> BaseException:
    """An aiohttp failure as the UpstreamError it stands for (a cancellation, or an UpstreamError, as it is)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamError("timeout", "the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("connect", f"cannot connect to the upstream: {exc.os_error or exc}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientOSError, ConnectionError)):
        return UpstreamError("stream_cut" if in_stream else "connect", f"the upstream connection broke: {exc}")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError("connect", f"upstream client error: {exc}")
    return exc
