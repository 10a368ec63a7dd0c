"""The bounded FIFO in front of the model and the one thread that drains it (a `Llama` is not thread-safe).

Admission happens on the event loop: a request joins the queue or, when `max_queue` requests already wait,
is rejected at once with 429 and the expected wait as Retry-After. The worker thread runs the requests one
at a time; llama.cpp releases the GIL, so the event loop keeps serving meanwhile. A cancelled request that
still waits is skipped and stops counting against `max_queue` at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable

from ..base import EdgeLoad
from ..errors import UpstreamError
from .job import Job
from .load import Throughput

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 30.0


class Worker:
    """Queue, worker thread and load figures of one model. `run(job)` runs a request on the worker thread
    and returns its final event (it reports failures in that event, never raises)."""

    def __init__(self, alias: str, max_queue: int, max_tokens_default: int, run: Callable[[Job], tuple]) -> None:
        self.alias = alias
        self.max_queue = max_queue
        self.running: Job | None = None
        self.closed = False
        self._run = run
        self._cv = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._thread: threading.Thread | None = None
        self._throughput = Throughput(max_tokens_default)

    def start(self) -> None:
        with self._cv:
            self._ensure_thread()

    def admit(self, job: Job) -> None:
        """Queue `job`, or raise UpstreamError("overloaded", 429) when the queue is full."""
        now = time.monotonic()
        with self._cv:
            if self._pending and any(j.cancel_reason is not None for j in self._pending):
                self._pending = collections.deque(j for j in self._pending if j.cancel_reason is None)
            waiting = self._queue_depth()
            if waiting >= self.max_queue:
                wait = self._throughput.expected_wait(now, self._live_pending(), self.running)
                raise UpstreamError(
                    "overloaded",
                    f"embedded model {self.alias} is busy: {waiting} requests waiting (max_queue={self.max_queue})",
                    status=429,
                    retry_after=max(0.1, math.ceil(wait * 10) / 10),
                )
            self._pending.append(job)
            self._ensure_thread()
            self._cv.notify()

    def cancel(self, job: Job, reason: str) -> None:
        """Stop `job`: skipped if it still waits, stopped at the next token if it runs."""
        if job.cancel_reason is None:
            job.cancel_reason = reason
        with self._cv:
            try:
                self._pending.remove(job)
            except ValueError:
                pass

    def load(self) -> EdgeLoad:
        now = time.monotonic()
        with self._cv:
            live = self._live_pending()
            waiting = self._queue_depth()
            running = self.running is not None and self.running.cancel_reason is None
            wait = self._throughput.expected_wait(now, live, self.running)
        return EdgeLoad(
            queue_depth=waiting,
            in_flight=live + (1 if running else 0),
            tokens_per_second=round(self._throughput.tokens_per_second or 0.0, 2),
            expected_wait_s=round(wait, 3),
        )

    async def aclose(self) -> bool:
        """Fail the waiting requests (503), stop the running one, and wait for the thread. False when the
        thread is still inside a llama.cpp call after 30 s: the model is then left to it."""
        with self._cv:
            self.closed = True
            pending = list(self._pending)
            self._pending.clear()
            if self.running is not None:
                self.running.cancel_reason = "provider closed"
            self._cv.notify_all()
            thread = self._thread
        for job in pending:
            if job.cancel_reason is None:
                job.cancel_reason = "provider closed"
                job.post(("error", UpstreamError("unavailable", "embedded model is shutting down", status=503)))
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, _JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("embedded model %s: worker did not stop within 30s", self.alias)
                return False
        return True

    def _live_pending(self) -> int:  # call with self._cv held
        return sum(1 for job in self._pending if job.cancel_reason is None)

    def _queue_depth(self) -> int:  # call with self._cv held
        """Requests waiting for the model. When the worker is idle, the head of the queue is about to start
        and is not counted (so a burst on an idle model is not rejected before the worker wakes up)."""
        live = self._live_pending()
        return live - 1 if live and self.running is None else live

    def _ensure_thread(self) -> None:  # call with self._cv held
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._main, name=f"edge-model-{self.alias}", daemon=True)
            self._thread.start()

    def _main(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self.closed:
                    self._cv.wait()
                if not self._pending:
                    return  # closed and drained
                job = self._pending.popleft()
                if job.cancel_reason is not None:
                    continue
                self.running = job
                job.started_at = time.monotonic()
            final = self._run(job)
            job.finished_at = time.monotonic()
            with self._cv:
                self.running = None
                self._throughput.record(job)
            job.post(final)  # after the slot is free, so load() seen by the caller is already up to date
