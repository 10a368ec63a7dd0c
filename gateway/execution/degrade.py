"""Canned replies (well-formed OpenAI answers marked degraded) and the human hand-off webhook."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson

from gateway.policy.schema import DegradeSpec

log = logging.getLogger("gateway.degrade")


def canned_completion(text: str, model: str) -> bytes:
    return orjson.dumps({
        "id": f"chatcmpl-degraded-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": "gateway-degraded",
    })


def canned_chunks(text: str, model: str, include_usage: bool) -> list[bytes]:
    base = {"id": f"chatcmpl-degraded-{uuid.uuid4().hex[:20]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "gateway-degraded"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0,
                                                        "total_tokens": 0}})
    return [orjson.dumps(c) for c in chunks]


class HandOff:
    """Posts the conversation of a degraded request to a webhook, in the background, with retries."""

    def __init__(self, session_factory, attempts: int = 3) -> None:
        self._session_factory = session_factory
        self._attempts = attempts
        self._tasks: set[asyncio.Task] = set()

    def send(self, spec: DegradeSpec, payload: dict) -> None:
        if not spec.webhook:
            return
        task = asyncio.get_running_loop().create_task(self._post(spec.webhook, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: dict) -> None:
        import aiohttp

        body = orjson.dumps(payload)
        for attempt in range(self._attempts):
            try:
                async with self._session_factory().post(
                        url, data=body, headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False) as response:
                    if response.status < 500:
                        if response.status >= 400:
                            log.warning("hand-off webhook refused the conversation: %s", response.status)
                        return
            except Exception as exc:  # noqa: BLE001 - a webhook failure must never reach a client
                log.warning("hand-off webhook failed (try %d): %s", attempt + 1, exc)
            await asyncio.sleep(0.5 * 2 ** attempt)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
