"""One admitted request, shared by the event loop that awaits it and the worker thread that runs it.

The worker hands events to the request's event loop: `("delta", text)` while streaming, then one final
`("done", finish_reason, usage, text)` or `("error", UpstreamError)`. `cancel_reason` goes the other way:
set from any thread, checked by the worker before the request starts and between tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from ..errors import UpstreamError
from .request import Params


def timeout_error(message: str) -> UpstreamError:
    return UpstreamError("timeout", message, status=504)


class Job:
    __slots__ = (
        "id", "created", "messages", "params", "stream", "loop", "events", "cancel_reason",
        "enqueued_at", "started_at", "first_token_at", "finished_at", "first_emitted",
        "first_token_deadline", "deadline", "produced", "max_tokens", "completed_normally",
    )

    def __init__(self, messages: list[dict], params: Params, stream: bool, loop: asyncio.AbstractEventLoop,
                 first_token_deadline: float | None, deadline: float | None) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.messages = messages
        self.params = params
        self.stream = stream
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel_reason: str | None = None
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.first_emitted = False
        self.first_token_deadline = first_token_deadline
        self.deadline = deadline
        self.produced = 0
        self.max_tokens = params.max_tokens
        self.completed_normally = False

    def post(self, event: tuple) -> None:
        """Hand an event to the request's event loop (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel_reason = self.cancel_reason or "loop closed"

    async def next_event(self, deadline: float | None, what: str) -> tuple:
        """The next event (on the request's event loop); a missed `deadline` raises a timeout saying `what`."""
        if not self.events.empty():
            return self.events.get_nowait()
        if deadline is None:
            return await self.events.get()
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise timeout_error(f"embedded model: {what}")
        try:
            return await asyncio.wait_for(self.events.get(), max(timeout, 0.0))
        except TimeoutError:
            raise timeout_error(f"embedded model: {what}") from None
