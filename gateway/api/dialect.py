"""Dialects: each client API parses its request into the neutral `Request` and writes the pipeline's results
(answers, stream events, errors, canned replies) in its own format.

`OpenAIChat` is Chat Completions, the neutral form itself: answers pass through as bytes. `Translated` is the
base of the other APIs (Anthropic Messages, OpenAI Responses): each gives its pure translators (request to
chat, chat.completion to answer, chat chunks to its stream events, errors), and bytes an upstream wrote in
the client's own dialect pass through untouched. A new API is one more `Translated` subclass and a route.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import orjson

from gateway.api import sse
from gateway.api.validate import validate_chat
from gateway.errors import ApiError
from gateway.execution.replay import chunks_from_completion
from gateway.providers.errors import degraded_reason
from gateway.request import OPENAI

log = logging.getLogger("gateway.dialects")

SSE_TYPE = b"text/event-stream; charset=utf-8"
JSON_TYPE = b"application/json"


@dataclass(slots=True)
class Parsed:
    """A client request as a dialect parsed it."""

    chat: dict                   # the neutral (Chat Completions) body
    model: str
    stream: bool
    messages: list
    echo: dict | None = None     # what the dialect's answers repeat of the request
    on_answer: Callable[[dict], Awaitable[None]] | None = None  # run with the finished answer (stored responses)
    original: dict | None = field(default=None)  # the client's body, when not Chat Completions
    native_only: tuple[tuple[str, str], ...] = ()  # (field, what) only an upstream of this dialect can take


class Encoder(Protocol):
    """Writes one stream in a dialect: a piece of the upstream stream, the end, or a failure after the start."""

    def piece(self, data: bytes) -> bytes: ...

    async def end(self) -> bytes: ...

    def failed(self, kind: str) -> bytes: ...


class Dialect(Protocol):
    name: str

    async def parse(self, body: dict, headers: dict, store, policy) -> Parsed: ...

    async def reply(self, body: bytes, dialect: str, parsed: Parsed) -> bytes: ...

    def encoder(self, parsed: Parsed, framed: bool, dialect: str) -> Encoder: ...

    def error(self, status: int, error: dict) -> bytes: ...


def stream_failure(kind: str) -> tuple[int, dict]:
    """The status and OpenAI-shaped error body of a stream cut after it started."""
    if kind == "deadline":
        return 504, {"error": {"message": "The request deadline passed while streaming.", "type": "timeout_error",
                               "param": None, "code": "deadline_exceeded"}}
    return 502, {"error": {"message": f"The upstream stream failed after it started ({degraded_reason(kind)}).",
                           "type": "api_error", "param": None, "code": kind}}


def count(value: Any) -> int:
    """A token count of an upstream's usage as a non-negative integer a client can read, whatever the
    upstream wrote (a string, a float, 1e30)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return int(min(max(value, 0), 2 ** 53))


def text_or(value: Any, default: str = "") -> str:
    """A field the dialect types as a string (a model name, an id), whatever the upstream wrote."""
    return value if isinstance(value, str) else default


def tool_call_pieces(delta: dict) -> list[tuple[dict, int, dict]]:
    """(call, index, function) of each tool-call piece of a chat stream delta; pieces of an unknown shape
    (not an object, an index that is not an integer) are skipped."""
    calls = delta.get("tool_calls")
    out = []
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            continue
        function = call.get("function")
        out.append((call, index, function if isinstance(function, dict) else {}))
    return out


def replay(encoder: Encoder, completion: bytes, include_usage: bool) -> bytes:
    """A whole chat.completion (cached, or a canned reply) as the pieces of a stream, encoded."""
    return b"".join(encoder.piece(chunk) for chunk in chunks_from_completion(completion, include_usage))


# ---- Chat Completions --------------------------------------------------------------------------------

class _ChatEncoder:
    __slots__ = ("framed",)

    def __init__(self, framed: bool) -> None:
        self.framed = framed  # native streams hand over whole SSE blocks, forwarded as they are

    def piece(self, data: bytes) -> bytes:
        return data if self.framed else sse.event(data)

    async def end(self) -> bytes:
        return sse.DONE

    def failed(self, kind: str) -> bytes:
        _, body = stream_failure(kind)
        error = body["error"]
        return sse.error_event(error["message"], error["type"], error["code"]) + sse.DONE


class OpenAIChat:
    name = OPENAI

    async def parse(self, body: dict, headers: dict, store, policy) -> Parsed:
        model, messages, stream = validate_chat(body)
        return Parsed(body, model, stream, messages)

    async def reply(self, body: bytes, dialect: str, parsed: Parsed) -> bytes:
        return body

    def encoder(self, parsed: Parsed, framed: bool, dialect: str) -> Encoder:
        return _ChatEncoder(framed)

    def error(self, status: int, error: dict) -> bytes:
        return orjson.dumps(error)


# ---- translated dialects -----------------------------------------------------------------------------

class StreamTranslator(Protocol):
    def chunk(self, payload: dict) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, status: int, openai_error: dict) -> bytes: ...


class _Translating:
    """Chat chunks (one chunk's JSON, or whole SSE events when `framed`) through a dialect's translator."""

    __slots__ = ("translator", "framed", "on_answer")

    def __init__(self, translator: StreamTranslator, framed: bool, on_answer) -> None:
        self.translator = translator
        self.framed = framed
        self.on_answer = on_answer

    def piece(self, data: bytes) -> bytes:
        if not self.framed:
            return self._chunk(data)
        out = []
        for event in data.replace(b"\r\n", b"\n").split(b"\n\n"):
            payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if payload and payload != b"[DONE]":
                out.append(self._chunk(payload))
        return b"".join(out)

    def _chunk(self, payload: bytes) -> bytes:
        try:
            chunk: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("dropped a chat stream event that is not JSON: %r", payload[:120])
            return b""
        return self.translator.chunk(chunk) if isinstance(chunk, dict) else b""

    async def end(self) -> bytes:
        out = self.translator.end()
        final = getattr(self.translator, "final", None)
        if final is not None and self.on_answer is not None:
            await self.on_answer(final)
        return out

    def failed(self, kind: str) -> bytes:
        return self.translator.error(*stream_failure(kind))


class _PassThrough:
    """An upstream that speaks the client's dialect: its events go out as they came (they carry their own
    end); a failure after the start is written in the dialect."""

    __slots__ = ("translator",)

    def __init__(self, translator: StreamTranslator) -> None:
        self.translator = translator  # only its error event is used

    def piece(self, data: bytes) -> bytes:
        return data

    async def end(self) -> bytes:
        return b""

    def failed(self, kind: str) -> bytes:
        return self.translator.error(*stream_failure(kind))


class Translated:
    """A dialect defined by its pure translators; subclasses set `name` and the four functions."""

    name = ""

    def to_chat(self, body: dict) -> dict:
        raise NotImplementedError

    def answer(self, completion: dict, parsed: Parsed) -> dict:
        raise NotImplementedError

    def translator(self, parsed: Parsed) -> StreamTranslator:
        raise NotImplementedError

    def error(self, status: int, error: dict) -> bytes:
        raise NotImplementedError

    def checked_chat(self, body: dict) -> dict:
        """The client's body as chat, held to the same checks as a chat client's: a value a translator passes
        on unchecked (a temperature that is a string) is a 400 here, not an upstream's or litellm's failure."""
        chat = self.to_chat(body)
        validate_chat(chat)
        return chat

    async def parse(self, body: dict, headers: dict, store, policy) -> Parsed:
        chat = self.checked_chat(body)
        return Parsed(chat, chat["model"], bool(chat.get("stream")), chat["messages"], echo=body, original=body)

    async def reply(self, body: bytes, dialect: str, parsed: Parsed) -> bytes:
        if dialect == self.name:
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or "error" in data:
            raise ApiError(502, "The upstream's answer could not be read.", code="upstream_malformed_response")
        try:
            answer = self.answer(data, parsed)
            encoded = orjson.dumps(answer)
        except (AttributeError, TypeError, ValueError) as exc:  # a chat.completion of an unknown shape
            log.warning("could not translate an upstream answer into %s: %r", self.name, exc)
            raise ApiError(502, "The upstream's answer could not be read.",
                           code="upstream_malformed_response") from None
        if parsed.on_answer is not None:
            await parsed.on_answer(answer)
        return encoded

    def encoder(self, parsed: Parsed, framed: bool, dialect: str) -> Encoder:
        if dialect == self.name:
            return _PassThrough(self.translator(parsed))
        return _Translating(self.translator(parsed), framed, parsed.on_answer)
