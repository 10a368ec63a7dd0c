"""What a request shows to the route rules, computed once and only when a rule asks."""

from __future__ import annotations

import asyncio

from gateway.routing.pii import PiiDetector
from gateway.request import Request, message_text

# Bodies larger than this are walked and scanned for personal data in a worker thread, so that one large
# prompt does not hold up the event loop (below this, a scan takes a few milliseconds at most).
OFF_LOOP_BYTES = 4 * 1024
# Top-level fields whose strings are names or enums, not content.
_NOT_CONTENT = frozenset({"model", "service_tier", "reasoning_effort", "modalities", "stream"})
# Anywhere: identifiers the client echoes back, and the part types of the content parts.
_IDENTIFIERS = frozenset({"tool_call_id", "role", "type"})
# Content parts whose payload is not text: what the privacy check cannot read.
UNSCANNABLE_PARTS = {"image_url": "image", "input_image": "image", "image": "image", "input_audio": "audio",
                     "file": "file", "input_file": "file", "document": "file"}
_BLOBS = frozenset({"data", "file_data"})


def request_strings(body: dict) -> tuple[list[str], set[str]]:
    """Every string a request carries (object keys included) except the model name, enum fields, ids and
    the payloads of non-text parts; and the kinds of non-text parts present (`image`, `audio`, `file`).

    One visit per JSON node, iteratively (no recursion limit), so the work is bounded by the body size."""
    strings: list[str] = []
    unscannable: set[str] = set()
    stack: list = [v for k, v in body.items() if k not in _NOT_CONTENT]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            kind = value.get("type")
            if isinstance(kind, str) and kind in UNSCANNABLE_PARTS:
                unscannable.add(UNSCANNABLE_PARTS[kind])
            in_tool_call = kind == "function" and "function" in value
            for key, item in value.items():
                if key in _IDENTIFIERS or (in_tool_call and key == "id"):
                    continue
                if key in _BLOBS or (key == "url" and isinstance(item, str) and item.startswith("data:")):
                    continue
                strings.append(key)
                stack.append(item)
    return strings, unscannable


def estimate_tokens(messages: list) -> int:
    """About 4 characters per token, plus a few per message for the chat template."""
    return sum(len(message_text(m)) for m in messages) // 4 + 4 * len(messages)


class cached_property:  # noqa: N801 - functools' version takes a lock on every first access in 3.11
    """Computed on first access, then stored on the instance (which then shadows this descriptor)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.name = fn.__name__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


class Signals:
    def __init__(self, request: Request, pii_detector: PiiDetector) -> None:
        self.request = request
        self._pii_detector = pii_detector
        self.score: float | None = None  # set by the router when a rule or a split route needs it

    @cached_property
    def last_user(self) -> str:
        for message in reversed(self.request.messages):
            if message.get("role") == "user":
                return message_text(message)
        return ""

    @cached_property
    def texts(self) -> list[str]:
        return [message_text(m) for m in self.request.messages]

    @cached_property
    def estimated_tokens(self) -> int:
        return estimate_tokens(self.request.messages)

    @cached_property
    def has_tools(self) -> bool:
        body = self.request.body
        return bool(body.get("tools") or body.get("functions"))

    @cached_property
    def has_images(self) -> bool:
        for message in self.request.messages:
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "image"):
                        return True
        return False

    @cached_property
    def _scan(self) -> tuple[str, frozenset[str]]:
        strings, unscannable = request_strings(self.request.body)
        if self.request.original is not None:  # what the client sent in its own dialect, every field of it
            more, more_unscannable = request_strings(self.request.original)
            strings += more
            unscannable |= more_unscannable
        return "\n".join(strings), frozenset(unscannable)

    @property
    def unscannable(self) -> frozenset[str]:
        """Kinds of content the privacy check cannot read (`image`, `audio`, `file`)."""
        return self._scan[1]

    @cached_property
    def pii(self) -> set[str]:
        """Kinds of personal data in any string of the request (messages, tool calls, tools, user, ...)."""
        text = self._scan[0]
        return self._pii_detector.detect(text) if text else set()

    async def prepare_pii(self) -> None:
        """Walk and scan a large request in a worker thread; small ones are scanned when a rule asks."""
        if "pii" not in self.__dict__ and len(self.request.raw) > OFF_LOOP_BYTES:
            await asyncio.to_thread(lambda: self.pii)  # fills the cached property

    def classifier_text(self, mode: str, max_chars: int) -> str:
        if mode == "last_user":
            text = self.last_user
        elif mode == "user":
            text = "\n".join(message_text(m) for m in self.request.messages if m.get("role") == "user")
        else:
            text = "\n".join(self.texts)
        if len(text) > max_chars:
            half = max_chars // 2
            text = text[:half] + "\n" + text[-half:]
        return text
