"""A pooled aiohttp client for upstreams that speak the OpenAI API (OpenAI, vLLM, llama.cpp, Ollama /v1).

It forwards the client's bytes when nothing needs changing, returns the upstream's body as bytes, and
passes stream chunks through as they arrive; it parses only what usage accounting needs. Every stream asks
the upstream for usage (the body is rewritten when the client did not ask, and the usage chunk is then left
out of what the client gets). Bodies and stream events over a cap are an upstream failure ("oversized"),
read no further than the cap.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson

from gateway.providers.base import Completion, Deadlines, UpstreamCall, Usage, asks_usage, with_usage
from gateway.providers.errors import UpstreamError, kind_for_status, parse_retry_after
from gateway.providers.sse import data_of as _data_of, text_chars as _text_chars

_JSON = {"Content-Type": "application/json"}
# A "model" key, also written with \u escapes. The client's bytes are forwarded only when they hold one:
# with two top-level "model" keys the gateway (last one wins) and an upstream that reads the first one
# would disagree on which model is called.
_MODEL_KEY = re.compile(rb'"(?:m|\\u006[dD])(?:o|\\u006[fF])(?:d|\\u0064)(?:e|\\u0065)(?:l|\\u006[cC])"\s*:')
MAX_BODY_BYTES = 16 * 1024 * 1024   # a non-streamed answer
MAX_EVENT_BYTES = 1024 * 1024       # one SSE event of a stream
_MAX_ERROR_BYTES = 64 * 1024        # what is read of an error answer (its message is all that is used)


class NativeOpenAIProvider:
    def __init__(self, session_factory, api_base: str, api_key: str | None = None,
                 extra_headers: dict | None = None, max_body: int = MAX_BODY_BYTES,
                 max_event: int = MAX_EVENT_BYTES) -> None:
        self._session_factory = session_factory
        self._max_body = max_body
        self._max_event = max_event
        self._url = api_base.rstrip("/") + "/chat/completions"
        headers = dict(_JSON)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        headers.update(extra_headers or {})
        self._headers = headers

    def load(self):
        return None

    async def aclose(self) -> None:
        return None

    def _payload(self, call: UpstreamCall, ask_usage: bool = True) -> bytes:
        body = call.body
        if call.stream and ask_usage and not asks_usage(body):
            return orjson.dumps(with_usage({**body, "model": call.model}))
        if call.raw is not None and body.get("model") == call.model and len(_MODEL_KEY.findall(call.raw)) == 1:
            return call.raw
        return orjson.dumps({**body, "model": call.model})

    def _timeout(self, d: Deadlines, stream: bool) -> aiohttp.ClientTimeout:
        if stream:
            # The first token is bounded by the executor; sock_read bounds every later gap between chunks.
            return aiohttp.ClientTimeout(total=None, connect=d.connect, sock_connect=d.connect, sock_read=d.attempt)
        return aiohttp.ClientTimeout(total=d.attempt, connect=d.connect, sock_connect=d.connect)

    async def _post(self, call: UpstreamCall, ask_usage: bool = True) -> aiohttp.ClientResponse:
        session = self._session_factory()
        try:
            response = await session.post(self._url, data=self._payload(call, ask_usage), headers=self._headers,
                                          timeout=self._timeout(call.deadlines, call.stream), allow_redirects=False)
        except BaseException as exc:
            raise _translate(exc) from None
        if response.status != 200:
            try:
                raw = await _read_capped(response, _MAX_ERROR_BYTES, truncate=True)
            except BaseException as exc:
                raise _translate(exc) from None
            finally:
                if response.content.at_eof():
                    response.release()
                else:
                    response.close()  # a rest was left unread: this connection cannot be reused
            raise _http_error(response.status, raw, response.headers)
        return response

    async def complete(self, call: UpstreamCall) -> Completion:
        response = await self._post(call)
        try:
            raw = await _read_capped(response, self._max_body)
        except BaseException as exc:
            response.close()  # an unread rest must not go back to the pool
            raise _translate(exc) from None
        response.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("malformed", "the upstream answered with invalid JSON", status=200) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            if isinstance(data, dict) and "error" in data:
                raise _http_error(500, raw, {})
            raise UpstreamError("malformed", "the upstream answer has no choices", status=200)
        return Completion(raw, Usage.from_dict(data.get("usage")))

    async def stream(self, call: UpstreamCall) -> "NativeStream":
        asked = asks_usage(call.body)
        try:
            response = await self._post(call)
        except UpstreamError as exc:
            # An upstream that does not know `stream_options` (which the gateway added): once more without.
            if asked or exc.status != 400 or "stream_options" not in exc.message:
                raise
            response = await self._post(call, ask_usage=False)
        return NativeStream(response, strip_usage=not asked, max_event=self._max_event)


async def _read_capped(response: aiohttp.ClientResponse, cap: int, truncate: bool = False) -> bytes:
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


class NativeStream:
    """Passes the upstream's SSE through in the blocks it arrives in (`framed`: whole `data:` events, no
    [DONE]); only blocks that may hold [DONE], an error event or usage are looked at event by event."""

    framed = True
    __slots__ = ("_response", "_buffer", "_done", "_error", "usage", "_closed", "_strip_usage", "_max_event",
                 "text_chars")

    def __init__(self, response: aiohttp.ClientResponse, strip_usage: bool = False,
                 max_event: int = MAX_EVENT_BYTES) -> None:
        self._response = response
        self._buffer = b""
        self._done = False
        self._error: UpstreamError | None = None
        self.usage: Usage | None = None
        self._closed = False
        self._strip_usage = strip_usage  # the gateway asked for usage, not the client: drop the usage chunk
        self._max_event = max_event
        self.text_chars = 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                await self.aclose()
                raise error
            if self._done or self._closed:
                await self.aclose()
                raise StopAsyncIteration
            try:
                data = await self._response.content.readany()
            except BaseException as exc:
                await self.aclose()
                raise _translate(exc, in_stream=True) from None
            if not data:  # the upstream closed the connection
                rest, self._buffer = self._buffer.strip(), b""
                block = self._take(rest + b"\n\n") if rest else b""
                if not self._done and self._error is None:
                    self._error = UpstreamError("stream_cut", "the upstream closed the stream before [DONE]")
                if block:
                    return block
                continue
            block = self._take(data)
            if block:
                return block

    def _take(self, data: bytes) -> bytes:
        """The complete events in the buffer, as bytes to forward."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            block, self._buffer = b"", buffer
        else:
            block, self._buffer = buffer[:end + 2], buffer[end + 2:]
        if len(self._buffer) > self._max_event and self._error is None:
            self._buffer = b""
            self._error = UpstreamError("oversized", f"an upstream stream event is over the cap of "
                                                     f"{self._max_event} bytes", status=200)
        if not block:
            return b""
        if b"[DONE]" in block or b'"error"' in block or b'"usage"' in block:
            block = self._inspect(block)
        elif b"data:" not in block:
            return b""  # comments alone (keep-alives) are not forwarded
        self.text_chars += _text_chars(block)
        return block

    def _inspect(self, block: bytes) -> bytes:
        out = []
        for event in block.split(b"\n\n"):
            payload = _data_of(event)
            if payload is None:
                continue
            if payload == b"[DONE]":
                self._done = True
                break
            if payload.startswith(b'{"error"'):
                self._error = _stream_error(payload)
                break
            if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
                try:
                    data = orjson.loads(payload)
                    self.usage = Usage.from_dict(data.get("usage")) or self.usage
                    if self._strip_usage and data.get("choices") == []:
                        continue  # the usage chunk the gateway asked for on its own account
                except (orjson.JSONDecodeError, AttributeError):
                    pass
            out.append(event + b"\n\n")
        return b"".join(out)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._done:
                self._response.release()
            else:
                self._response.close()  # stop the upstream: do not return a half-read connection to the pool


def _message_of(raw: bytes) -> tuple[str, dict | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace"), None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error), data
        if isinstance(error, str):
            return error, data
    return raw[:200].decode("utf-8", "replace"), data if isinstance(data, dict) else None


def _http_error(status: int, raw: bytes, headers) -> UpstreamError:
    message, body = _message_of(raw)
    code = ""
    if body and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or "")
    kind = kind_for_status(status, message + " " + code)
    return UpstreamError(kind, f"upstream answered {status}: {message}", status=status,
                         retry_after=parse_retry_after(headers), body=body)


def _stream_error(payload: bytes) -> UpstreamError:
    message, body = _message_of(payload)
    status = 500
    if body and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        if isinstance(code, int):
            status = code
    return UpstreamError(kind_for_status(status, message), f"upstream error in stream: {message}",
                         status=status, body=body)


def _translate(exc: BaseException, in_stream: bool = False) -> BaseException:
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
