"""The provider interface every upstream client implements (native OpenAI-compatible, litellm, embedded).

A provider turns one `UpstreamCall` into either a complete OpenAI `chat.completion` body or a stream of
OpenAI `chat.completion.chunk` payloads. It raises only `UpstreamError` (see `errors.py`).

Dialects: a provider that speaks another API natively (`dialect` attribute, e.g. "anthropic") answers a
call in the client's dialect with that dialect's bytes, untouched; `Completion.dialect` and a stream's
`dialect` say which wire format the answer is in ("openai" unless said otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, runtime_checkable

import orjson

from gateway.providers.errors import UpstreamError


@dataclass(slots=True)
class Deadlines:
    """Per-attempt time limits in seconds (None: no limit of that kind)."""

    connect: float | None = 5.0
    attempt: float | None = 60.0     # whole non-streamed call, or the gap between stream chunks
    first_token: float | None = 30.0  # streams: time to the first chunk


@dataclass(slots=True)
class UpstreamCall:
    """What to send: the client's request with `model` set to the upstream's model name."""

    body: dict                       # the client's JSON body; unknown fields are passed through
    model: str                       # model name as the upstream knows it
    stream: bool
    deadlines: Deadlines = field(default_factory=Deadlines)
    raw: bytes | None = None         # the client's own bytes, given only to a provider speaking `dialect`
    dialect: str = "openai"          # the API the client spoke (see gateway/request.py)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False   # counted by the gateway (about 4 characters a token), not reported upstream

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_dict(cls, usage: dict | None) -> "Usage | None":
        """The upstream's usage; counts that are not non-negative numbers (an upstream's odd answer) read as 0."""
        if not isinstance(usage, dict):
            return None
        return cls(token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")))


def token_count(value: object) -> int:
    """A token count an upstream reported; anything but a non-negative number below 2**53 reads as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2 ** 53:
        return 0
    return int(value)


def asks_usage(body: dict) -> bool:
    """Whether the client asked for the usage chunk at the end of a stream."""
    options = body.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


def with_usage(body: dict) -> dict:
    """The body with `stream_options.include_usage` set, so that every stream reports its usage."""
    options = body.get("stream_options")
    return {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}


def estimated_usage(prompt_tokens: int, text_chars: int) -> Usage:
    """Usage for a stream whose upstream reported none: about 4 characters a token, as routing estimates."""
    return Usage(prompt_tokens, (text_chars + 3) // 4, estimated=True)


@dataclass(slots=True)
class Completion:
    """A finished non-streamed answer: the JSON body to return and the usage read from it."""

    body: bytes
    usage: Usage | None = None
    dialect: str = "openai"   # the wire format of `body`: a chat.completion, or a provider's own API

    @classmethod
    def from_dict(cls, data: dict) -> "Completion":
        try:
            body = orjson.dumps(data)
        except orjson.JSONEncodeError:  # an integer past 64 bits, say: not an answer to pass on
            raise UpstreamError("malformed", "the upstream answer cannot be encoded as JSON", status=200) from None
        return cls(body, Usage.from_dict(data.get("usage")))


@dataclass(slots=True)
class EdgeLoad:
    """How busy an edge target is, for capacity-aware routing."""

    queue_depth: int = 0        # requests waiting for the model, not counting the one running
    in_flight: int = 0          # requests admitted (running + waiting)
    tokens_per_second: float = 0.0  # recent decode rate, 0 when unknown
    expected_wait_s: float = 0.0    # estimated wait before a new request starts


class ChunkStream(Protocol):
    """An async iterator of chunk payloads: JSON bytes of one `chat.completion.chunk` each, or, when the
    stream's `framed` is True, bytes holding one or more whole SSE events (`data: {...}\n\n`) to forward
    as they are. Never the final [DONE].

    `usage` holds the usage seen in the stream once it has ended (None if the upstream sent none); providers
    ask the upstream for it on every stream and drop that usage chunk when the client did not ask for it.
    `text_chars` counts the characters of content and tool-call arguments streamed, for an estimate when
    the upstream reports no usage. `aclose()` must stop the upstream work (close the connection, stop
    generation).

    A stream may carry `dialect` (read it with `getattr(stream, "dialect", "openai")`): "anthropic" streams
    are `framed` and their blocks are whole Anthropic SSE events (`event: ...\ndata: {...}\n\n`), passed on
    as the upstream sent them.
    """

    usage: Usage | None
    text_chars: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    async def complete(self, call: UpstreamCall) -> Completion: ...

    async def stream(self, call: UpstreamCall) -> ChunkStream:
        """Open a stream. Errors before the upstream answered are raised here; later ones while iterating."""
        ...

    def load(self) -> EdgeLoad | None:
        """Current load for edge targets that can tell, else None."""
        ...

    async def aclose(self) -> None: ...
