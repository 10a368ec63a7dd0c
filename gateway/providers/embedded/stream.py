"""The stream handed to execution for a streamed embedded request (the ChunkStream protocol).

It exists once the first content token does (`wait_first_token`), so the caller can still fail over before
sending anything. Closing it, or dropping it without closing, stops the generation at the next token.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from ..base import Usage
from ..errors import UpstreamError
from . import render
from .job import Job

_CLOSE_WAIT_S = 0.5   # how long aclose() waits for the worker's usage report


class EmbeddedStream:
    """ChunkStream over one embedded generation: yields orjson bytes of `chat.completion.chunk` dicts."""

    def __init__(self, job: Job, model: str, cancel: Callable[[Job, str], None], include_usage: bool,
                 gap: float | None) -> None:
        self.usage: Usage | None = None
        self.text_chars = 0  # the embedded model always reports usage; kept for the ChunkStream protocol
        self.finish_reason: str | None = None
        self._job = job
        self._model = model
        self._cancel = cancel
        self._include_usage = include_usage
        self._gap = gap
        self._first: tuple | None = None
        self._out: collections.deque[bytes] = collections.deque([self._chunk({"role": "assistant", "content": ""})])
        self._finished = False

    async def wait_first_token(self, what: str) -> None:
        """Wait for the first event within the first-token deadline; raise the error that came instead."""
        first = await self._next_event(self._job.first_token_deadline, what)
        if first[0] == "error":
            self._finished = True
            raise first[1]
        self._first = first

    async def _next_event(self, deadline: float | None, what: str) -> tuple:
        try:
            return await self._job.next_event(deadline, what)
        except BaseException:  # a missed deadline, or the consumer was cancelled: stop the generation
            self._finished = True
            self._cancel(self._job, "abandoned")
            raise

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return render.chunk(self._job, self._model, delta, finish, include_usage=self._include_usage)

    def __aiter__(self) -> "EmbeddedStream":
        return self

    async def __anext__(self) -> bytes:
        if self._out:
            return self._out.popleft()
        if self._finished:
            raise StopAsyncIteration
        if self._first is not None:
            event, self._first = self._first, None
        else:
            deadline = None if not self._gap else time.monotonic() + self._gap
            event = await self._next_event(deadline, f"no chunk within {self._gap}s")
        kind = event[0]
        if kind == "delta":
            text = event[1]
            events = self._job.events
            while not events.empty():  # coalesce what the model produced while the consumer was away
                nxt = events.get_nowait()
                if nxt[0] == "delta":
                    text += nxt[1]
                else:
                    self._first = nxt
                    break
            return self._chunk({"content": text})
        if kind == "done":
            _, finish, usage, _text = event
            self._finished = True
            self.usage = usage
            self.finish_reason = finish
            if finish == "cancelled":  # stopped by someone else than this consumer: the provider shut down
                raise UpstreamError("stream_cut", f"embedded model stopped the generation ({self._job.cancel_reason})")
            if self._include_usage:
                self._out.append(render.usage_chunk(self._job, self._model, usage))
            return self._chunk({}, finish)
        self._finished = True
        raise event[1]

    async def aclose(self) -> None:
        """Stop the generation (at the next token) and free the model for the next request."""
        if self._finished:
            return
        self._finished = True
        self._out.clear()
        job = self._job
        self._cancel(job, "closed by client")
        if job.started_at is None:
            return  # never ran
        # Wait briefly for the worker to acknowledge, so usage counts what was generated.
        deadline = time.monotonic() + _CLOSE_WAIT_S
        pending = [self._first] if self._first is not None else []
        self._first = None
        while True:
            for event in pending:
                if event[0] == "done":
                    self.usage = event[2]
                    self.finish_reason = event[1]
                    return
                if event[0] == "error":
                    return
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            try:
                pending = [await asyncio.wait_for(job.events.get(), timeout)]
            except TimeoutError:
                return

    def __del__(self) -> None:
        # A stream dropped without aclose() must not keep the model busy: flag it (no locks in __del__);
        # the worker stops at the next token, and a waiting request is skipped and no longer counted.
        if not getattr(self, "_finished", True):
            self._job.cancel_reason = self._job.cancel_reason or "abandoned"
