"""An OpenAI chat body as the embedded model reads it: the messages and the sampling parameters.

Runs on the event loop at admission, so a bad body fails with a 400 before it waits for the model. Fields the
model cannot honour (n, logit_bias, tools, response_format...) are ignored. Defaults follow llama-cpp-python's
chat handler, so the embedded model answers like `python -m llama_cpp.server` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UpstreamError


def bad_request(message: str) -> UpstreamError:
    return UpstreamError("bad_request", message, status=400)


@dataclass(slots=True)
class Params:
    """Sampling parameters of one generation."""

    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False


def parse_messages(body: dict) -> list[dict]:
    """The conversation as {role, content} dicts with text content (a `developer` message is a system one)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request("each message must be an object with a string 'role'")
        role = "system" if message["role"] == "developer" else message["role"]
        out.append({"role": role, "content": _content_text(message.get("content"))})
    return out


def parse_params(body: dict, max_tokens_default: int) -> Params:
    """max_tokens / max_completion_tokens, temperature, top_p, stop, seed, presence_penalty,
    frequency_penalty, and the llama.cpp extensions top_k, min_p, repeat_penalty and ignore_eos."""
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        max_tokens = max_tokens_default
    if max_tokens < 1:
        raise bad_request("'max_tokens' must be at least 1")
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise bad_request("'stop' must be a string or a list of strings")
    seed = _integer(body, "seed")
    top_k = _integer(body, "top_k")
    return Params(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.2, lo=0.0, hi=2.0),
        top_p=_number(body, "top_p", 0.95, lo=0.0, hi=1.0),
        top_k=40 if top_k is None else top_k,
        min_p=_number(body, "min_p", 0.05, lo=0.0, hi=1.0),
        repeat_penalty=_number(body, "repeat_penalty", 1.1, lo=0.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, lo=-2.0, hi=2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, lo=-2.0, hi=2.0),
        stop=[s for s in stops if s],
        seed=None if seed is None else seed & 0xFFFFFFFF,
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def _number(body: dict, key: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"'{key}' must be a number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad_request(f"'{key}' must be between {lo} and {hi}")
    return float(value)


def _integer(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{key}' must be an integer")
    return value


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    raise bad_request("message 'content' must be a string or a list of content parts")
