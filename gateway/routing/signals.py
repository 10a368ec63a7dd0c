"""What a request shows to the route rules, computed once and only when a rule asks."""

from __future__ import annotations

from gateway.routing.pii import PiiDetector
from gateway.routing.request import ChatRequest, message_text


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
    def __init__(self, request: ChatRequest, pii_detector: PiiDetector) -> None:
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
        """About 4 characters per token, plus a few per message for the chat template."""
        return sum(len(t) for t in self.texts) // 4 + 4 * len(self.request.messages)

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
    def pii(self) -> set[str]:
        found: set[str] = set()
        for text in self.texts:
            if text:
                found |= self._pii_detector.detect(text)
        return found

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
