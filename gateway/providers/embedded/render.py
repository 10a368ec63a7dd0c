"""The embedded model's answers in the OpenAI wire format: a `chat.completion`, or the
`chat.completion.chunk` objects of a stream (as orjson bytes)."""

from __future__ import annotations

from typing import Any

import orjson

from ..base import Usage
from .job import Job


def completion(job: Job, model: str, finish: str, usage: Usage, text: str) -> dict:
    return {
        "id": job.id,
        "object": "chat.completion",
        "created": job.created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": _usage(usage),
    }


def chunk(job: Job, model: str, delta: dict, finish: str | None = None, *, include_usage: bool = False) -> bytes:
    """One choice's delta; with `include_usage`, `usage: null` as OpenAI sends before the usage chunk."""
    data = _chunk(job, model, [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        data["usage"] = None
    return orjson.dumps(data)


def usage_chunk(job: Job, model: str, usage: Usage) -> bytes:
    """The last chunk of a stream asked for `stream_options.include_usage`: no choices, the usage."""
    data = _chunk(job, model, [])
    data["usage"] = _usage(usage)
    return orjson.dumps(data)


def _chunk(job: Job, model: str, choices: list[dict]) -> dict[str, Any]:
    return {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": model,
            "choices": choices}


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
