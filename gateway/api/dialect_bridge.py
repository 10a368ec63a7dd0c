"""Runs a non-Chat dialect (Anthropic Messages, OpenAI Responses) through the Chat Completions pipeline.

The seam for the later pipeline refactor: today the pipeline (admission, cache, routing, execution, the
stream's deadline and the degrade decision) lives inside the `ChatCompletions` ASGI endpoint, so a dialect
endpoint parses its request into a chat body, calls that endpoint in-process with a synthetic request (the
client's own headers: key, x-request-id, routing headers) and translates what it sends back as it arrives:
the status and headers (decision headers unchanged), a JSON answer or error, and SSE chunks one by one
(never buffering the stream). When the pipeline becomes a function returning a typed record, only this
module changes; the dialect modules' translators stay.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.admission.keys import authenticate, bearer, check_model
from gateway.api.chat import _REQUEST_ID, _new_request_id, read_body
from gateway.api.validate import parse_json
from gateway.errors import ApiError

log = logging.getLogger("gateway.dialects")

_SSE_TYPE = b"text/event-stream; charset=utf-8"
_JSON_TYPE = b"application/json"
_DROP_HEADERS = frozenset({b"content-type", b"content-length"})


class StreamEncoder(Protocol):
    def chunk(self, payload: dict) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, status: int, openai_error: dict) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the bridge needs of a dialect: all pure functions."""

    name: str
    to_chat: Callable[[dict], dict]                       # request -> chat body (raises ApiError)
    completion: Callable[[dict, dict], dict]              # (chat.completion, request) -> answer
    stream: Callable[[dict], StreamEncoder]               # request -> a fresh stream encoder
    error: Callable[[int, dict | None], bytes]            # (status, OpenAI error body) -> error body


def error_dict(exc: ApiError) -> dict:
    return orjson.loads(exc.body())


async def send_error(send, dialect: Dialect, exc: ApiError, extra: list | None = None) -> None:
    headers = [(b"content-type", _JSON_TYPE), *(extra or []),
               *((k.encode(), str(v).encode()) for k, v in exc.headers.items())]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": dialect.error(exc.status, error_dict(exc))})


def _dumps(body: dict) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:  # nesting deeper than the encoder allows (the parser allows more)
        raise ApiError(400, f"The request cannot be forwarded: {exc}", code="invalid_json") from None


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _id_headers(scope, policy_version: str) -> list[tuple[bytes, bytes]]:
    given = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"), None)
    request_id = given if given and _REQUEST_ID.match(given) else _new_request_id()
    return [(b"x-request-id", request_id.encode()), (b"x-gateway-policy-version", policy_version.encode())]


async def read_json(receive, scope, limit: int) -> dict:
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    raw = await read_body(receive, limit, declared.decode("latin-1") if declared is not None else None)
    return parse_json(raw)


class _Translating:
    """The `send` handed to the chat endpoint: holds the response start until the first body bytes show
    whether the answer is an error, a JSON completion or a stream, then sends the dialect's version."""

    def __init__(self, send, dialect: Dialect, request: dict,
                 on_final: Callable[[dict], Awaitable[None]] | None = None) -> None:
        self._send = send
        self.dialect = dialect
        self.request = request
        self.on_final = on_final  # awaited with the finished answer before its last bytes go out
        self.status = 0
        self.headers: list = []
        self.encoder: StreamEncoder | None = None
        self._json: list[bytes] = []
        self._buffer = b""
        self._done = False

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [h for h in message.get("headers", []) if h[0].lower() not in _DROP_HEADERS]
            content_type = next((v for k, v in message.get("headers", []) if k.lower() == b"content-type"), b"")
            if self.status == 200 and content_type.startswith(b"text/event-stream"):
                self.encoder = self.dialect.stream(self.request)
                await self._send({"type": "http.response.start", "status": 200,
                                  "headers": [(b"content-type", _SSE_TYPE), *self.headers]})
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        if self.encoder is not None:  # a stream
            out = self._events(body)
            if not more and not self._done:  # the chat stream ended without [DONE]: end the dialect's too
                out += self.encoder.end()
            final = getattr(self.encoder, "final", None)
            if final is not None and self.on_final is not None:
                on_final, self.on_final = self.on_final, None
                await on_final(final)
            await self._send({"type": "http.response.body", "body": out, "more_body": more})
            return
        self._json.append(body)
        if more:
            return
        try:
            data = orjson.loads(b"".join(self._json))
        except orjson.JSONDecodeError:
            data = None
        if self.status != 200 or not isinstance(data, dict) or "error" in data:
            self.status = self.status if self.status != 200 else 502
            payload = self.dialect.error(self.status, data)
        else:
            answer = self.dialect.completion(data, self.request)
            if self.on_final is not None:
                await self.on_final(answer)
            payload = orjson.dumps(answer)
        await self._send({"type": "http.response.start", "status": self.status,
                          "headers": [(b"content-type", _JSON_TYPE), *self.headers]})
        await self._send({"type": "http.response.body", "body": payload})

    def _events(self, data: bytes) -> bytes:
        """Translate every complete `data:` event in the bytes received so far."""
        assert self.encoder is not None
        buffer = self._buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        block, self._buffer = buffer[:end], buffer[end + 2:]
        out = []
        for event in block.split(b"\n\n"):
            payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if not payload or self._done:
                continue
            if payload == b"[DONE]":
                self._done = True
                out.append(self.encoder.end())
                continue
            try:
                chunk: Any = orjson.loads(payload)
            except orjson.JSONDecodeError:
                log.warning("dropped a chat stream event that is not JSON: %r", payload[:120])
                continue
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error") is not None:
                self._done = True  # what follows (the chat stream's [DONE]) is not the dialect's
                status = 504 if (chunk["error"] or {}).get("type") == "timeout_error" else 502
                out.append(self.encoder.error(status, chunk))
                continue
            out.append(self.encoder.chunk(chunk))
        return b"".join(out)


class DialectEndpoint:
    """A raw ASGI endpoint for one dialect, on top of the chat endpoint."""

    def __init__(self, runtime, chat, dialect: Dialect) -> None:
        self.rt = runtime
        self.chat = chat
        self.dialect = dialect

    async def __call__(self, scope, receive, send) -> None:
        if scope["method"] != "POST":
            await send_error(send, self.dialect, ApiError(
                405, f"Method {scope['method']} is not allowed on this path; use POST.", code="method_not_allowed",
                headers={"allow": "POST"}))
            return
        try:
            authenticate(self.rt.policies.current, _headers(scope))  # no work for unknown callers
            request = await read_json(receive, scope, self.rt.settings.max_body_bytes)
            chat_body, echo, on_final = await self.prepare(request, scope)
            raw = _dumps(chat_body)
        except ApiError as exc:  # answered here, with the headers the chat endpoint puts on its errors
            await send_error(send, self.dialect, exc, _id_headers(scope, self.rt.policies.current.version))
            return
        except Exception:  # a bug of ours: still answer in the dialect's shape
            log.exception("unhandled error translating a %s request", self.dialect.name)
            await send_error(send, self.dialect, ApiError(500, "The gateway failed to handle this request.",
                                                          code="internal_error"),
                             _id_headers(scope, self.rt.policies.current.version))
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROP_HEADERS]
        headers += [(b"content-type", _JSON_TYPE), (b"content-length", str(len(raw)).encode())]
        inner = {**scope, "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "headers": headers}
        delivered = False

        async def inner_receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()  # after the body: the client's own disconnect, which cancels the work

        await self.chat(inner, inner_receive, _Translating(send, self.dialect, echo, on_final))

    async def prepare(self, request: dict, scope) -> tuple[dict, dict, Callable[[dict], Awaitable[None]] | None]:
        """(the chat body, the request as the answer echoes it, what to run with the finished answer)."""
        return self.dialect.to_chat(request), request, None


class ResponsesEndpoint(DialectEndpoint):
    """/v1/responses with `previous_response_id` when the policy keeps responses (`responses: {store: true}`):
    each stored answer is the chat conversation so far (without the request's `instructions`, which OpenAI
    does not carry over either) plus the assistant's turn, kept under its response id for the caller's key
    only, for the policy's `ttl`."""

    async def prepare(self, request: dict, scope) -> tuple[dict, dict, Callable[[dict], Awaitable[None]] | None]:
        from gateway.api.responses import assistant_message

        rt = self.rt
        ttl = rt.policies.current.responses_ttl
        if ttl is None:  # nothing is kept: to_chat refuses previous_response_id
            return self.dialect.to_chat(request), {**request, "store": False}, None
        caller = hashlib.sha256((bearer(_headers(scope)) or "").encode()).hexdigest()[:24]
        previous = request.get("previous_response_id")
        history: list = []
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise ApiError(400, "'previous_response_id' must be a response id.", param="previous_response_id",
                               code="invalid_type")
            stored = await rt.store.cache_get(f"resp:{caller}:{previous}")
            if stored is None:
                raise ApiError(400, f"Previous response with id '{previous}' not found (it was not stored, has "
                                    "expired, or belongs to another key).", param="previous_response_id",
                               code="previous_response_not_found")
            history = orjson.loads(stored)
        chat = self.dialect.to_chat({**request, "previous_response_id": None})
        start = 1 if request.get("instructions") else 0  # the instructions' system message comes first
        chat["messages"][start:start] = history
        keep = request.get("store") is not False
        echo = {**request, "store": keep}
        if not keep:
            return chat, echo, None
        turns = chat["messages"][start:]

        async def remember(answer: dict) -> None:
            if answer.get("status") in ("completed", "incomplete"):
                record = orjson.dumps([*turns, assistant_message(answer)])
                await rt.store.cache_set(f"resp:{caller}:{answer['id']}", record, ttl)

        return chat, echo, remember


def _anthropic() -> Dialect:
    from gateway.api import anthropic

    return Dialect("anthropic", anthropic.to_chat,
                   lambda data, request: anthropic.encode_completion(data, request.get("stop_sequences")),
                   lambda request: anthropic.AnthropicStream(request.get("stop_sequences")),
                   anthropic.error_body)


def _responses() -> Dialect:
    from gateway.api import responses

    return Dialect("responses", responses.to_chat, responses.encode_completion, responses.ResponsesStream,
                   responses.error_body)


DIALECTS: dict[str, Callable[[], Dialect]] = {"anthropic": _anthropic, "responses": _responses}
ENDPOINTS: dict[str, type[DialectEndpoint]] = {"anthropic": DialectEndpoint, "responses": ResponsesEndpoint}


class CountTokens:
    """POST /v1/messages/count_tokens: the gateway's own token estimate of a Messages request (the same
    estimate routing and the token limits use), behind the same key check as the other endpoints."""

    def __init__(self, runtime) -> None:
        self.rt = runtime
        self.dialect = _anthropic()

    async def __call__(self, scope, receive, send) -> None:
        from gateway.api.anthropic import count_tokens_body
        from gateway.routing.request import ChatRequest
        from gateway.routing.signals import Signals

        if scope["method"] != "POST":
            await send_error(send, self.dialect, ApiError(405, "Use POST.", headers={"allow": "POST"}))
            return
        try:
            headers = _headers(scope)
            key = authenticate(self.rt.policies.current, headers)
            body = count_tokens_body(await read_json(receive, scope, self.rt.settings.max_body_bytes))
            check_model(key, body["model"])
        except ApiError as exc:
            await send_error(send, self.dialect, exc)
            return
        request = ChatRequest(body, b"", body["model"], False, body["messages"], headers)
        tokens = Signals(request, self.rt.router.pii_detector).estimated_tokens
        if body.get("tools"):
            tokens += len(orjson.dumps(body["tools"])) // 4
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", _JSON_TYPE)]})
        await send({"type": "http.response.body", "body": orjson.dumps({"input_tokens": tokens})})
