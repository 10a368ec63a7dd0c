"""Reading an upstream SSE byte stream into chunk payloads (the JSON after `data:`), without parsing them."""

from __future__ import annotations


class SSEParser:
    """Feed bytes, get complete event payloads. `done` turns True at `data: [DONE]`."""

    __slots__ = ("_buffer", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        payloads = []
        for event in events:
            payload = _data_of(event)
            if payload is None:
                continue
            if payload == b"[DONE]":
                self.done = True
                break
            payloads.append(payload)
        return payloads

    def flush(self) -> list[bytes]:
        """What is left when the connection ends without a final blank line."""
        rest, self._buffer = self._buffer, b""
        payload = _data_of(rest) if rest.strip() else None
        if payload == b"[DONE]":
            self.done = True
            return []
        return [payload] if payload else []


def _data_of(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip()
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None  # comments (": keep-alive") and other fields
    return b"\n".join(parts)
