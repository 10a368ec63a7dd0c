"""Reading upstream SSE events without parsing their JSON."""

from __future__ import annotations


def data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined), or None for comments and other fields."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip()
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None  # comments (": keep-alive") and other fields
    return b"\n".join(parts)
