"""Chat Completions as the neutral answer: a whole `chat.completion` replayed as a stream (cached answers,
canned replies), a stream assembled into a `chat.completion`, and the canned reply itself."""

from __future__ import annotations

import time
import uuid

import orjson

from gateway.providers.sse import data_of


def chunks_from_completion(completion: bytes, include_usage: bool) -> list[bytes]:
    data = orjson.loads(completion)
    base = {"id": data.get("id", "chatcmpl-cached"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": data.get("model", "")}
    if data.get("system_fingerprint"):
        base["system_fingerprint"] = data["system_fingerprint"]
    chunks = []
    for choice in data.get("choices", []):
        message = choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**base, "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": choice.get("index", 0), "delta": {},
                                            "finish_reason": choice.get("finish_reason", "stop")}]})
    if include_usage and data.get("usage"):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    return [orjson.dumps(c) for c in chunks]


def canned_completion(text: str) -> bytes:
    """The policy's canned reply as a well-formed `chat.completion` (headers mark it degraded)."""
    return orjson.dumps({
        "id": f"chatcmpl-degraded-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gateway-degraded",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": "gateway-degraded",
    })


class StreamAssembler:
    """Builds a `chat.completion` from the chunks of a plain text stream (for caching it)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.meta: dict | None = None
        self.finish_reason = "stop"
        self.usable = True

    def add(self, payload: bytes) -> None:
        if not self.usable:
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.usable = False
            return
        if self.meta is None:
            self.meta = {"id": chunk.get("id"), "model": chunk.get("model"), "created": chunk.get("created")}
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                self.usable = False
                return
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                self.usable = False
                return
            if delta.get("content"):
                self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            self.meta["usage"] = chunk["usage"]

    def add_events(self, block: bytes) -> None:
        """Add every event of a block of SSE bytes."""
        for event in block.split(b"\n\n"):
            payload = data_of(event)
            if payload:
                self.add(payload)

    def completion(self) -> bytes | None:
        if not self.usable or self.meta is None:
            return None
        return orjson.dumps({
            "id": self.meta.get("id"), "object": "chat.completion", "created": self.meta.get("created"),
            "model": self.meta.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                         "finish_reason": self.finish_reason}],
            **({"usage": self.meta["usage"]} if self.meta.get("usage") else {}),
        })


def answer_of(data: dict) -> tuple[dict, str, list[dict]]:
    """The first choice of a `chat.completion`, its text (content parts joined) and its tool calls: what
    every dialect's encoder reads out of the chat answer."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    return choice, text if isinstance(text, str) else "", calls
