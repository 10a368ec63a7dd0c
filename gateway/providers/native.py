"""A pooled aiohttp client for upstreams that speak the OpenAI API (OpenAI, vLLM, llama.cpp, Ollama /v1).

It forwards the client's bytes when nothing needs changing, returns the upstream's body as bytes, and
passes stream chunks through as they arrive; it parses only what usage accounting needs. Every stream asks
the upstream for usage (the body is rewritten when the client did not ask, and the usage chunk is then left
out of what the client gets). Bodies and stream events over a cap are an upstream failure ("oversized"),
read no further than the cap.
"""

from __future__ import annotations


import aiohttp
import orjson

from gateway.providers.base import Completion, UpstreamCall, Usage, asks_usage, with_usage
from gateway.providers.errors import UpstreamError, kind_for_status, parse_retry_after
from gateway.providers.http import MAX_BODY_BYTES, MAX_EVENT_BYTES, MODEL_KEY, classify, hand_back, post, read_json
from gateway.providers.sse import data_of as _data_of, text_chars as _text_chars

_JSON = {"Content-Type": "application/json"}


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
        if call.raw is not None and body.get("model") == call.model and len(MODEL_KEY.findall(call.raw)) == 1:
            return call.raw
        return orjson.dumps({**body, "model": call.model})

    async def _post(self, call: UpstreamCall, ask_usage: bool = True) -> aiohttp.ClientResponse:
        return await post(self._session_factory(), self._url, self._payload(call, ask_usage), self._headers,
                          call.deadlines, call.stream, openai_error)

    async def complete(self, call: UpstreamCall) -> Completion:
        response = await self._post(call)
        raw, data = await read_json(response, self._max_body)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            if isinstance(data, dict) and "error" in data:
                raise openai_error(500, raw, {})
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
                raise classify(exc, in_stream=True) from None
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
            hand_back(self._response, self._done)


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


def openai_error(status: int, raw: bytes, headers) -> UpstreamError:
    """An OpenAI-compatible upstream's non-200 answer as the UpstreamError it stands for."""
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
