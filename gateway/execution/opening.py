"""A stream's opening: the executor commits to an upstream only once it has streamed something real.

Until the first chunk that carries content or a tool call, every event is parsed and checked (valid JSON, a
`chat.completion.chunk` shape) and held back, not sent. A bad event, or an end with nothing usable, is then
an upstream failure that is retried or falls over to the next target like a failed non-streamed call; the
client has received no byte. After the commit, chunks pass through unparsed.
"""

from __future__ import annotations

import orjson

from gateway.providers.errors import ErrorKind, UpstreamError
from gateway.providers.sse import data_of

_CONTENT_KEYS = ("content", "tool_calls", "function_call", "refusal", "reasoning_content")


class Opening:
    __slots__ = ("finished", "framed", "held")

    def __init__(self, framed: bool) -> None:
        self.framed = framed          # pieces are blocks of SSE events (native), else one chunk's JSON each
        self.held: list[bytes] = []   # the pieces read so far, to send once committed
        self.finished = False         # a chunk carried a finish_reason

    def add(self, piece: bytes) -> bool:
        """Hold one piece; True once it carries content (commit to this upstream). Raises "malformed" for
        an event that is not a chunk."""
        self.held.append(piece)
        committed = False
        if self.framed:
            for event in piece.split(b"\n\n"):
                payload = data_of(event)
                if payload is not None and self._check(payload):
                    committed = True
        else:
            committed = self._check(piece)
        return committed

    def end(self) -> None:
        """The stream ended before any content: a well-formed empty answer (it said why it finished) is
        kept, anything else is a failure."""
        if not self.finished:
            raise UpstreamError(ErrorKind.MALFORMED, "the upstream stream ended without an answer", status=200)

    def _check(self, payload: bytes) -> bool:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(ErrorKind.MALFORMED, "the upstream stream's event is not JSON: "
                                f"{payload[:80].decode('utf-8', 'replace')!r}", status=200) from None
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or chunk.get("object", "chat.completion.chunk") != "chat.completion.chunk":
            raise UpstreamError(ErrorKind.MALFORMED, "the upstream stream's event is not a chat.completion.chunk",
                                status=200)
        content = False
        for choice in choices:
            delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise UpstreamError(ErrorKind.MALFORMED, "the upstream stream's chunk has a malformed choice", status=200)
            if choice.get("finish_reason"):
                self.finished = True
            if any(delta.get(k) for k in _CONTENT_KEYS):
                content = True
        return content
