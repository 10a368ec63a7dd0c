"""SSE framing for `chat.completion.chunk` streams."""

from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(message: str, type: str = "api_error", code: str | None = None) -> bytes:
    """The explicit mid-stream failure event (the stream then ends with [DONE], never silently)."""
    return event(orjson.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}))
