"""Reading upstream SSE events without parsing their JSON."""

from __future__ import annotations

import re


def data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined), or None for comments and other fields."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].strip()
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None  # comments (": keep-alive") and other fields
    return b"\n".join(parts)


# The string values of "content" and "arguments" (tool calls) in a chunk's JSON, escapes included.
_TEXT = re.compile(rb'"(?:content|arguments)":\s*"((?:[^"\\]|\\.)*)"')


def text_chars(block: bytes) -> int:
    """Roughly how many characters of text a block of chunks carries (escapes count as written), for a
    usage estimate when the upstream reports none; one regex pass, no JSON parse."""
    return sum(len(m) for m in _TEXT.findall(block))
