"""A pooled aiohttp client for upstreams that speak Anthropic's Messages API, passing Messages through.

A client that spoke Messages gets its body sent upstream with only `model` changed (in the bytes: thinking
blocks and their signatures, `cache_control`, tool_use/tool_result and unknown fields stay exactly as the
client wrote them), and gets the upstream's answer back as the upstream's bytes: the message JSON, or the
SSE events re-framed on event boundaries. Only usage, a stream's opening and error events are parsed.
Headers come from the policy alone (`x-api-key`, `anthropic-version`, its `extra_headers`); redirects are
not followed; errors are classified like every other upstream's and their body normalised to
`{"error": {"message", "type", "code"}}` so the gateway can render them in any dialect.

A Chat Completions client routed to an Anthropic model goes through litellm, which translates.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson

from gateway.providers.base import Completion, UpstreamCall, Usage, token_count
from gateway.providers.errors import UpstreamError, kind_for_status, parse_retry_after
from gateway.providers.litellm_client import LitellmProvider, LitellmStream
from gateway.providers.http import MAX_BODY_BYTES, MAX_EVENT_BYTES, MODEL_KEY, classify, hand_back, post, read_json
from gateway.providers.sse import data_of

# Anthropic's error types and the HTTP status each comes with (an error event in a stream has no status).
_STATUS_OF_TYPE = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                   "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                   "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
_TYPE_OF_STATUS = {status: kind for kind, status in _STATUS_OF_TYPE.items()}
_OWN_HEADERS = frozenset({"x-api-key", "anthropic-version", "content-type", "authorization"})
_STRING = re.compile(rb'\s*("(?:[^"\\]|\\.)*")')  # a JSON string value after a key's colon
# Events that need no parse once the stream has opened: forwarded as they are, their text counted.
_PLAIN = (b"event: content_block_delta\n", b"event: content_block_start\n", b"event: content_block_stop\n",
          b"event: ping\n")
# The streamed text of a content_block_delta: text, thinking and tool input (escapes count as written).
_DELTA_TEXT = re.compile(rb'"(?:text|thinking|partial_json)":\s*"([^"\\]*(?:\\.[^"\\]*)*)"')


class AnthropicProvider:
    dialect = "anthropic"

    def __init__(self, session, api_base: str, api_key: str | None, anthropic_version: str, params: dict, *,
                 max_body: int | None = None, max_event: int | None = None) -> None:
        self._session = session
        self._api_base = api_base
        self._api_key = api_key
        self._params = params
        self._url = messages_url(api_base)
        self._max_body = max_body or MAX_BODY_BYTES
        self._max_event = max_event or MAX_EVENT_BYTES
        extra = params.get("extra_headers")
        headers = {str(k): str(v) for k, v in extra.items() if str(k).lower() not in _OWN_HEADERS} \
            if isinstance(extra, dict) else {}
        headers["content-type"] = "application/json"
        headers["anthropic-version"] = anthropic_version
        if api_key:
            headers["x-api-key"] = api_key
        self._headers = headers
        self._translating: LitellmProvider | None = None

    def load(self) -> None:
        return None

    async def aclose(self) -> None:
        translating, self._translating = self._translating, None
        if translating is not None:
            await translating.aclose()

    def _litellm(self) -> LitellmProvider:
        """The provider for Chat Completions clients, made on first use: litellm's Anthropic adapter."""
        if self._translating is None:
            params = {"custom_llm_provider": "anthropic", "api_base": self._api_base, "api_key": self._api_key,
                      **self._params}
            self._translating = LitellmProvider(params, max_body=self._max_body, max_event=self._max_event)
        return self._translating

    async def complete(self, call: UpstreamCall) -> Completion:
        if call.dialect != "anthropic":
            return await self._litellm().complete(call)
        response = await self._post(call)
        raw, data = await read_json(response, self._max_body)
        if not isinstance(data, dict) or data.get("type", "message") != "message" or \
                not isinstance(data.get("content"), list):
            if isinstance(data, dict) and data.get("type") == "error":
                raise _http_error(None, raw, {})
            raise UpstreamError("malformed", "the upstream answer is not a message", status=200)
        return Completion(raw, usage_of(data.get("usage")), dialect="anthropic")

    async def stream(self, call: UpstreamCall) -> AnthropicStream | LitellmStream:
        """The stream, once its opening is read: message_start first, then events up to the first content
        delta (or the end of an empty answer). An error event or a malformed opening is raised here, where
        the caller can still retry or fail over; the events read are the iterator's first pieces."""
        if call.dialect != "anthropic":
            return await self._litellm().stream(call)
        response = await self._post(call)
        stream = AnthropicStream(response, self._max_event)
        try:
            async with asyncio.timeout(call.deadlines.first_token):
                await stream.open()
        except TimeoutError:
            await stream.aclose()
            raise UpstreamError("timeout", "no first token in time") from None
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def _payload(self, call: UpstreamCall) -> bytes:
        """The client's bytes with the model's name spliced in; re-encoded only when that cannot be done
        safely (no single top-level "model" string) or when `stream` must be set to match the call."""
        raw, body = call.raw, call.body
        if raw is not None:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                body = parsed
            else:
                raw = None
        if raw is not None and bool(body.get("stream")) == call.stream and isinstance(body.get("model"), str):
            spliced = _with_model(raw, call.model)
            if spliced is not None:
                return spliced
        out = {**body, "model": call.model}
        if call.stream:
            out["stream"] = True
        else:
            out.pop("stream", None)
        return orjson.dumps(out)

    async def _post(self, call: UpstreamCall) -> aiohttp.ClientResponse:
        return await post(self._session(), self._url, self._payload(call), self._headers, call.deadlines,
                          call.stream, _http_error)


def messages_url(api_base: str) -> str:
    """`{api_base}/v1/messages`; a base that already ends in /v1 or /v1/messages is taken as meant."""
    base = api_base.rstrip("/")
    if base.endswith("/v1/messages"):
        return base
    if base.endswith("/v1"):
        return base + "/messages"
    return base + "/v1/messages"


def _with_model(raw: bytes, model: str) -> bytes | None:
    """`raw` with the value of its one "model" key replaced, every other byte kept; None when the bytes
    hold more than one "model" key (a nested one, or a duplicate) or its value is not a plain string."""
    keys = list(MODEL_KEY.finditer(raw))
    if len(keys) != 1:
        return None
    value = _STRING.match(raw, keys[0].end())
    if value is None:
        return None
    return raw[:value.start(1)] + orjson.dumps(model) + raw[value.end(1):]


def usage_of(usage) -> Usage | None:
    """Anthropic's usage as the gateway counts it: cache writes and reads are prompt tokens too."""
    if not isinstance(usage, dict):
        return None
    return Usage(_prompt_tokens(usage), token_count(usage.get("output_tokens")))


def _prompt_tokens(usage: dict) -> int:
    return token_count(usage.get("input_tokens")) + token_count(usage.get("cache_creation_input_tokens")) + \
        token_count(usage.get("cache_read_input_tokens"))


def _error_fields(raw: bytes) -> tuple[str, str | None]:
    """The message and Anthropic error type of an error answer (`{"type": "error", "error": {...}}`)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            kind = error.get("type")
            return str(error.get("message") or error), kind if isinstance(kind, str) else None
        if isinstance(error, str):
            return error, None
    return raw[:200].decode("utf-8", "replace"), None


def _http_error(status: int | None, raw: bytes, headers) -> UpstreamError:
    """An UpstreamError for an error answer or error event; `status` None: the one its type comes with."""
    message, error_type = _error_fields(raw)
    if status is None:
        status = _STATUS_OF_TYPE.get(error_type or "", 500)
    if error_type is None:
        error_type = _TYPE_OF_STATUS.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")
    if status == 529 or error_type == "overloaded_error":
        kind = "overloaded"
    elif status == 400 and "prompt is too long" in message.lower():
        kind = "context_window"
    else:
        kind = kind_for_status(status, f"{message} {error_type}")
    body = {"error": {"message": message, "type": error_type, "code": None}}
    return UpstreamError(kind, f"upstream answered {status}: {message}", status=status,
                         retry_after=parse_retry_after(headers), body=body)


def _fields(event: bytes) -> tuple[bytes | None, bytes | None]:
    """An SSE event's name (`event:` line) and data; the name falls back to the data's "type"."""
    name = None
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip()
            break
    data = data_of(event)
    if name is None and data is not None:
        match = re.match(rb'\s*\{\s*"type"\s*:\s*"([^"\\]*)"', data)
        name = match.group(1) if match else b""
    return name, data


class AnthropicStream:
    """The upstream's Anthropic SSE events, forwarded as received in whole events (a read may end inside
    an event or hold several); message_start, message_delta and error events are parsed, the rest only
    scanned for their text length. Ends at message_stop; an end before it is a "stream_cut"."""

    framed = True
    dialect = "anthropic"
    __slots__ = ("_response", "_buffer", "_pending", "_started", "_content", "_done", "_eof", "_error",
                 "_closed", "_max_event", "usage", "text_chars")

    def __init__(self, response: aiohttp.ClientResponse, max_event: int = MAX_EVENT_BYTES) -> None:
        self._response = response
        self._buffer = b""
        self._pending: list[bytes] = []  # events read while opening, forwarded first
        self._started = False            # message_start seen
        self._content = False            # a content_block_delta seen
        self._done = False               # message_stop seen
        self._eof = False
        self._error: UpstreamError | None = None
        self._closed = False
        self._max_event = max_event
        self.usage: Usage | None = None
        self.text_chars = 0

    async def open(self) -> None:
        """Read up to the first content (or the end of an empty answer); raise what went wrong before."""
        while not (self._content or self._done):
            block = await self._pull()
            if block:
                self._pending.append(block)
            if self._error is not None:
                error, self._error = self._error, None
                await self.aclose()
                raise error

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self._pending:
            return self._pending.pop(0)
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                await self.aclose()
                raise error
            if self._done or self._eof or self._closed:
                await self.aclose()
                raise StopAsyncIteration
            block = await self._pull()
            if block:
                return block

    async def _pull(self) -> bytes:
        """One read: the whole events it completes, as bytes to forward."""
        try:
            data = await self._response.content.readany()
        except BaseException as exc:
            await self.aclose()
            raise classify(exc, in_stream=True) from None
        if data:
            return self._take(data, final=False)
        self._eof = True  # the upstream closed the stream
        block = self._take(b"", final=True)
        if not self._done and self._error is None:
            self._error = UpstreamError("stream_cut", "the upstream closed the stream before message_stop") \
                if self._started else UpstreamError("malformed", "the upstream stream had no events", status=200)
        return block

    def _take(self, data: bytes, final: bool) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        if final:
            whole, self._buffer = buffer, b""
        else:
            end = buffer.rfind(b"\n\n")
            if end < 0:
                whole, self._buffer = b"", buffer
            else:
                whole, self._buffer = buffer[:end], buffer[end + 2:]
            if len(self._buffer) > self._max_event:
                self._buffer = b""
                self._fail(UpstreamError("oversized", f"an upstream stream event is over the cap of "
                                                      f"{self._max_event} bytes", status=200))
        out = []
        cap = self._max_event
        for event in whole.split(b"\n\n"):
            if self._error is not None or self._done:
                break
            if len(event) > cap:
                self._fail(UpstreamError("oversized", f"an upstream stream event is over the cap of {cap} bytes",
                                         status=200))
                break
            if self._started and event.startswith(_PLAIN):
                # The bulk of a stream: forwarded as it came, its text counted, no parse.
                if event.startswith(b"event: content_block_delta\n"):
                    self._content = True
                    self.text_chars += sum(len(m) for m in _DELTA_TEXT.findall(event))
                out.append(event)
                continue
            event = event.strip(b"\n")
            if event and self._look(event):
                out.append(event)
        return b"\n\n".join(out) + b"\n\n" if out else b""

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error

    def _look(self, event: bytes) -> bool:
        """Account for one event; False for those not forwarded (comments, errors)."""
        name, data = _fields(event)
        if data is None and name is None:
            if not self._started and not event.startswith(b":"):
                # Not SSE at all: an error answered as JSON with a 200, or a page from a proxy.
                error = _json(event)
                self._fail(_http_error(None, event, {}) if error.get("type") == "error" else UpstreamError(
                    "malformed", "the upstream stream is not an event stream", status=200))
            return False  # a comment (keep-alive), or a line that is no SSE field
        if not self._started:
            if name == b"message_start":
                message = _json(data).get("message")
                if isinstance(message, dict):
                    self._started = True
                    self.usage = usage_of(message.get("usage"))
                    return True
                self._fail(UpstreamError("malformed", "the upstream stream's message_start holds no message",
                                         status=200))
            elif name == b"error":
                self._fail(_http_error(None, data or b"", {}))
            else:
                self._fail(UpstreamError("malformed", "the upstream stream did not open with message_start",
                                         status=200))
            return False
        if name == b"content_block_delta":
            self._content = True
            self.text_chars += sum(len(m) for m in _DELTA_TEXT.findall(data or b""))
        elif name == b"message_delta":
            usage = _json(data).get("usage")
            if isinstance(usage, dict):  # cumulative; newer upstreams repeat the input counts here
                known = self.usage or Usage()
                self.usage = Usage(
                    _prompt_tokens(usage) if usage.get("input_tokens") is not None else known.prompt_tokens,
                    token_count(usage.get("output_tokens")) if usage.get("output_tokens") is not None
                    else known.completion_tokens)
        elif name == b"message_stop":
            self._done = True
        elif name == b"error":
            self._fail(_http_error(None, data or b"", {}))
            return False
        return True

    async def aclose(self) -> None:
        self._pending.clear()
        if not self._closed:
            self._closed = True
            hand_back(self._response, self._done)


def _json(data: bytes | None) -> dict:
    try:
        value = orjson.loads(data or b"")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
